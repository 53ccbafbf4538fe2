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
* :data:`VIDEO_EXTENSIONS` is the package's one list of what a folder search takes for a video.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from fractions import Fraction
from typing import Iterator, Optional, Tuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter
import torch

from ..errors import ConfigError, VideoDecodeError
from .clips import resample_nearest
from .decoded import DecodedFrame, DecodedVideo, DecodeReport, FrameBuffer, VideoInfo
from .transforms import resized_shape

__all__ = ["FrameStream", "probe_video", "read_frames", "iter_frames", "apply_rotation"]

# FFmpeg's ANSI-art demuxers turn any text file into "video"; a .txt must not pass as one.
_TEXT_AS_VIDEO_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
# Slack for float timestamp comparisons: far below any real frame interval.
_EPS = 1e-6
# Demuxers of single pictures: FFmpeg opens a PNG or JPEG renamed .mp4 as a one-frame "video".
_IMAGE_FORMATS = frozenset({"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "gif", "tiff_pipe",
                            "jpegls_pipe", "pgm_pipe", "ppm_pipe", "qoi_pipe"})
# Preallocation cap for read_frames: memory grows with the frames really decoded, never with
# what a (possibly forged) header announces.
_MAX_PREALLOCATED_FRAMES = 256

#: File name endings taken for videos when a folder is searched (extract, classify, training lists),
#: in order of preference when several files share a stem.  Containers FFmpeg reads: MPEG-TS
#: (.ts, .mts, .m2ts) from cameras and broadcast, DVD .vob, MXF, ASF/WMV, Ogg and more.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".wmv",
                    ".3gp", ".3g2", ".ts", ".mts", ".m2ts", ".vob", ".mxf", ".asf", ".f4v", ".divx", ".dv")


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


def _check_file(name: str) -> None:
    if not os.path.exists(name):
        raise VideoDecodeError(f"{name}: no such file")
    if not os.path.isfile(name):
        raise VideoDecodeError(f"{name}: not a regular file")
    if os.path.getsize(name) == 0:
        raise VideoDecodeError(f"{name}: the file is empty (0 bytes)")


