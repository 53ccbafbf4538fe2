"""Which frames go into which clip: inference windows and the training/validation samplers.

All functions work on frame *indices* (0-based positions in a decoded frame sequence) and
return ``int64`` numpy arrays of length ``clip_len``, so the same sampling drives decoded
tensors, JPEG folders or HDF5 files alike.

Inference (:func:`clip_starts`, :func:`sample_clips`) follows the paper's protocol:
non-overlapping 16-frame windows (``stride=16``), with an explicit policy for the trailing
window that runs past the last frame:

* ``"pad"`` (default): keep it, loop-padded -- the original ``SlidingWindow``.  As there,
  the trailing window is the first window whose start is inside the video but whose end is
  not; later starts are not used, even when ``stride < clip_len``.
* ``"drop"``: discard it.
* ``"shift"``: replace it by a full window ending at the last frame (unless that window is
  already in the list).

A video shorter than one clip always yields exactly one loop-padded clip, whatever the
policy (the original feature extractor returned *no* clip for videos of <= 16 frames).

Loop padding (``LoopPadding``) repeats the available indices cyclically: 5 frames padded
to 8 give ``0 1 2 3 4 0 1 2``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError, InputShapeError

__all__ = ["LAST_POLICIES", "ClipIndices", "clip_starts", "sample_clips", "loop_pad",
           "resample_nearest",
           "temporal_random_crop", "temporal_center_crop", "temporal_even_crop"]

LAST_POLICIES = ("pad", "drop", "shift")
RandomSource = Union[None, random.Random, torch.Generator, np.random.Generator]


@dataclass(frozen=True)
class ClipIndices:
    """One clip: its frame indices and, when timestamps were given, its time span.

    ``num_real`` counts the distinct frames before loop padding; ``end_s`` is the timestamp
    of the last real frame plus one frame interval (``1 / fps``), so a clip covering a whole
    25 fps video of 16 frames spans ``[0, 0.64)``.
    """

    indices: np.ndarray
    start: int
    num_real: int
    start_s: Optional[float] = None
    end_s: Optional[float] = None

    @property
    def padded(self) -> bool:
        return self.num_real < len(self.indices)


def _check_counts(num_frames: int, clip_len: int) -> None:
    if int(num_frames) != num_frames or num_frames <= 0:
        raise ConfigError(f"num_frames must be a positive integer, got {num_frames!r}")
    if int(clip_len) != clip_len or clip_len <= 0:
        raise ConfigError(f"clip_len must be a positive integer, got {clip_len!r}")


def loop_pad(indices: Sequence[int], clip_len: int) -> np.ndarray:
    """Repeat ``indices`` cyclically (or cut them) to exactly ``clip_len`` entries."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise InputShapeError("cannot loop-pad an empty index list")
    return indices[np.arange(clip_len) % len(indices)]


def _window(start: int, num_frames: int, clip_len: int) -> np.ndarray:
    return loop_pad(np.arange(start, min(start + clip_len, num_frames)), clip_len)


def clip_starts(num_frames: int, clip_len: int = 16, stride: int = 16,
                last: str = "pad") -> List[int]:
    """First frame of every inference clip (see the module docstring for ``last``)."""
    _check_counts(num_frames, clip_len)
    if int(stride) != stride or stride <= 0:
        raise ConfigError(f"stride must be a positive integer, got {stride!r}")
    if last not in LAST_POLICIES:
        raise ConfigError(f"last must be one of {LAST_POLICIES}, got {last!r}")
    if num_frames < clip_len:
        return [0]
    starts = list(range(0, num_frames - clip_len + 1, stride))
    trailing = starts[-1] + stride
    if trailing >= num_frames:  # every start inside the video began a full window
        return starts
    if last == "pad":
        starts.append(trailing)
    elif last == "shift" and starts[-1] != num_frames - clip_len:
        starts.append(num_frames - clip_len)
    return starts


def _infer_fps(timestamps: np.ndarray) -> float:
    steps = np.diff(timestamps)
    steps = steps[steps > 0]
    if len(steps) == 0:
        raise ConfigError("fps is needed to give clip times when there is a single timestamp")
    return float(1.0 / np.median(steps))


