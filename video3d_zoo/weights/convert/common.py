"""Helpers shared by the layout converters (pure functions on state dicts)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import torch

from ...errors import CheckpointError

StateDict = Dict[str, torch.Tensor]


@dataclass
class LayoutResult:
    """A state dict renamed into the zoo layout plus what the layout says about the model."""

    state_dict: StateDict
    layout: str
    input_preset: str
    arch_hint: Optional[str] = None
    #: what the file says about the input, not the architecture (e.g. ``frames``)
    hints: Dict[str, Any] = field(default_factory=dict)


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Remove ``prefix`` (repeatedly: ``module.module.`` happens) from every key that has it."""
    out: StateDict = OrderedDict()
    for key, value in sd.items():
        while prefix and key.startswith(prefix):
            key = key[len(prefix):]
        if key in out:
            raise CheckpointError(f"key {key!r} appears twice once {prefix!r} is stripped")
        out[key] = value
    return out


def add_missing_batch_counters(sd: StateDict) -> StateDict:
    """Add ``num_batches_tracked`` (0) for every BatchNorm that lacks it (PyTorch < 0.4 files)."""
    out: StateDict = OrderedDict()
    for key, value in sd.items():
        out[key] = value
        if key.endswith(".running_var"):
            counter = key[: -len("running_var")] + "num_batches_tracked"
            if counter not in sd:
                out[counter] = torch.tensor(0, dtype=torch.long)
    return out


def tensors_only(sd: Mapping[str, Any], where: str) -> StateDict:
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{where}: expected a non-empty mapping of names to tensors")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: entries that are not named tensors: {bad[:5]}")
    return OrderedDict(sd)
