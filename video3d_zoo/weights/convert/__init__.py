"""Pure converters from foreign checkpoint layouts to the zoo layout.

:func:`convert_checkpoint` takes what ``torch.load`` / ``safetensors`` returned (a wrapper
dict or a bare state dict), recognises its layout and renames its keys; then the model family
that recognises the renamed tensors reads the architecture (:mod:`.infer`, which asks the
registry), returning a :class:`ConvertedCheckpoint`.  No file or network access here.

Layouts: ``kenshohara2017`` (:mod:`.kenshohara2017`), ``kenshohara2020``
(:mod:`.kenshohara2020`, also the zoo's own layout), ``torchvision``
(:mod:`.torchvision_video`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch

from ...models.config import ModelConfig, input_preset
from ...models.layout import KENSHOHARA2017, KENSHOHARA2020, TORCHVISION
from ...errors import CheckpointError
from . import kenshohara2017, kenshohara2020, torchvision_video
from .common import LayoutResult, StateDict, tensors_only
from .infer import InferredArch, infer_architecture

_WRAPPER_KEYS = {"epoch", "arch", "state_dict", "optimizer", "scheduler", "best_prec1", "best_acc"}


@dataclass
class ConvertedCheckpoint:
    """Zoo-layout state dict plus the config (architecture, classes, input spec) it implies."""

    state_dict: StateDict
    config: ModelConfig
    layout: str
    #: where it was read from (a path or URL) and that file's size: the reference of the
    #: materialised-size rule (:mod:`video3d_zoo.weights.tensor_checks`); None for objects in memory
    origin: Optional[str] = None
    source_bytes: Optional[int] = None
    #: what the weights' manifest entry says about them (licence, dataset, Hub location), for
    #: ``model.pretrained_cfg``; None when they did not come through the manifest
    metadata: Optional[Dict[str, Any]] = None


def detect_layout(obj: Any) -> str:
    """Name of the layout of a loaded checkpoint object (wrapper dict or bare state dict)."""
    sd, wrapper = _split_wrapper(obj)
    if torchvision_video.is_torchvision_layout(sd):
        return TORCHVISION
    prefixed = all(k.startswith("module.") for k in sd)
    has_counters = any(k.endswith("num_batches_tracked") for k in sd)
    if wrapper is not None and "scheduler" in wrapper:
        return KENSHOHARA2020
    if prefixed and not has_counters:
        return KENSHOHARA2017
    if "features.conv0.weight" in sd or "module.features.conv0.weight" in sd:
        return KENSHOHARA2017
    if wrapper is not None and prefixed:
        return KENSHOHARA2017
    return KENSHOHARA2020


def _split_wrapper(obj: Any):
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"expected a checkpoint dict, got {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return tensors_only(obj["state_dict"], "checkpoint['state_dict']"), obj
    if set(obj) & _WRAPPER_KEYS and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint dict with keys {sorted(obj)[:8]} has no 'state_dict' entry")
    return tensors_only(obj, "checkpoint"), None


_CONVERTERS = {
    KENSHOHARA2017: kenshohara2017.convert,
    KENSHOHARA2020: kenshohara2020.convert,
    TORCHVISION: torchvision_video.convert,
}


def to_zoo_layout(obj: Any, filename: Optional[str] = None, layout: Optional[str] = None) -> LayoutResult:
    """Rename a loaded checkpoint's keys into the zoo layout (no architecture inference)."""
    sd, wrapper = _split_wrapper(obj)
    layout = layout or detect_layout(obj)
    if layout not in _CONVERTERS:
        raise CheckpointError(f"unknown layout {layout!r}; known: {sorted(_CONVERTERS)}")
    arch = wrapper.get("arch") if wrapper is not None else None
    return _CONVERTERS[layout](sd, arch=arch, filename=filename)


def convert_checkpoint(obj: Any, filename: Optional[str] = None,
                       layout: Optional[str] = None) -> ConvertedCheckpoint:
    """Recognise, rename and describe a foreign checkpoint (see the module docstring)."""
    result = to_zoo_layout(obj, filename=filename, layout=layout)
    arch = infer_architecture(result.state_dict, layout=result.layout, arch_hint=result.arch_hint)
    spec = input_preset(result.input_preset)
    if "frames" in result.hints:
        spec = spec.replace(frames=result.hints["frames"])
    config = ModelConfig(architecture=arch.name, num_classes=arch.num_classes, arch_kwargs=arch.kwargs,
                         in_chans=arch.in_chans, input_spec=spec,
                         source=f"{result.layout}:{filename}" if filename else result.layout)
    return ConvertedCheckpoint(result.state_dict, config, result.layout)


__all__ = ["ConvertedCheckpoint", "InferredArch", "convert_checkpoint", "detect_layout",
           "infer_architecture", "to_zoo_layout"]
