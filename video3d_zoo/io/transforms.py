"""Turn uint8 RGB frames into model input, following an :class:`~video3d_zoo.models.config.InputSpec`.

Frames are ``T x H x W x 3`` (one clip) or ``N x T x H x W x 3`` (a batch of clips), uint8
RGB as :func:`~video3d_zoo.io.decode.read_frames` returns them.  Inference preprocessing is

1. resize: short side to ``spec.resize`` (int) or exactly to ``spec.resize = (h, w)``;
   bilinear with antialiasing (``F.interpolate(..., antialias=True)``) on uint8, skipped
   when the frames already have that size because PyAV resized them while decoding;
2. centre crop to ``spec.crop_size``;
3. float32, scaled so a saturated pixel (255) equals ``spec.value_scale``, then
   ``(x - mean) / std``;
4. layout ``C x T x H x W`` (or ``N x C x T x H x W``).

Which preset a model needs (the value range is *not* interchangeable -- feeding 0-1 input to
a 0-255 model, or the reverse, silently gives wrong predictions):

* ``kenshohara2017`` -- the 2017/2018 (CVPR) Kinetics-400 checkpoints: raw 0-255 pixels minus
  the ActivityNet mean (114.77, 107.74, 99.48), no std division; the original code's
  ``ToTensor(norm_value=1)`` + ``Normalize(mean, [1, 1, 1])``.  Short side 112, crop 112.
* ``kenshohara2020`` -- the 2020 rewrite's K700 / Moments / STAIR checkpoints (``r3d*_K``,
  ``r2p1d*``...): 0-1 pixels normalised with the Kinetics mean/std.  Short side 112, crop 112.
* ``torchvision`` -- ``r3d_18``, ``mc3_18``, ``r2plus1d_18`` from torchvision: 0-1 pixels,
  resize to exactly 128x171, centre crop 112, torchvision's Kinetics-400 mean/std.

Training augmentation (the original recipes): :func:`multiscale_corner_crop` (2017),
:func:`random_resized_crop` (2020), :func:`random_horizontal_flip` (both).  Each draws its
parameters once per clip, so every frame of a clip gets the same crop and flip.  They take
and return channel-last frames; finish with :func:`normalize_clip`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..models.config import InputSpec, input_preset
from ..errors import ConfigError, InputShapeError
from .clips import RandomSource, _randint

__all__ = ["MULTISCALE_SCALES", "CORNER_POSITIONS", "CROP_POSITIONS", "ClipPreprocessor", "crop_at", "preprocess_clip",
           "normalize_clip", "resized_shape", "resize_frames", "center_crop", "multiscale_corner_crop",
           "random_resized_crop", "hflip", "random_horizontal_flip"]

# 2017 MultiScaleCornerCrop: initial scale 1, 5 scales, step 0.84089641525 = 2 ** -0.25.
MULTISCALE_SCALES = tuple(2.0 ** (-i / 4) for i in range(5))
CORNER_POSITIONS = ("c", "tl", "tr", "bl", "br")
# Inference crops along the long side of the frame: the usual "3 crops" test protocol.
CROP_POSITIONS = ("start", "center", "end")
Size = Union[int, Tuple[int, int]]


def _as_batch(frames: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    """``(N, T, H, W, C)`` view of a clip or batch, and whether the input was one clip."""
    if not torch.is_tensor(frames):
        frames = torch.as_tensor(frames)
    if frames.ndim == 4:
        return frames.unsqueeze(0), True
    if frames.ndim == 5:
        return frames, False
    raise InputShapeError(f"expected T x H x W x C or N x T x H x W x C frames, got shape {tuple(frames.shape)}")


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
        return int(short_side), int(short_side * width / height)
    return int(short_side * height / width), int(short_side)


def _target_size(height: int, width: int, resize: Size) -> Tuple[int, int]:
    if isinstance(resize, (tuple, list)):
        return resized_shape(height, width, size=resize)
    return resized_shape(height, width, short_side=resize)


def resize_frames(frames: torch.Tensor, size: Size, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of channel-last frames: short side to ``size`` or exactly to ``(h, w)``.

    A no-op when the frames already have the target size.  uint8 stays uint8 (torch has a
    fast antialiased uint8 path for this layout), so resizing before the float conversion
    also saves memory.
    """
    height, width = frames.shape[-3], frames.shape[-2]
    out_h, out_w = _target_size(height, width, size)
    if (out_h, out_w) == (height, width):
        return frames
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, height, width, frames.shape[-1]).permute(0, 3, 1, 2)
    if not (flat.dtype == torch.uint8 or flat.is_floating_point()):
        flat = flat.float()
    out = F.interpolate(flat, size=(out_h, out_w), mode="bilinear", align_corners=False,
                        antialias=antialias)
    return out.permute(0, 2, 3, 1).reshape(*lead, out_h, out_w, frames.shape[-1])