@contextlib.contextmanager
def _open_video(path, threads: Optional[int] = None
                ) -> Iterator[Tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and yield ``(container, first video stream)``; always closes the file.

    ``threads`` caps FFmpeg's decoding threads (default: FFmpeg's choice, about one per core).
    """
    name = os.fspath(path)
    _check_file(name)
    try:
        container = av.open(name, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        # FFmpeg's message without "[Errno 1094995529] ...: 'path'": the path already leads the line
        detail = getattr(exc, "strerror", None) or str(exc)
        raise VideoDecodeError(f"{name}: cannot be opened as a video ({detail})") from exc
    with container:
        if container.format.name in _TEXT_AS_VIDEO_FORMATS:
            raise VideoDecodeError(f"{name}: not a video (FFmpeg reads it as text art, "
                                   f"format {container.format.name!r})")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoDecodeError(f"{name}: holds no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads is not None:
            stream.thread_count = threads
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


def _decode(container, stream, name: str, expected: int = 0,
            report: Optional[DecodeReport] = None) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order; stops with a warning at the first broken packet.

    ``expected`` is the header's frame count when decoding from the start: a file cut short
    often just ends early without any error, and the shortfall is the only sign of it.
    ``report`` (if given) receives the count and the reason of an early stop.
    """
    report = report if report is not None else DecodeReport(name)
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            report.frames = count
            yield frame
    except av.FFmpegError as exc:
        if count == 0:
            raise VideoDecodeError(f"{name}: no frame could be decoded ({exc})") from exc
        report.partial = f"decoding stopped after {count} frames ({exc})"
        warnings.warn(f"{name}: {report.partial}; returning the frames decoded so far",
                      RuntimeWarning, stacklevel=2)
        return
    if count == 0:
        raise VideoDecodeError(f"{name}: the video stream holds no decodable frame")
    # A few frames of slack: edit lists may legitimately hide frames the header counts.
    if expected and count < expected - max(2, expected // 50):
        report.partial = f"only {count} of the {expected} frames announced by the header decoded (truncated file?)"
        warnings.warn(f"{name}: {report.partial}", RuntimeWarning, stacklevel=2)


def _seek_and_decode(container, stream, name: str, start_s: Optional[float], origin: int,
                     report: Optional[DecodeReport] = None):
    """Frames from ``start_s`` on, seeking to the keyframe before it when possible."""
    if not start_s or start_s <= 0 or stream.time_base is None:
        yield from _decode(container, stream, name, expected=stream.frames, report=report)
        return
    target = origin + int(Fraction(start_s) / stream.time_base)
    try:
        container.seek(target, stream=stream, backward=True)
    except av.FFmpegError:
        container.seek(origin, stream=stream, backward=True)
    frames = _decode(container, stream, name, report=report)
    first = next(frames, None)
    if first is not None and first.pts is not None and (first.pts - origin) * stream.time_base > start_s:
        # The demuxer landed after the requested time: frames would be lost, so start over.
        frames.close()
        container.seek(origin, stream=stream, backward=True)
        frames = _decode(container, stream, name, report=report)
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
        # One reformatter per stream keeps swscale's context: ``frame.reformat`` builds a new one
        # for every frame, which cost 1.8 ms of a 0.24 ms 640x272 -> 263x112 conversion (measured).
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        key = (frame.width, frame.height, frame.rotation)
        if key != self._key:
            self._key, self._plan = key, self._make_plan(frame)
        rotation, out_w, out_h = self._plan
        if (out_w, out_h) == (frame.width, frame.height):
            image = frame.to_ndarray(format="rgb24")
        else:
            image = self._reformatter.reformat(frame, width=out_w, height=out_h, format="rgb24",
                                               interpolation="BILINEAR").to_ndarray()
        # PyAV pads rows to an alignment; strided frames make later torch copies take a slow,
        # thread-hungry path (2x slower clip assembly measured on 2 cores).
        return np.ascontiguousarray(apply_rotation(image, rotation))

    def _make_plan(self, frame: av.VideoFrame):
        rotation = _clockwise_rotation(frame)
        sideways = rotation in (90, 270)
        up_h, up_w = (frame.width, frame.height) if sideways else (frame.height, frame.width)
        out_h, out_w = resized_shape(up_h, up_w, self.short_side, self.size)
        # The resize happens before the rotation, so a sideways frame gets the swapped size.
        return (rotation, out_h, out_w) if sideways else (rotation, out_w, out_h)


def _check_args(short_side, size, fps, start_s, end_s) -> None:
    if short_side is not None and size is not None:
        raise ConfigError("give either short_side or size, not both")
    if short_side is not None and (int(short_side) != short_side or short_side <= 0):
        raise ConfigError(f"short_side must be a positive integer, got {short_side!r}")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ConfigError(f"size must be a positive (height, width) pair, got {size!r}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ConfigError(f"end_s ({end_s}) must be greater than start_s ({start_s})")


def _timed_frames(container, stream, name, start_s, end_s, report: Optional[DecodeReport] = None):
    """Yield ``(decoded frame, seconds)`` for the frames inside ``[start_s, end_s)``."""
    # Times count from the stream's start; without one, from the first frame (or 0 when
    # seeking, since the first frame we see is then not the stream's first).
    origin = stream.start_time if stream.start_time is not None else (0 if start_s else None)
    step = 1.0 / _stream_fps(stream)
    last_t = None
    for frame in _seek_and_decode(container, stream, name, start_s, origin or 0, report):
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
        yield frame, t


def iter_frames(path, *, short_side: Optional[int] = None, size: Optional[Tuple[int, int]] = None,
                fps: Optional[float] = None, start_s: Optional[float] = None,
                end_s: Optional[float] = None, threads: Optional[int] = None) -> "FrameStream":
    """Stream the frames of ``path`` one at a time (same options as :func:`read_frames`).

    ``threads`` caps FFmpeg's decoding threads (default: FFmpeg's choice, about one per core);
    a decoder sharing the machine with a model is given the cores it may use.

    Only one decoded frame is held at a time, so memory does not grow with the video's
    length.  The file is opened (and checked) by this call; use the result as a context
    manager, exhaust it, or ``close()`` it to release the file early::

        with iter_frames("long.mp4", short_side=112) as frames:
            for frame in frames:  # DecodedFrame(image, time_s, index)
                ...
    """
    _check_args(short_side, size, fps, start_s, end_s)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    return FrameStream(os.fspath(path), short_side, size, fps, start_s, end_s, threads)


class FrameStream:
    """Iterator of :class:`DecodedFrame` over an open video; ``fps`` is the output rate."""

    def __init__(self, name: str, short_side, size, fps, start_s, end_s, threads=None):
        self.path, self._count, self._items = name, 0, None
        self._stack = contextlib.ExitStack()
        container, stream = self._stack.enter_context(_open_video(name, threads))
        self.source_fps = _stream_fps(stream)
        self.fps = float(fps) if fps is not None else self.source_fps
        try:
            _check_claimed_length(container, stream, name)
        except BaseException:
            self._stack.close()
            raise
        self.expected_frames = _expected_count(container, stream, self.fps, start_s, end_s)
        whole = not start_s and end_s is None
        self.report = DecodeReport(name, expected=(stream.frames or None) if whole else None,
                                   still_image=container.format.name in _IMAGE_FORMATS)
        self._convert, self._last = _Converter(short_side, size), (None, None)
        self._items = _timed_frames(container, stream, name, start_s, end_s, self.report)
        if fps is not None:
            # Resample before converting: frames that downsampling drops never pay for the
            # colour conversion and resize, which dominate decoding time.
            self._items = resample_nearest(self._items, self.fps, self.source_fps, end_s)

    def __iter__(self) -> "FrameStream":
        return self

    def __next__(self) -> DecodedFrame:
        if self._items is None:
            raise StopIteration
        try:
            frame, t = next(self._items)
            image = self._image(frame)
        except StopIteration:
            self.close()
            if self.report.frames == 1:
                self.report.still_image = True
            if self._count == 0:
                raise VideoDecodeError(f"{self.path}: no frame in the requested time range") from None
            raise
        except BaseException:
            self.close()
            raise
        self._count += 1
        return DecodedFrame(torch.from_numpy(image), t, self._count - 1)

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        if frame is self._last[0]:  # upsampling repeats a frame: convert it once
            return self._last[1].copy()
        image = self._convert(frame)
        self._last = (frame, image)
        return image

    def close(self) -> None:
        """Stop decoding and close the file (idempotent)."""
        if self._items is not None:
            self._items.close()  # finish the decode generators before their container goes
            self._items, self._last = None, (None, None)
        self._stack.close()

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass


def _expected_count(container, stream, fps: float, start_s, end_s) -> int:
    """A frame-count estimate (capped), to allocate the output once in the common case."""
    duration = _duration_s(container, stream, _stream_fps(stream))
    span = min(duration, end_s if end_s is not None else duration) - (start_s or 0.0)
    if not math.isfinite(span):
        return _MAX_PREALLOCATED_FRAMES
    return min(int(math.ceil(max(span, 0.0) * fps)) + 2, _MAX_PREALLOCATED_FRAMES)


def _check_claimed_length(container, stream, name: str) -> None:
    """Refuse a header that announces more frames than the file has bytes.

    Every stored frame costs at least a few bytes of container and bitstream, so such a
    length is forged or corrupt, and trusting it (to preallocate, or to sample clips) has
    made decoding ask for terabytes.
    """
    duration = _duration_s(container, stream, _stream_fps(stream))
    claimed = max(float(stream.frames or 0), duration * _stream_fps(stream) if math.isfinite(duration) else math.inf)
    size = os.path.getsize(name)
    if claimed > max(size, 1000):
        raise VideoDecodeError(
            f"{name}: the container claims {duration:.4g} s ({claimed:.4g} frames) for a {size}-byte file; "
            "the header is corrupt or forged (a file must hold at least a byte per frame)")


def read_frames(path, *, short_side: Optional[int] = None, size: Optional[Tuple[int, int]] = None,
                fps: Optional[float] = None, start_s: Optional[float] = None,
                end_s: Optional[float] = None) -> DecodedVideo:
    """Decode a whole video (or the ``[start_s, end_s)`` part of it) into memory.

    ``short_side`` resizes so the shorter side has that length (aspect ratio kept, long side
    truncated like the original code); ``size=(height, width)`` resizes exactly; both resize
    bilinearly inside PyAV, after which frames are rotated upright.  ``fps`` resamples the
    frames to that rate by taking, for each time ``t0 + k / fps``, the nearest decoded frame
    (ties to the earlier one), so frames are dropped or repeated, never blended; the returned
    timestamps are then those target times.  Use :func:`iter_frames` for long videos.
    """
    with iter_frames(path, short_side=short_side, size=size, fps=fps, start_s=start_s,
                     end_s=end_s) as frames:
        buffer = FrameBuffer(frames.expected_frames)
        times = []
        for frame in frames:
            buffer.append(frame.image.numpy(), frames.path)
            times.append(frame.time_s)
    return DecodedVideo(frames.path, torch.from_numpy(buffer.result()),
                        torch.tensor(times, dtype=torch.float64), frames.fps)
