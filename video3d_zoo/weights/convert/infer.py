"""Which registered architecture a zoo-layout state dict is, and with which arguments.

The knowledge lives with the model families (:mod:`video3d_zoo.models`): the registry asks
every family that reads the checkpoint's layout whether it recognises the tensors (exactly
one must), and that family reads the model name and arguments from names and shapes
(:class:`~video3d_zoo.models.registry.FamilySpec`).  Here: the classes and input channels (from the
family's classifier and stem), and the check of a stored ``arch`` string against the tensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import torch

from ... import models as _models  # noqa: F401  (registers every family)
from ...errors import CheckpointError
from ...models.layout import KENSHOHARA2020, LayoutReading, tensor_shape
from ...models.registry import MODELS, FamilySpec, list_families, match_family

StateDict = Mapping[str, torch.Tensor]


@dataclass
class InferredArch:
    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    in_chans: int = 3
    family: str = ""
    depth: int = 0


def infer_architecture(sd: StateDict, layout: str = KENSHOHARA2020,
                       arch_hint: Optional[str] = None) -> InferredArch:
    """Registered model name, its arguments, classes and input channels for a zoo-layout dict
    that was converted from ``layout`` (the zoo's own layout is ``kenshohara2020``)."""
    family = match_family(sd, layout)
    reading = family.read_layout(sd)
    if not isinstance(reading, LayoutReading) or reading.name not in MODELS:
        raise CheckpointError(f"family {family.name!r} read this checkpoint as {reading!r}, which is not a "
                              f"registered model; fix read_layout in {family.source_file}")
    stems = [f"{name}.weight" for name in family.stem_convs] or ["<stem_conv>.weight"]
    stem = next((key for key in stems if key in sd), stems[0])
    arch = InferredArch(MODELS.resolve(reading.name), dict(reading.kwargs),
                        num_classes=tensor_shape(sd, f"{family.classifier}.weight")[0],
                        in_chans=tensor_shape(sd, stem)[1], family=family.name, depth=reading.depth)
    _check_arch_hint(arch, arch_hint)
    return arch


def family_for_arch_string(arch_hint: Any) -> Optional[tuple]:
    """``"resnext-101"`` -> (the family whose original code uses ``resnext``, 101); None if unknown."""
    if not arch_hint or not isinstance(arch_hint, str):
        return None
    match = re.fullmatch(r"([a-z0-9]+)-(\d+)", arch_hint.strip().lower())
    if not match:
        return None
    family: Optional[FamilySpec] = next((f for f in list_families() if match.group(1) in f.arch_names), None)
    return (family, int(match.group(2))) if family is not None else None


def _check_arch_hint(arch: InferredArch, arch_hint: Optional[str]) -> None:
    """The stored ``arch`` string (e.g. ``resnext-101``) must agree with the tensors."""
    found = family_for_arch_string(arch_hint)
    if found is None:
        return
    family, depth = found
    if family.name != arch.family or depth != arch.depth:
        raise CheckpointError(
            f"the checkpoint says arch={arch_hint!r}, but its tensors are a {arch.family} of depth "
            f"{arch.depth}; the file is inconsistent or was saved under the wrong --model")
