"""Decode video files into uint8 RGB frames with PyAV.

Everything happens in-process: no ``ffmpeg`` subprocess and no temporary JPEG folder (the
original tools wrote every frame to ``tmp/image_%05d.jpg`` in the working directory).
Colour conversion and resizing are the expensive steps of decoding, so a requested size is
produced by swscale inside :meth:`av.VideoFrame.reformat` (bilinear) in the same pass as the
YUV -> RGB conversion, and frame-level threading is switched on (``thread_type="AUTO"``).

Conventions:

* Frames come out upright: a 90/180/270 degree display matrix is applied, so ``width`` and
  ``height`` always describe the frames you get back.  ``rotation`` is the clockwise angle a
  player rotates the stored picture by (the legacy ``rotate`` tag's convention).
* Timestamps are seconds from the start of the video stream (the first frame is at ~0).
* A time range ``start_s``/``end_s`` keeps the frames with ``start_s <= t < end_s``.
* A truncated or partly corrupt file yields the frames that decode, with a
  :class:`RuntimeWarning`; a file from which no frame decodes raises
  :class:`~video3d_zoo.errors.VideoDecodeError`, as does a missing, empty or non-video file.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, NamedTuple, Optional, Tuple

import av
import numpy as np
import torch

from ..errors import VideoDecodeError

__all__ = ["VideoInfo", "DecodedVideo", "DecodedFrame", "probe_video", "read_frames",
           "iter_frames", "apply_rotation", "resized_shape"]

# FFmpeg's ANSI-art demuxers turn any text file into "video"; a .txt must not pass as one.
_TEXT_AS_VIDEO_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
# Slack for float timestamp comparisons: far below any real frame interval.
_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file.

    ``num_frames_source`` says how ``num_frames`` was obtained: ``"counted"`` (every video
    packet demuxed and counted), ``"header"`` (the container's frame count, exact for MP4 and
    AVI written by common muxers) or ``"estimated"`` (``round(duration_s * fps)``, for
    containers such as Matroska/WebM that store no count).
    """

    path: str
    num_frames: int
    num_frames_source: str
    fps: float
    duration_s: float
    width: int
    height: int
    rotation: int
    codec: str


@dataclass(frozen=True)
class DecodedVideo:
    """Frames (``T x H x W x 3`` uint8 RGB), their timestamps (float64 seconds) and the fps."""

    path: str
    frames: torch.Tensor
    timestamps: torch.Tensor
    fps: float

    def __len__(self) -> int:
        return int(self.frames.shape[0])


class DecodedFrame(NamedTuple):
    """One frame from :func:`iter_frames`: ``H x W x 3`` uint8 RGB, its time and position."""

    image: torch.Tensor
    time_s: float
    index: int