def sample_clips(num_frames: int, clip_len: int = 16, stride: int = 16, last: str = "pad", *,
                 timestamps=None, fps: Optional[float] = None) -> List[ClipIndices]:
    """The inference clips of a video of ``num_frames`` frames, in order.

    With ``timestamps`` (one per frame, seconds) each clip also gets ``start_s`` and
    ``end_s``; ``fps`` defaults to the inverse of the median timestamp step.
    """
    starts = clip_starts(num_frames, clip_len, stride, last)
    times = None
    if timestamps is not None:
        times = np.asarray(timestamps.cpu() if torch.is_tensor(timestamps) else timestamps,
                           dtype=np.float64)
        if len(times) != num_frames:
            raise InputShapeError(f"{len(times)} timestamps for {num_frames} frames")
        fps = float(fps) if fps is not None else _infer_fps(times)
    clips = []
    for start in starts:
        num_real = min(clip_len, num_frames - start)
        span = (None, None)
        if times is not None:
            span = (float(times[start]), float(times[start + num_real - 1]) + 1.0 / fps)
        clips.append(ClipIndices(_window(start, num_frames, clip_len), start, num_real, *span))
    return clips


def _randint(rng: RandomSource, low: int, high: int) -> int:
    """An integer in ``[low, high]`` (inclusive, like :func:`random.randint`)."""
    if rng is None:
        return random.randint(low, high)
    if isinstance(rng, random.Random):
        return rng.randint(low, high)
    if isinstance(rng, torch.Generator):
        return int(torch.randint(low, high + 1, (1,), generator=rng))
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high + 1))
    raise TypeError(f"rng must be random.Random, torch.Generator or numpy Generator, got {type(rng)}")


def temporal_random_crop(num_frames: int, clip_len: int = 16,
                         rng: RandomSource = None) -> np.ndarray:
    """Training sampler: ``clip_len`` consecutive frames from a random start, loop-padded.

    The start is ``randint(0, max(0, N - clip_len - 1))`` exactly as in the original
    ``TemporalRandomCrop``, so the last possible start ``N - clip_len`` is never drawn.
    """
    _check_counts(num_frames, clip_len)
    start = _randint(rng, 0, max(0, num_frames - clip_len - 1))
    return _window(start, num_frames, clip_len)


def temporal_center_crop(num_frames: int, clip_len: int = 16) -> np.ndarray:
    """``clip_len`` frames around the middle frame (``TemporalCenterCrop``), loop-padded."""
    _check_counts(num_frames, clip_len)
    start = max(0, num_frames // 2 - clip_len // 2)
    return _window(start, num_frames, clip_len)


def temporal_even_crop(num_frames: int, clip_len: int = 16, n_samples: int = 3) -> List[np.ndarray]:
    """Validation sampler: up to ``n_samples`` evenly spaced clips (``TemporalEvenCrop``).

    Starts are multiples of ``max(1, ceil((N - 1 - clip_len) / (n_samples - 1)))``; as in the
    original, the first window that runs past the end is loop-padded and ends the list, so a
    short video gives fewer clips.  ``n_samples=1`` (a division by zero originally) gives the
    centre clip.
    """
    _check_counts(num_frames, clip_len)
    if int(n_samples) != n_samples or n_samples <= 0:
        raise ConfigError(f"n_samples must be a positive integer, got {n_samples!r}")
    if n_samples == 1:
        return [temporal_center_crop(num_frames, clip_len)]
    step = max(1, math.ceil((num_frames - 1 - clip_len) / (n_samples - 1)))
    out = []
    for start in range(0, num_frames, step):
        if len(out) >= n_samples:
            break
        out.append(_window(start, num_frames, clip_len))
        if start + clip_len > num_frames:
            break
    return out


def resample_nearest(items: Iterable[Tuple[Any, float]], fps: float, source_fps: float,
                     end_s: Optional[float] = None) -> Iterator[Tuple[Any, float]]:
    """Resample a stream of ``(payload, time_s)`` to ``fps`` by nearest timestamp.

    For each target time ``t0 + k / fps`` (``t0`` = first item's time) it yields the item
    nearest to it, paired with the target time; ties go to the earlier item.  Downsampling
    skips items, upsampling repeats them, nothing is blended.  The grid runs to the end of the
    last item (its time + ``1 / source_fps``), or to ``end_s`` if that is earlier.  Only two
    items are held at a time, so it works on streamed frames.
    """
    eps = 1e-6  # float slack, far below any frame interval
    prev, k, t0 = None, 0, None
    for payload, t in items:
        if t0 is None:
            t0 = t
        target = t0 + k / fps
        while t >= target - eps:
            near_prev = prev is not None and target - prev[1] <= t - target + eps
            yield (prev[0] if near_prev else payload), target
            k += 1
            target = t0 + k / fps
        prev = (payload, t)
    if prev is None:
        return
    stop = prev[1] + 1.0 / source_fps
    if end_s is not None:
        stop = min(stop, end_s)
    while t0 + k / fps < stop - eps:
        yield prev[0], t0 + k / fps
        k += 1
