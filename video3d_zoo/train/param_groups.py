"""Optimiser parameter groups from a model's ``group_matcher()`` and ``no_weight_decay()``.

Every zoo model describes its parameter groups the way timm models do (see
:meth:`video3d_zoo.layers.VideoClassifier.group_matcher`): a dict of regexes, ``stem`` first,
then ``blocks``, whose captured numbers order the groups; whatever neither matches (the
classifier, a final norm) is the last group.

* :func:`group_parameters` - the groups, in forward order, as lists of parameter names.
* :func:`param_groups_weight_decay` - two groups: decayed, and ``no_weight_decay()`` (0-/1-D
  tensors: BatchNorm affine parameters, biases); the trainer's optimiser is built from them
  (:func:`video3d_zoo.train.trainer_setup.build_optimizer`).
* :func:`param_groups_layer_decay` - layer-wise learning-rate decay: the last group gets the
  full rate, each earlier group ``layer_decay`` times the next one's.

>>> import torch, video3d_zoo
>>> from video3d_zoo.train.param_groups import param_groups_layer_decay
>>> model = video3d_zoo.create_model("resnet3d_18", num_classes=10)
>>> groups = param_groups_layer_decay(model, lr=0.01, weight_decay=1e-4, layer_decay=0.75)
>>> optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from torch import nn

Matcher = Union[str, Sequence[Tuple[str, Optional[Tuple[float, ...]]]]]


def _ordinal(name: str, matcher: Mapping[str, Matcher]) -> Optional[Tuple[float, ...]]:
    """Sort key of ``name``'s group: (position of the matcher key, captured numbers, suffix)."""
    for rank, rules in enumerate(matcher.values()):
        if isinstance(rules, str):
            rules = [(rules, None)]
        for pattern, suffix in rules:
            found = re.match(pattern, name)
            if found:
                numbers = tuple(float(g) for g in found.groups() if g is not None)
                return (float(rank),) + numbers + tuple(suffix or ())
    return None


def group_parameters(model: nn.Module, coarse: bool = False,
                     matcher: Optional[Mapping[str, Matcher]] = None) -> List[List[str]]:
    """Parameter names grouped by ``model.group_matcher(coarse)`` (or ``matcher``), in forward order.

    Groups are ordered by the matcher key (``stem`` before ``blocks``) and then by the numbers
    the regex captures; parameters no regex matches form one last group.  Every trainable
    parameter is in exactly one group.
    """
    matcher = matcher if matcher is not None else model.group_matcher(coarse=coarse)
    keyed: Dict[Tuple[float, ...], List[str]] = {}
    rest: List[str] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = _ordinal(name, matcher)
        if key is None:
            rest.append(name)
        else:
            keyed.setdefault(key, []).append(name)
    groups = [keyed[key] for key in sorted(keyed)]
    return groups + ([rest] if rest else [])


def _no_decay(model: nn.Module, extra: Iterable[str]) -> set:
    names = set(extra)
    if hasattr(model, "no_weight_decay"):
        names |= set(model.no_weight_decay())
    return names


def param_groups_weight_decay(model: nn.Module, weight_decay: float = 1e-5,
                              no_weight_decay_list: Iterable[str] = ()) -> List[Dict[str, Any]]:
    """Two optimiser groups: ``no_weight_decay()`` names (and ``no_weight_decay_list``) without decay."""
    skip = _no_decay(model, no_weight_decay_list)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in skip else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0, "group_name": "no_decay"},
            {"params": decay, "weight_decay": weight_decay, "group_name": "decay"}]


def param_groups_layer_decay(model: nn.Module, lr: Optional[float] = None, weight_decay: float = 0.05,
                             layer_decay: float = 0.75, coarse: bool = False,
                             no_weight_decay_list: Iterable[str] = ()) -> List[Dict[str, Any]]:
    """Optimiser groups with layer-wise learning-rate decay.

    Group ``i`` of ``n`` (:func:`group_parameters`) gets ``lr_scale = layer_decay ** (n - 1 - i)``
    (timm's key, for schedulers that read it) and, when ``lr`` is given, ``lr = lr * lr_scale``
    (for plain ``torch.optim`` optimisers).  Each group is split by weight decay as in
    :func:`param_groups_weight_decay`; ``group_name`` says which is which.
    """
    skip = _no_decay(model, no_weight_decay_list)
    params = dict(model.named_parameters())
    groups = group_parameters(model, coarse=coarse)
    out: List[Dict[str, Any]] = []
    for index, names in enumerate(groups):
        scale = layer_decay ** (len(groups) - 1 - index)
        for decay in (True, False):
            chosen = [params[n] for n in names if (n not in skip) == decay]
            if not chosen:
                continue
            group = {"params": chosen, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale,
                     "group_name": f"layer_{index}_{'decay' if decay else 'no_decay'}"}
            if lr is not None:
                group["lr"] = lr * scale
            out.append(group)
    return out
