"""What each stage of a model outputs: :class:`FeatureInfo`, :class:`FeatureInfoList`, :func:`take_indices`."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union


from ..errors import ConfigError

_FEATURE_KEYS = ("module", "num_chs", "reduction", "reduction_t", "reduction_hw", "reduction_s", "index")


@dataclass(frozen=True)
class FeatureInfo:
    """One stage output of a model: module name, channels and cumulative reductions.

    ``reduction_t`` is the temporal stride from the input clip to this output, ``reduction_s``
    the spatial one (also readable as ``reduction_hw``, and as ``reduction`` - timm's name,
    which is spatial); ``index`` is the stage's position, what ``forward_intermediates(indices=)``
    and ``out_indices`` count.  Items also read like timm's dicts: ``info["num_chs"]``.
    """

    module: str
    num_chs: int
    reduction_t: int
    reduction_s: int
    index: int = 0

    @property
    def reduction_hw(self) -> int:
        return self.reduction_s

    @property
    def reduction(self) -> int:
        return self.reduction_s

    def __getitem__(self, key: str):
        if key not in _FEATURE_KEYS:
            raise KeyError(f"{key!r} is not a feature_info key; known: {', '.join(_FEATURE_KEYS)}")
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in _FEATURE_KEYS else default

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in _FEATURE_KEYS}


class FeatureInfoList(list):
    """``model.feature_info``: a list of :class:`FeatureInfo`, one per stage output, with timm's accessors.

    ``idx`` selects entries of this list: ``None`` all of them (a list comes back), an int one
    (its value), a sequence several (a list).  For a features-only backbone the list holds its
    outputs only (``out_indices``), in output order.
    """

    def get(self, key: str, idx: Union[None, int, Sequence[int]] = None):
        if key not in _FEATURE_KEYS:
            raise KeyError(f"{key!r} is not a feature_info key; known: {', '.join(_FEATURE_KEYS)}")
        if idx is None:
            return [getattr(info, key) for info in self]
        if isinstance(idx, int):
            return getattr(self[idx], key)
        return [getattr(self[i], key) for i in idx]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx: Union[None, int, Sequence[int]] = None):
        keys = tuple(keys or _FEATURE_KEYS)
        if isinstance(idx, int):
            return {k: self[idx][k] for k in keys}
        chosen = range(len(self)) if idx is None else idx
        return [{k: self[i][k] for k in keys} for i in chosen]

    def channels(self, idx: Union[None, int, Sequence[int]] = None):
        """Output channels (``num_chs``)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: Union[None, int, Sequence[int]] = None):
        """Spatial reduction (H and W stride), as timm's ``reduction()``; see :meth:`reduction_t`."""
        return self.get("reduction_s", idx)

    def reduction_hw(self, idx: Union[None, int, Sequence[int]] = None):
        return self.get("reduction_s", idx)

    def reduction_t(self, idx: Union[None, int, Sequence[int]] = None):
        """Temporal reduction (T stride)."""
        return self.get("reduction_t", idx)

    def module_name(self, idx: Union[None, int, Sequence[int]] = None):
        return self.get("module", idx)

    @property
    def out_indices(self) -> Tuple[int, ...]:
        """The stage index of every entry."""
        return tuple(info.index for info in self)


def take_indices(num_stages: int, indices: Union[None, int, Sequence[int]] = None) -> List[int]:
    """Stage indices, sorted and distinct, that ``indices`` selects out of ``num_stages``.

    ``None``: every stage; an int ``n``: the last ``n`` stages (timm's rule); a sequence: those
    indices, negative ones counting from the end.  Anything else is a :class:`ConfigError`.
    """
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, bool):
        raise ConfigError(f"indices must be None, an int or a sequence of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ConfigError(f"indices={indices}: an int takes the last n stages, 1 <= n <= {num_stages}")
        return list(range(num_stages - indices, num_stages))
    try:
        items = list(indices)
    except TypeError:
        raise ConfigError(f"indices must be None, an int or a sequence of ints, got {indices!r}") from None
    out = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise TypeError
            index = operator.index(item)
        except TypeError:
            raise ConfigError(f"stage indices must be integers, got {item!r} in {indices!r}") from None
        resolved = index + num_stages if index < 0 else index
        if not 0 <= resolved < num_stages:
            raise ConfigError(f"stage index {index} is out of range: this model has {num_stages} stages "
                              f"(0..{num_stages - 1}, or -{num_stages}..-1)")
        out.append(resolved)
    if not out:
        raise ConfigError("indices selects no stage")
    return sorted(set(out))