def center_crop(frames: torch.Tensor, size: Size) -> torch.Tensor:
    """Centre crop of channel-last frames; offsets rounded like torchvision's ``CenterCrop``."""
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    height, width = frames.shape[-3], frames.shape[-2]
    if crop_h > height or crop_w > width:
        raise InputShapeError(f"crop {crop_h}x{crop_w} is larger than the {height}x{width} frames; "
                         "resize first or lower crop_size")
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return frames[..., top:top + crop_h, left:left + crop_w, :]


def crop_at(frames: torch.Tensor, size: Size, position: str = "center") -> torch.Tensor:
    """A crop of channel-last frames at the ``start``, ``center`` or ``end`` of the long side.

    ``start`` is the left (landscape) or top (portrait) end; the short side is centred as in
    :func:`center_crop`.  ``center`` is exactly :func:`center_crop`.
    """
    if position not in CROP_POSITIONS:
        raise ConfigError(f"position must be one of {CROP_POSITIONS}, got {position!r}")
    centred = center_crop(frames, size)
    if position == "center":
        return centred
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    height, width = frames.shape[-3], frames.shape[-2]
    if width >= height:
        left = 0 if position == "start" else width - crop_w
        top = int(round((height - crop_h) / 2.0))
    else:
        top = 0 if position == "start" else height - crop_h
        left = int(round((width - crop_w) / 2.0))
    return frames[..., top:top + crop_h, left:left + crop_w, :]