def resized_shape(height: int, width: int, short_side: Optional[int] = None,
                  size: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """Output ``(height, width)`` for a short-side or exact resize of a ``height x width`` frame.

    The long side is truncated with ``int()``, as PIL ``Scale`` (2017) and torchvision
    ``Resize`` (2020) do, so 240x320 -> short side 112 gives 112x149.
    """
    if size is not None:
        return int(size[0]), int(size[1])
    if short_side is None:
        return height, width
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def apply_rotation(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate an ``H x W x C`` array clockwise by ``rotation`` (a multiple of 90) degrees."""
    quarter_turns = (int(rotation) // 90) % 4
    if quarter_turns == 0:
        return image
    # np.rot90 turns counter-clockwise for positive k.
    return np.ascontiguousarray(np.rot90(image, k=-quarter_turns, axes=(0, 1)))


def _clockwise_rotation(frame: av.VideoFrame) -> int:
    # frame.rotation is FFmpeg's counter-clockwise display-matrix angle in [-180, 180].
    ccw = frame.rotation
    if ccw % 90:
        warnings.warn(f"ignoring a display rotation of {ccw} degrees (not a right angle)",
                      RuntimeWarning, stacklevel=3)
        return 0
    return int(-ccw) % 360


@contextlib.contextmanager
def _open_video(path) -> Iterator[Tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and yield ``(container, first video stream)``; always closes the file."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise VideoDecodeError(f"{name}: no such file")
    if not os.path.isfile(name):
        raise VideoDecodeError(f"{name}: not a regular file")
    if os.path.getsize(name) == 0:
        raise VideoDecodeError(f"{name}: the file is empty (0 bytes)")
    try:
        container = av.open(name, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(f"{name}: cannot be opened as a video ({exc})") from exc
    with container:
        if container.format.name in _TEXT_AS_VIDEO_FORMATS:
            raise VideoDecodeError(f"{name}: not a video (FFmpeg reads it as text art, "
                                   f"format {container.format.name!r})")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoDecodeError(f"{name}: holds no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    if stream.frames and stream.duration:
        return stream.frames / float(stream.duration * stream.time_base)
    return 25.0  # FFmpeg's own default when a stream states no rate at all


def _duration_s(container, stream, fps: float) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return stream.frames / fps if stream.frames else 0.0


def probe_video(path, *, count_frames: bool = False) -> VideoInfo:
    """Read a video's metadata (and decode its first frame, to learn size and rotation).

    ``count_frames=True`` demuxes the whole file to count packets (no decoding; exact for
    all codecs without frame-dropping) instead of trusting the header or estimating.
    """
    name = os.fspath(path)
    with _open_video(name) as (container, stream):
        fps = _stream_fps(stream)
        duration = _duration_s(container, stream, fps)
        frame = next(_decode(container, stream, name), None)
        rotation = _clockwise_rotation(frame)
        height, width = frame.height, frame.width
        if rotation in (90, 270):
            height, width = width, height
        codec = stream.codec_context.name
        num, source = stream.frames, "header"
    if count_frames:
        with _open_video(name) as (container, stream):
            num = sum(1 for packet in container.demux(stream) if packet.size)
        source = "counted"
    elif not num:
        num, source = max(1, round(duration * fps)), "estimated"
    return VideoInfo(name, int(num), source, fps, duration, width, height, rotation, codec)


def _decode(container, stream, name: str, count_from: int = 0) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order; stops with a warning at the first broken packet."""
    count = count_from
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.FFmpegError as exc:
        if count == 0:
            raise VideoDecodeError(f"{name}: no frame could be decoded ({exc})") from exc
        warnings.warn(f"{name}: decoding stopped after {count} frames ({exc}); "
                      "returning the frames decoded so far", RuntimeWarning, stacklevel=2)
        return
    if count == 0:
        raise VideoDecodeError(f"{name}: the video stream holds no decodable frame")


def _seek_and_decode(container, stream, name: str, start_s: Optional[float]):
    """Frames from ``start_s`` on, seeking to the keyframe before it when possible."""
    origin = stream.start_time or 0
    if not start_s or start_s <= 0 or stream.time_base is None:
        yield from _decode(container, stream, name)
        return
    target = origin + int(Fraction(start_s) / stream.time_base)
    try:
        container.seek(target, stream=stream, backward=True)
    except av.FFmpegError:
        container.seek(origin, stream=stream, backward=True)
    frames = _decode(container, stream, name)
    first = next(frames, None)
    if first is not None and first.pts is not None and (first.pts - origin) * stream.time_base > start_s:
        # The demuxer landed after the requested time: frames would be lost, so start over.
        frames.close()
        container.seek(origin, stream=stream, backward=True)
        frames = _decode(container, stream, name)
        first = next(frames, None)
    if first is not None:
        yield first
        yield from frames


class _Converter:
    """Turns decoded frames into upright RGB arrays at the requested size (cached per shape)."""

    def __init__(self, short_side: Optional[int], size: Optional[Tuple[int, int]]):
        self.short_side, self.size = short_side, size
        self._key = None
        self._plan = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        key = (frame.width, frame.height, frame.rotation)
        if key != self._key:
            self._key, self._plan = key, self._make_plan(frame)
        rotation, out_w, out_h = self._plan
        if (out_w, out_h) == (frame.width, frame.height):
            image = frame.to_ndarray(format="rgb24")
        else:
            image = frame.reformat(width=out_w, height=out_h, format="rgb24",
                                   interpolation="BILINEAR").to_ndarray()
        return apply_rotation(image, rotation)

    def _make_plan(self, frame: av.VideoFrame):
        rotation = _clockwise_rotation(frame)
        sideways = rotation in (90, 270)
        up_h, up_w = (frame.width, frame.height) if sideways else (frame.height, frame.width)
        out_h, out_w = resized_shape(up_h, up_w, self.short_side, self.size)
        # The resize happens before the rotation, so a sideways frame gets the swapped size.
        return (rotation, out_h, out_w) if sideways else (rotation, out_w, out_h)


def _check_args(short_side, size, fps, start_s, end_s) -> None:
    if short_side is not None and size is not None:
        raise ValueError("give either short_side or size, not both")
    if short_side is not None and (int(short_side) != short_side or short_side <= 0):
        raise ValueError(f"short_side must be a positive integer, got {short_side!r}")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"size must be a positive (height, width) pair, got {size!r}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be greater than start_s ({start_s})")


def _timed_frames(container, stream, name, convert, start_s, end_s):
    """Yield ``(rgb array, seconds)`` for the frames inside ``[start_s, end_s)``."""
    origin = stream.start_time
    step = 1.0 / _stream_fps(stream)
    last_t = None
    for frame in _seek_and_decode(container, stream, name, start_s):
        if frame.pts is None or frame.time_base is None:
            # No timestamp (some AVI/raw streams): assume constant rate after the previous one.
            t = 0.0 if last_t is None else last_t + step
        else:
            if origin is None:
                origin = frame.pts
            t = float((frame.pts - origin) * frame.time_base)
        last_t = t
        if start_s is not None and t < start_s - _EPS:
            continue
        if end_s is not None and t >= end_s - _EPS:
            break
        yield convert(frame), t


def _nearest_resample(items, fps: float, source_fps: float, end_s: Optional[float]):
    """Pick, for each target time ``t0 + k / fps``, the source frame nearest to it.

    Ties go to the earlier frame.  Downsampling skips frames, upsampling repeats them; the
    grid runs to the end of the last source frame (its time + one source frame interval).
    """
    prev, k, t0 = None, 0, None
    for image, t in items:
        if t0 is None:
            t0 = t
        target = t0 + k / fps
        while t >= target - _EPS:
            pick = prev if prev is not None and target - prev[1] <= t - target + _EPS else (image, t)
            yield pick[0], target
            k += 1
            target = t0 + k / fps
        prev = (image, t)
    if prev is None:
        return
    stop = prev[1] + 1.0 / source_fps
    if end_s is not None:
        stop = min(stop, end_s)
    while t0 + k / fps < stop - _EPS:
        yield prev[0], t0 + k / fps
        k += 1


def _frame_items(container, stream, name, short_side, size, fps, start_s, end_s):
    items = _timed_frames(container, stream, name, _Converter(short_side, size), start_s, end_s)
    if fps is not None:
        items = _nearest_resample(items, float(fps), _stream_fps(stream), end_s)
    return items


def iter_frames(path, *, short_side: Optional[int] = None, size: Optional[Tuple[int, int]] = None,
                fps: Optional[float] = None, start_s: Optional[float] = None,
                end_s: Optional[float] = None) -> Iterator[DecodedFrame]:
    """Yield the frames of ``path`` one at a time (same options as :func:`read_frames`).

    Only one decoded frame is held at a time, so memory does not grow with the video's
    length.  The file is closed when the iterator is exhausted or closed (``.close()``, or
    ``contextlib.closing``); the file is checked eagerly, before the first frame is asked for.
    """
    _check_args(short_side, size, fps, start_s, end_s)
    name = os.fspath(path)
    stack = contextlib.ExitStack()
    container, stream = stack.enter_context(_open_video(name))
    return _iter_frames(stack, container, stream, name, short_side, size, fps, start_s, end_s)


def _iter_frames(stack, container, stream, name, *options) -> Iterator[DecodedFrame]:
    with stack:
        for index, (image, t) in enumerate(_frame_items(container, stream, name, *options)):
            yield DecodedFrame(torch.from_numpy(image), t, index)
        if index_is_unset(locals()):
            raise VideoDecodeError(f"{name}: no frame in the requested time range")
