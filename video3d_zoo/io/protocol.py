"""The one clip path: from a video file and an input spec to preprocessed model clips.

Feature extraction, classification, evaluation and training-time validation all build their
clips here, so the same weights always see the same tensors whichever command feeds them.
A :class:`ClipProtocol` says *which* clips (temporal windows and spatial crops); the
:class:`~video3d_zoo.models.config.InputSpec` of the weights says *how* each is preprocessed
(resize, crop, value range, mean and std).

Temporal sampling:

* ``num_clips=0`` (default): every ``clip_len``-frame window, ``stride`` apart (default
  non-overlapping: the paper's video-level protocol), with the trailing-window policy
  ``last`` ("pad", "drop", "shift"; see :func:`~video3d_zoo.io.clips.clip_starts`).  Decoding
  streams: memory holds one window, not the video.
* ``num_clips=N``: N windows with evenly spaced starts from the first frame to the last
  full window (``round(linspace(0, frames - clip_len, N))``, as torchvision's
  ``clips_per_video`` and PyTorchVideo's uniform sampler); a video shorter than one clip gives
  one loop-padded clip.  The whole (resized) video is decoded first, to know its length.

``fps`` resamples the video first (nearest frame); ``temporal_stride`` then keeps every k-th
frame (the 2020 code's ``sample_t_stride``).  Spatially, ``spatial_crops=1`` is the centre
crop and ``spatial_crops=3`` adds the two crops at both ends of the long side (the common
"3 crops" test protocol); each crop is a clip of its own.

Every stream carries a :class:`DecodeReport`: how many frames decoded against how many the
container announced, whether decoding stopped early and why, and whether the "video" was a
still image.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from ..models.config import InputSpec, input_preset
from ..errors import ConfigError
from .clips import LAST_POLICIES, clip_starts, loop_pad
from .decode import FrameStream, iter_frames
from .decoded import DecodedFrame, DecodeReport
from .transforms import ClipPreprocessor
from ..wording import count

__all__ = ["ClipProtocol", "VideoClip", "ClipStream", "iter_video_clips", "video_clips"]

_THREE_CROPS = ("start", "center", "end")


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ClipProtocol:
    """Which clips a video gives (see the module docstring); ``None`` means "from the spec"."""

    clip_len: Optional[int] = None
    stride: Optional[int] = None
    last: str = "pad"
    fps: Optional[float] = None
    num_clips: int = 0
    spatial_crops: int = 1
    temporal_stride: int = 1

    def __post_init__(self) -> None:
        for name in ("clip_len", "stride"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        object.__setattr__(self, "num_clips", _positive_int("num_clips", self.num_clips, allow_zero=True))
        object.__setattr__(self, "temporal_stride", _positive_int("temporal_stride", self.temporal_stride))
        if self.last not in LAST_POLICIES:
            raise ConfigError(f"last must be one of {LAST_POLICIES}, got {self.last!r}")
        if self.spatial_crops not in (1, 3):
            raise ConfigError(f"spatial_crops must be 1 (centre) or 3 (both ends and centre), "
                              f"got {self.spatial_crops!r}")
        if self.fps is not None:
            if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) \
                    or not math.isfinite(self.fps) or self.fps <= 0:
                raise ConfigError(f"fps must be a finite number > 0, got {self.fps!r}")
            object.__setattr__(self, "fps", float(self.fps))

    def window(self, spec: InputSpec) -> Tuple[int, int]:
        """``(clip_len, stride)`` with the defaults filled in from ``spec``."""
        clip_len = self.clip_len or spec.frames
        return clip_len, self.stride or clip_len

    @property
    def positions(self) -> Tuple[str, ...]:
        return _THREE_CROPS if self.spatial_crops == 3 else ("center",)

    def to_dict(self, spec: Optional[InputSpec] = None) -> Dict[str, Any]:
        """Plain JSON (with the spec's defaults resolved when ``spec`` is given)."""
        out = dataclasses.asdict(self)
        if spec is not None:
            out["clip_len"], out["stride"] = self.window(spec)
        out["description"] = self.describe(spec)
        return out

    def describe(self, spec: Optional[InputSpec] = None) -> str:
        clip_len, stride = self.window(spec) if spec is not None else (self.clip_len, self.stride)
        frames = f"{clip_len}-frame" if clip_len else "spec-length"
        if self.num_clips:
            temporal = f"{count(self.num_clips, f'evenly spaced {frames} clip')} per video"
        else:
            overlap = "non-overlapping" if stride is None or stride == clip_len else f"stride {stride}"
            temporal = f"every {overlap} {frames} window (last: {self.last})"
        rate = f" at {self.fps:g} fps" if self.fps else ""
        step = f", every {self.temporal_stride}th frame" if self.temporal_stride > 1 else ""
        crops = "3 spatial crops" if self.spatial_crops == 3 else "centre crop"
        return f"{temporal}{rate}{step}, {crops}"


@dataclass(frozen=True)
class VideoClip:
    """One preprocessed clip: ``tensor`` is ``C x T x H x W`` float32.

    ``frame_indices`` index the decoded (resampled, strided) frame sequence, loop padding
    included; ``start_s``/``end_s`` span the real frames (end = last real frame's time + one
    frame interval); ``crop`` is the spatial position ("center", "start" or "end").
    """

    tensor: torch.Tensor
    start_s: float
    end_s: float
    frame_indices: np.ndarray
    crop: str = "center"


def _decode_options(resize) -> dict:
    if resize is None:
        return {}
    if isinstance(resize, (tuple, list)):
        return {"size": tuple(int(v) for v in resize)}
    return {"short_side": int(resize)}


class _Window:
    """The frames still needed for pending clips, plus every kept frame's timestamp."""

    def __init__(self, frame_step: float):
        self.frames: Dict[int, torch.Tensor] = {}
        self.times: List[float] = []
        self.frame_step = frame_step

    def add(self, frame: DecodedFrame) -> None:
        self.frames[len(self.times)] = frame.image
        self.times.append(frame.time_s)

    def forget_before(self, index: int) -> None:
        for old in [i for i in self.frames if i < index]:
            del self.frames[old]

    def clips(self, prep: ClipPreprocessor, start: int, num_real: int, clip_len: int,
              positions: Tuple[str, ...]) -> Iterator[VideoClip]:
        indices = loop_pad(np.arange(start, start + num_real), clip_len)
        frames = torch.stack([self.frames[int(i)] for i in indices])
        end_s = float(self.times[start + num_real - 1] + self.frame_step)
        for position in positions:
            yield VideoClip(prep(frames, position=position), float(self.times[start]), end_s, indices, position)


class ClipStream:
    """Iterator of :class:`VideoClip`; ``report`` is complete once the stream is exhausted."""

    def __init__(self, frames: FrameStream, prep: ClipPreprocessor, protocol: ClipProtocol,
                 clip_len: int, stride: int) -> None:
        self.report: DecodeReport = frames.report
        self.prep, self.protocol = prep, protocol
        self._frames = frames
        self._gen = self._generate(frames, clip_len, stride)

    def __iter__(self) -> "ClipStream":
        return self

    def __next__(self) -> VideoClip:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
        self._frames.close()

    def __enter__(self) -> "ClipStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _kept(self, frames: FrameStream) -> Iterator[DecodedFrame]:
        step = self.protocol.temporal_stride
        return (f for f in frames if f.index % step == 0)

    def _generate(self, frames: FrameStream, clip_len: int, stride: int) -> Iterator[VideoClip]:
        window = _Window(self.protocol.temporal_stride / frames.fps)
        positions = self.protocol.positions
        with frames:  # closes the decoder (and the file) if the caller stops early
            if self.protocol.num_clips:
                for frame in self._kept(frames):
                    window.add(frame)
                starts, emitted = _even_starts(len(window.times), clip_len, self.protocol.num_clips), 0
            else:
                starts, emitted = [], 0
                next_start = 0
                for frame in self._kept(frames):
                    window.add(frame)
                    count = len(window.times)
                    while next_start + clip_len <= count:
                        yield from window.clips(self.prep, next_start, clip_len, clip_len, positions)
                        emitted += 1
                        next_start += stride
                    # Keep what the next window needs, and the last clip_len frames for "shift".
                    window.forget_before(min(next_start, count - clip_len))
                starts = clip_starts(len(window.times), clip_len, stride, self.protocol.last)
        for start in starts[emitted:]:
            num_real = min(clip_len, len(window.times) - start)
            yield from window.clips(self.prep, start, num_real, clip_len, positions)


def _even_starts(num_frames: int, clip_len: int, num_clips: int) -> List[int]:
    if num_frames <= clip_len:
        return [0]
    last_start = num_frames - clip_len
    return [int(round(v)) for v in np.linspace(0, last_start, num_clips)]


def iter_video_clips(path, spec: Union[InputSpec, str], clip_len: Optional[int] = None,
                     stride: Optional[int] = None, last: str = "pad", fps: Optional[float] = None, *,
                     protocol: Optional[ClipProtocol] = None, start_s: Optional[float] = None,
                     end_s: Optional[float] = None, decode_threads: Optional[int] = None,
                     **overrides) -> ClipStream:
    """Decode ``path`` once and stream its preprocessed clips in order.

    Give either a :class:`ClipProtocol` or its common fields (``clip_len``, ``stride``,
    ``last``, ``fps``) as keywords; ``start_s``/``end_s`` restrict decoding to a time range
    (trimmed Kinetics clips of a full video).  ``overrides`` change spec fields as in
    :class:`~video3d_zoo.io.transforms.ClipPreprocessor` (e.g. ``crop_size=None``);
    ``decode_threads`` caps FFmpeg's threads (:func:`~video3d_zoo.io.decode.iter_frames`).
    Arguments are checked before the file is opened.
    """
    if protocol is None:
        protocol = ClipProtocol(clip_len=clip_len, stride=stride, last=last, fps=fps)
    elif any(v is not None for v in (clip_len, stride, fps)) or last != "pad":
        raise ConfigError("give either protocol= or clip_len/stride/last/fps, not both")
    spec = input_preset(spec) if isinstance(spec, str) else spec
    prep = ClipPreprocessor(spec, **overrides)
    window_len, window_stride = protocol.window(prep.spec)
    frames = iter_frames(path, fps=protocol.fps, start_s=start_s, end_s=end_s, threads=decode_threads,
                         **_decode_options(prep.resize))
    return ClipStream(frames, prep, protocol, window_len, window_stride)


def video_clips(path, spec: Union[InputSpec, str], protocol: Optional[ClipProtocol] = None, *,
                start_s: Optional[float] = None, end_s: Optional[float] = None,
                **overrides) -> Tuple[torch.Tensor, List[VideoClip], DecodeReport]:
    """All clips of one video at once: ``(N x C x T x H x W tensor, clips, report)``."""
    stream = iter_video_clips(path, spec, protocol=protocol or ClipProtocol(), start_s=start_s,
                              end_s=end_s, **overrides)
    clips = list(stream)
    return torch.stack([c.tensor for c in clips]), clips, stream.report
