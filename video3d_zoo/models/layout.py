"""Reading architecture facts from zoo-layout state dicts: helpers the model families share.

Each family module (:mod:`video3d_zoo.models`) tells the registry how to recognise its
checkpoints and how to read its architecture arguments from tensor names and shapes
(:class:`~video3d_zoo.models.registry.FamilySpec`).  The helpers they share live here; nothing here
knows a family.  This module imports only ``torch`` and :mod:`video3d_zoo.errors`, so model
files may import it (see ``tests/test_architecture.py``).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import CheckpointError

StateDict = Mapping[str, torch.Tensor]

# The checkpoint layouts, named once: the converters (:mod:`video3d_zoo.weights.convert`) read the
# first three, the families say which of them they recognise, and the manifest's ``upstream.layout``
# takes any of the four (``zoo``: a file already in the zoo's own layout, nothing to rename).
KENSHOHARA2017 = "kenshohara2017"
KENSHOHARA2020 = "kenshohara2020"
TORCHVISION = "torchvision"
ZOO = "zoo"
LAYOUTS = (KENSHOHARA2017, KENSHOHARA2020, TORCHVISION, ZOO)


@dataclass
class LayoutReading:
    """What a family reads from a state dict: a registered model name and its arguments.

    ``depth`` is what the original code calls the depth (``resnext-101`` -> 101); it is
    compared with a checkpoint's stored ``arch`` string.  0: not applicable.
    """

    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    depth: int = 0


def tensor_shape(sd: StateDict, key: str) -> Tuple[int, ...]:
    """Shape of ``sd[key]``; a missing tensor is a :class:`CheckpointError` naming it."""
    try:
        return tuple(sd[key].shape)
    except KeyError:
        raise CheckpointError(f"expected tensor {key!r} is missing from the checkpoint") from None


def shape_or_none(sd: StateDict, key: str) -> Optional[Tuple[int, ...]]:
    """Shape of ``sd[key]``, or None when it is missing or not a tensor (for recognisers)."""
    value = sd.get(key)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def has_conv(sd: StateDict, *keys: str) -> bool:
    """True when every ``key`` is a 5-D (Conv3d) weight: a recogniser's first question."""
    return all(len(shape_or_none(sd, key) or ()) == 5 for key in keys)


def count_blocks(sd: StateDict, stages: int = 4) -> Tuple[int, ...]:
    """Blocks per residual stage ``layer1`` .. ``layer{stages}`` (0 for a stage with none)."""
    counts = []
    for stage in range(1, stages + 1):
        idx = {int(m.group(1)) for k in sd for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        counts.append(max(idx) + 1 if idx else 0)
    return tuple(counts)


def stage_block_counts(sd: StateDict, stages: int = 4) -> Tuple[int, ...]:
    """:func:`count_blocks`, where a stage without blocks is a :class:`CheckpointError`."""
    counts = count_blocks(sd, stages)
    if 0 in counts:
        raise CheckpointError(f"no blocks found for layer{counts.index(0) + 1}")
    return counts


def residual_block(sd: StateDict) -> str:
    """``bottleneck`` when the first block has a third convolution, else ``basic``."""
    return "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"


def depth_for(table: Mapping[int, Tuple[str, Sequence[int]]], block: str, counts: Sequence[int],
              family: str) -> int:
    """The depth whose (block type, blocks per stage) in ``table`` are ``block`` and ``counts``."""
    for depth, (kind, layers) in table.items():
        if kind == block and tuple(layers) == tuple(counts):
            return depth
    raise CheckpointError(f"{family}: {block} blocks per stage {tuple(counts)} match no known depth "
                          f"(known: { {d: tuple(l) for d, (_, l) in table.items()} })")


def depth_of(table: Mapping[int, Sequence[int]], config: Sequence[int], family: str, what: str) -> int:
    """The depth whose entry in ``table`` is ``config`` (e.g. layers per dense block)."""
    for depth, known in table.items():
        if tuple(known) == tuple(config):
            return depth
    raise CheckpointError(f"{family}: {what} {tuple(config)} match no known depth (known: {dict(table)})")


def first_block_widths(sd: StateDict, conv: str, stages: int = 4) -> list:
    """Output channels of ``conv`` in the first block of every stage."""
    return [tensor_shape(sd, f"layer{i}.0.{conv}.weight")[0] for i in range(1, stages + 1)]


def widen_kwargs(widths: Sequence[int], base: Sequence[int]) -> Dict[str, Any]:
    """Smallest kwargs reproducing stage ``widths`` from the default ``base`` widths."""
    if list(widths) == list(base):
        return {}
    factor = widths[0] / base[0]
    if [int(w * factor) for w in base] == list(widths):
        return {"widen_factor": factor}
    return {"stage_widths": tuple(widths)}


def non_defaults(builder: Any, **values: Any) -> Dict[str, Any]:
    """The ``values`` that differ from the defaults of ``builder``'s parameters (kwargs to pass)."""
    params = inspect.signature(builder).parameters
    return {k: v for k, v in values.items() if v != params[k].default}


def shortcut_kwargs(sd: StateDict) -> Dict[str, Any]:
    """``shortcut_type="A"`` when no block has a ``downsample`` (parameter-free shortcuts)."""
    return {} if any(".downsample." in k for k in sd) else {"shortcut_type": "A"}


def block_input_normalised(sd: StateDict) -> bool:
    """Pre-activation blocks: ``layer2.0.bn1`` normalises the block *input*, so its width
    differs from the output width of ``layer2.0.conv1`` (in a post-activation block they match)."""
    bn, conv = shape_or_none(sd, "layer2.0.bn1.weight"), shape_or_none(sd, "layer2.0.conv1.weight")
    return bn is not None and conv is not None and bn[0] != conv[0]
