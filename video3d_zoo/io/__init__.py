"""Video input: decoding (PyAV), clip sampling and preprocessing for the zoo's models.

>>> from video3d_zoo.config import input_preset
>>> from video3d_zoo.io import iter_video_clips
>>> for clip in iter_video_clips("video.mp4", input_preset("kenshohara2020")):  # doctest: +SKIP
...     logits = model(clip.tensor[None])

:func:`iter_video_clips` is the building block for custom pipelines: it decodes the file once,
already resized by PyAV to the spec's resize, streams the frames through a small buffer (so
memory stays bounded for long videos) and yields preprocessed ``C x T x H x W`` clips with
their time span and frame indices.  The pieces it is made of -- :mod:`.decode`,
:mod:`.clips` and :mod:`.transforms` -- are public too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Union

import numpy as np
import torch

from ..config import InputSpec, input_preset
from .clips import (LAST_POLICIES, ClipIndices, clip_starts, loop_pad, resample_nearest,
                    sample_clips, temporal_center_crop, temporal_even_crop, temporal_random_crop)
from .decode import (DecodedFrame, DecodedVideo, FrameStream, VideoInfo, apply_rotation,
                     iter_frames, probe_video, read_frames)
from .transforms import (CORNER_POSITIONS, MULTISCALE_SCALES, ClipPreprocessor, center_crop,
                         hflip, multiscale_corner_crop, normalize_clip, preprocess_clip,
                         random_horizontal_flip, random_resized_crop, resize_frames,
                         resized_shape)

__all__ = [
    "VideoClip", "iter_video_clips",
    "VideoInfo", "DecodedVideo", "DecodedFrame", "FrameStream", "probe_video", "read_frames",
    "iter_frames", "apply_rotation", "resized_shape",
    "LAST_POLICIES", "ClipIndices", "clip_starts", "sample_clips", "loop_pad", "resample_nearest",
    "temporal_random_crop", "temporal_center_crop", "temporal_even_crop",
    "MULTISCALE_SCALES", "CORNER_POSITIONS", "ClipPreprocessor", "preprocess_clip",
    "normalize_clip", "resize_frames", "center_crop", "multiscale_corner_crop",
    "random_resized_crop", "hflip", "random_horizontal_flip",
]


@dataclass(frozen=True)
class VideoClip:
    """One preprocessed clip: ``tensor`` is ``C x T x H x W`` float32.

    ``frame_indices`` index the decoded (and, with ``fps``, resampled) frame sequence,
    loop padding included; ``start_s``/``end_s`` span the real frames (end = last real
    frame's time + 1 / fps).
    """

    tensor: torch.Tensor
    start_s: float
    end_s: float
    frame_indices: np.ndarray


def _decode_options(resize) -> dict:
    if resize is None:
        return {}
    if isinstance(resize, (tuple, list)):
        return {"size": tuple(int(v) for v in resize)}
    return {"short_side": int(resize)}


class _Window:
    """The frames still needed for pending clips, plus every frame's timestamp."""

    def __init__(self, frame_step: float):
        self.frames = {}
        self.times = []
        self.frame_step = frame_step

    def add(self, frame: DecodedFrame) -> None:
        self.frames[frame.index] = frame.image
        self.times.append(frame.time_s)

    def forget_before(self, index: int) -> None:
        for old in [i for i in self.frames if i < index]:
            del self.frames[old]

    def clip(self, prep: ClipPreprocessor, start: int, num_real: int, clip_len: int) -> VideoClip:
        indices = loop_pad(np.arange(start, start + num_real), clip_len)
        tensor = prep(torch.stack([self.frames[int(i)] for i in indices]))
        end_s = self.times[start + num_real - 1] + self.frame_step
        return VideoClip(tensor, float(self.times[start]), float(end_s), indices)


def iter_video_clips(path, spec: Union[InputSpec, str], clip_len: Optional[int] = None,
                     stride: Optional[int] = None, last: str = "pad",
                     fps: Optional[float] = None, **overrides) -> Iterator[VideoClip]:
    """Decode ``path`` once and yield its preprocessed inference clips in order.

    ``clip_len`` defaults to ``spec.frames`` and ``stride`` to ``clip_len`` (non-overlapping
    windows, the paper's protocol); ``last`` is the trailing-window policy of
    :func:`~video3d_zoo.io.clips.clip_starts` ("pad", "drop" or "shift"); ``fps`` resamples
    the video first (nearest frame).  ``overrides`` change spec fields as in
    :class:`~video3d_zoo.io.transforms.ClipPreprocessor` (e.g. ``crop_size=None``).
    A video shorter than one clip yields one loop-padded clip.
    """
    spec = input_preset(spec) if isinstance(spec, str) else spec
    prep = ClipPreprocessor(spec, **overrides)
    clip_len = int(clip_len or prep.spec.frames)
    stride = int(stride or clip_len)
    clip_starts(clip_len, clip_len, stride, last)  # validates the arguments before decoding
    frames = iter_frames(path, fps=fps, **_decode_options(prep.resize))
    return _clips(frames, prep, clip_len, stride, last)


def _clips(frames: FrameStream, prep, clip_len, stride, last) -> Iterator[VideoClip]:
    window, next_start, emitted = _Window(1.0 / frames.fps), 0, 0
    with frames:  # closes the decoder (and file) if the caller stops early
        for frame in frames:
            window.add(frame)
            count = frame.index + 1
            while next_start + clip_len <= count:
                yield window.clip(prep, next_start, clip_len, clip_len)
                emitted += 1
                next_start += stride
            # Keep what the next window needs, and the last clip_len frames for "shift".
            window.forget_before(min(next_start, count - clip_len))
    for clip in sample_clips(len(window.times), clip_len, stride, last)[emitted:]:
        yield window.clip(prep, clip.start, clip.num_real, clip_len)
