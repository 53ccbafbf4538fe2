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
from typing import Any, Dict, Iterator, List, Mapping, Optional

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
    family = _match_family(sd, layout)
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


def _match_family(sd: StateDict, layout: str) -> FamilySpec:
    """:func:`match_family`, naming the missing tensors when a family would have recognised the dict but
    for tensors it looks for (the usual reason: a key deleted or renamed in an otherwise good file)."""
    try:
        return match_family(sd, layout)
    except CheckpointError as exc:
        wanted = _missing_for_recognition(sd, layout)
        if not wanted:
            raise
        keys = sorted({key for missing in wanted.values() for key in missing})
        raise CheckpointError(
            f"missing tensor(s) {', '.join(map(repr, keys))}: a {' / '.join(wanted)} checkpoint in the {layout} "
            f"layout has them, and no model family recognises the tensors without them (the file is incomplete, "
            f"or its keys were renamed); first keys: {list(sd)[:6]}") from exc


class _Asked(Mapping):
    """A read-only view of a state dict that records every key looked up."""

    def __init__(self, sd: StateDict) -> None:
        self.sd = sd
        self.asked: List[str] = []

    def __getitem__(self, key: str) -> Any:
        self.asked.append(key)
        return self.sd[key]

    def __contains__(self, key: object) -> bool:
        self.asked.append(str(key))
        return key in self.sd

    def __iter__(self) -> Iterator[str]:
        return iter(self.sd)

    def __len__(self) -> int:
        return len(self.sd)


def _missing_for_recognition(sd: StateDict, layout: str) -> Dict[str, List[str]]:
    """Family -> the absent keys that would make it recognise ``sd``: the families missing fewest, among
    those whose classifier and stem are both present (so the checkpoint is close to theirs: another
    family's dict that merely shares a ``conv1`` is not "a resnet missing its blocks")."""
    candidates = [f for f in list_families() if layout in f.layouts and f.recognise is not None]
    if any(f.recognise(sd) for f in candidates):
        return {}  # ambiguous, not incomplete
    found: Dict[str, List[str]] = {}
    for family in candidates:
        anchors = [f"{family.classifier}.weight"] + [f"{name}.weight" for name in family.stem_convs]
        if f"{family.classifier}.weight" in sd and any(key in sd for key in anchors[1:]):
            needed = _needed_keys(family, sd)
            if needed:
                found[family.name] = needed
    fewest = min((len(keys) for keys in found.values()), default=0)
    return {name: keys for name, keys in found.items() if len(keys) == fewest}  # the closest families


def _needed_keys(family: FamilySpec, sd: StateDict, rounds: int = 2) -> List[str]:
    """The absent keys ``family``'s recogniser looks up that, given stand-ins, make it say yes."""
    added: Dict[str, torch.Tensor] = {}
    for _ in range(rounds):
        view = _Asked({**sd, **added})
        if family.recognise(view):
            break
        asked = [key for key in dict.fromkeys(view.asked) if key not in sd and key not in added]
        if not asked:
            return []
        added.update((key, _stand_in(sd, key)) for key in asked)
    else:
        if not family.recognise({**sd, **added}):
            return []
    # only the ones it cannot do without (a lookup may just be a question, e.g. "is there a conv3?")
    return [key for key in added
            if not family.recognise({**sd, **{k: v for k, v in added.items() if k != key}})]


def _stand_in(sd: StateDict, key: str) -> torch.Tensor:
    """A meta tensor shaped like a present key of the same pattern (``layer1.0.x`` ~ ``layer2.0.x``)."""
    pattern = re.sub(r"\d+", "#", key)
    like = next((t for k, t in sd.items() if isinstance(t, torch.Tensor) and re.sub(r"\d+", "#", k) == pattern), None)
    shape = tuple(like.shape) if like is not None else ((1,) * 5 if key.endswith("weight") else (1,))
    return torch.empty(shape, device="meta")


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