def normalize_clip(frames: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 channel-last frames -> float32 ``(x * value_scale / 255 - mean) / std``, channels first.

    ``T x H x W x C`` gives ``C x T x H x W``; ``N x T x H x W x C`` gives ``N x C x T x H x W``.
    """
    batch, single = _as_batch(frames)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=batch.device)
    std = torch.tensor(spec.std, dtype=torch.float32, device=batch.device)
    # One affine map per channel, x * (scale / std) - mean / std, applied in place on a
    # freshly laid-out float copy: 3.5x faster than convert-then-broadcast (fewer passes).
    gain = ((spec.value_scale / 255.0) / std).view(1, 3, 1, 1, 1)
    bias = (-mean / std).view(1, 3, 1, 1, 1)
    n, t, h, w, c = batch.shape
    out = torch.empty((n, c, t, h, w), dtype=torch.float32, device=batch.device)
    out.copy_(batch.permute(0, 4, 1, 2, 3))
    out.mul_(gain).add_(bias)
    return out[0] if single else out


class ClipPreprocessor:
    """Resize + centre crop + normalise, configured by an :class:`InputSpec` plus overrides.

    ``ClipPreprocessor("kenshohara2017")``, ``ClipPreprocessor(spec, crop_size=128)``; any
    ``InputSpec`` field can be overridden, and ``crop_size=None`` disables the crop
    (full-frame, fully convolutional inference) while ``resize=None`` disables the resize.
    Called on ``T x H x W x 3`` frames it returns ``C x T x H x W``; on a batch
    ``N x T x H x W x 3`` it returns ``N x C x T x H x W``.
    """

    def __init__(self, spec: Union[InputSpec, str, None] = None, **overrides: Any):
        if spec is None:
            spec = InputSpec()
        elif isinstance(spec, str):
            spec = input_preset(spec)
        self.crop = overrides.pop("crop_size", spec.crop_size)
        resize_given = "resize" in overrides
        self.resize = overrides.pop("resize", spec.resize)
        kept = {f.name for f in dataclasses.fields(InputSpec)}
        unknown = sorted(set(overrides) - kept)
        if unknown:
            raise TypeError(f"unknown InputSpec field(s) {unknown}; expected some of {sorted(kept)}")
        if not resize_given and self.crop is not None and self.resize is not None:
            # A larger crop than the weights' resize asks for more of the frame: grow the resize
            # with it (same aspect) rather than fail on a crop larger than the resized frame.
            self.resize = _resize_for_crop(self.resize, self.crop)
        # The spec that is really applied: what extraction records and reports.
        concrete = {k: v for k, v in (("crop_size", self.crop), ("resize", self.resize)) if v is not None}
        self.spec = spec.replace(**overrides, **concrete)

    def __call__(self, frames: torch.Tensor, position: str = "center") -> torch.Tensor:
        """Preprocess ``frames``; ``position`` picks the crop along the long side (:func:`crop_at`)."""
        frames = frames if torch.is_tensor(frames) else torch.as_tensor(frames)
        if frames.ndim not in (4, 5) or frames.shape[-1] != 3:
            raise InputShapeError(f"expected ... x H x W x 3 RGB frames, got shape {tuple(frames.shape)}")
        if self.resize is not None:
            frames = resize_frames(frames, self.resize)
        if self.crop is not None:
            frames = crop_at(frames, self.crop, position)
        return normalize_clip(frames, self.spec)

    def __repr__(self) -> str:
        return (f"ClipPreprocessor(spec={self.spec.name!r}, resize={self.resize!r}, "
                f"crop_size={self.crop!r}, value_scale={self.spec.value_scale}, "
                f"mean={self.spec.mean}, std={self.spec.std})")


def _resize_for_crop(resize: Size, crop: Size) -> Size:
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
    if isinstance(resize, int):
        return max(resize, crop_h, crop_w)
    height, width = resize
    factor = max(crop_h / height, crop_w / width, 1.0)
    return resize if factor == 1.0 else (math.ceil(height * factor), math.ceil(width * factor))


def preprocess_clip(frames: torch.Tensor, spec: Union[InputSpec, str]) -> torch.Tensor:
    """``T x H x W x 3`` uint8 frames -> ``C x T x H x W`` float32 model input for ``spec``."""
    return ClipPreprocessor(spec)(frames)


def _uniform(rng: RandomSource, low: float, high: float) -> float:
    if rng is None:
        return random.uniform(low, high)
    if isinstance(rng, random.Random):
        return rng.uniform(low, high)
    if isinstance(rng, torch.Generator):
        return low + (high - low) * float(torch.rand((), generator=rng, dtype=torch.float64))
    return float(rng.uniform(low, high))


def _choice(rng: RandomSource, options: Sequence):
    return options[_randint(rng, 0, len(options) - 1)]


def _crop_box(height: int, width: int, side: int, position: str) -> Tuple[int, int]:
    """Top-left corner of a ``side x side`` square at one of the five 2017 positions."""
    if position == "c":
        return height // 2 - side // 2, width // 2 - side // 2
    top = 0 if position[0] == "t" else height - side
    left = 0 if position[1] == "l" else width - side
    return top, left


def multiscale_corner_crop(frames: torch.Tensor, size: int,
                           scales: Union[float, Sequence[float]] = MULTISCALE_SCALES,
                           position: Union[str, Sequence[str], None] = None,
                           rng: RandomSource = None) -> torch.Tensor:
    """2017 training crop: a square of side ``int(short_side * scale)`` at a corner or the
    centre, resized to ``size x size``.

    ``scales`` / ``position`` are fixed values or sequences to draw from (``position=None``
    draws from all of c, tl, tr, bl, br); one draw per call, i.e. per clip.
    """
    scale = _choice(rng, scales) if isinstance(scales, Sequence) else float(scales)
    if position is None:
        position = CORNER_POSITIONS
    if not isinstance(position, str):
        position = _choice(rng, position)
    if position not in CORNER_POSITIONS:
        raise ConfigError(f"position must be one of {CORNER_POSITIONS}, got {position!r}")
    height, width = frames.shape[-3], frames.shape[-2]
    side = max(1, int(min(height, width) * scale))
    top, left = _crop_box(height, width, side, position)
    crop = frames[..., top:top + side, left:left + side, :]
    return resize_frames(crop, (size, size))


def random_resized_crop(frames: torch.Tensor, size: Size, scale: Tuple[float, float] = (0.25, 1.0),
                        ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                        rng: RandomSource = None) -> torch.Tensor:
    """2020 training crop (torchvision's ``RandomResizedCrop`` algorithm), one draw per clip.

    Defaults are the 2020 recipe's ``scale=(0.25, 1.0)``, ``ratio=(3/4, 4/3)``.
    """
    height, width = frames.shape[-3], frames.shape[-2]
    top, left, crop_h, crop_w = _resized_crop_box(height, width, scale, ratio, rng)
    crop = frames[..., top:top + crop_h, left:left + crop_w, :]
    out = (size, size) if isinstance(size, int) else tuple(size)
    return resize_frames(crop, out)


def _resized_crop_box(height, width, scale, ratio, rng):
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(rng, scale[0], scale[1])
        aspect = math.exp(_uniform(rng, *log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return _randint(rng, 0, height - crop_h), _randint(rng, 0, width - crop_w), crop_h, crop_w
    # Fallback, as torchvision: the largest centred crop whose aspect ratio is within range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_h, crop_w = height, int(round(height * max(ratio)))
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def hflip(frames: torch.Tensor) -> torch.Tensor:
    """Mirror channel-last frames left-right."""
    return frames.flip(-2)


def random_horizontal_flip(frames: torch.Tensor, p: float = 0.5,
                           rng: RandomSource = None) -> torch.Tensor:
    """Flip the whole clip with probability ``p`` (one draw per call)."""
    return hflip(frames) if _uniform(rng, 0.0, 1.0) < p else frames
