"""Decoded frames in either channel order -> the clip a set of weights expects (``weights.transforms()``).

Decoders disagree on the channel position: PyAV and numpy give ``T x H x W x C``, torchcodec
gives ``T x C x H x W``.  :class:`ClipTransform` takes either (or a batch with a leading ``N``),
finds where the 3 colour channels are, and hands channel-last frames to the same
:class:`~video3d_zoo.io.transforms.ClipPreprocessor` the extraction and classification jobs use,
so a clip made here equals a clip made by the jobs.  A shape that could be both (``W == 3`` and
``C == 3`` at once), has no 3-channel axis, or frames that are not uint8, are refused with an
:class:`~video3d_zoo.errors.InputShapeError` saying what was expected.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import InputShapeError
from ..models.config import InputSpec
from .transforms import ClipPreprocessor

#: channel-last (PyAV, numpy) and channel-first (torchcodec) frame layouts
FRAME_LAYOUTS = ("THWC", "TCHW")
_EXPECTED = "uint8 RGB frames T x H x W x 3 (PyAV, numpy) or T x 3 x H x W (torchcodec), or a batch of them"


def _as_tensor(frames: Any) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(frames))
    if torch.is_tensor(frames):
        return frames
    raise InputShapeError(f"expected a torch tensor or numpy array of {_EXPECTED}; got {type(frames).__name__}")


def detect_layout(frames: torch.Tensor) -> str:
    """``"THWC"`` or ``"TCHW"``: where the 3 colour channels of a (batch of) clip(s) are."""
    shape = tuple(frames.shape)
    if len(shape) not in (4, 5):
        raise InputShapeError(f"expected {_EXPECTED}; got {len(shape)} dimensions, shape {shape}")
    last, first = shape[-1] == 3, shape[-3] == 3
    if last and first:
        raise InputShapeError(f"frames of shape {shape} are ambiguous: both dimension {len(shape) - 3} and the last "
                              "have size 3; pass layout='THWC' or layout='TCHW'")
    if not (last or first):
        raise InputShapeError(f"expected {_EXPECTED}; shape {shape} has no colour dimension of size 3 "
                              "(grey or RGBA frames must be converted to RGB first)")
    return "THWC" if last else "TCHW"


def to_channels_last(frames: Any, layout: Optional[str] = None) -> torch.Tensor:
    """uint8 frames in ``layout`` (detected when None) as ``... x T x H x W x 3``."""
    frames = _as_tensor(frames)
    if frames.dtype != torch.uint8:
        raise InputShapeError(f"expected {_EXPECTED}; got dtype {frames.dtype}: pass the frames as decoded "
                              "(0-255), the transforms scale and normalise them")
    if layout is None:
        layout = detect_layout(frames)
    elif layout not in FRAME_LAYOUTS:
        raise InputShapeError(f"layout must be one of {FRAME_LAYOUTS}, got {layout!r}")
    if frames.ndim not in (4, 5) or frames.shape[-1 if layout == "THWC" else -3] != 3:
        raise InputShapeError(f"expected {_EXPECTED} in the {layout} layout; got shape {tuple(frames.shape)}")
    frames = frames if layout == "THWC" else frames.movedim(-3, -1)
    if 0 in frames.shape:  # an empty clip would only fail later, inside the model
        raise InputShapeError(f"expected {_EXPECTED}; got no frames or an empty frame, shape {tuple(frames.shape)} "
                              f"(in the THWC layout)")
    return frames


class ClipTransform:
    """``weights.transforms()``: decoded uint8 frames -> float ``C x T x crop x crop`` model input.

    ``ClipTransform(spec)(frames)``; ``frames`` in either layout (see the module docstring),
    ``layout`` forces one.  ``overrides`` are :class:`ClipPreprocessor`'s (``crop_size=...``).
    The number of frames is not changed: sampling ``spec.frames`` of them is the clip
    protocol's job (:func:`~video3d_zoo.io.protocol.iter_video_clips`).
    """

    def __init__(self, spec: Union[InputSpec, str, None] = None, **overrides: Any):
        self.preprocess = ClipPreprocessor(spec, **overrides)

    @property
    def spec(self) -> InputSpec:
        return self.preprocess.spec

    def __call__(self, frames: Any, layout: Optional[str] = None) -> torch.Tensor:
        return self.preprocess(to_channels_last(frames, layout))

    def __repr__(self) -> str:
        return f"ClipTransform({self.preprocess!r})"


__all__ = ["FRAME_LAYOUTS", "ClipTransform", "detect_layout", "to_channels_last"]
