"""What differs between two training configs: the check ``--resume`` makes against the checkpoint's."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from .config_schema import RESUME_SAFE, TrainConfig


class _Note(str):
    """A placeholder shown as is (not as a JSON value) by :func:`describe_changes`."""


_ABSENT = _Note("(absent)")


def flatten(data: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (tables all the way down; lists are values)."""
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):  # an empty table adds no key: {} equals absent
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def config_changes(old: Union[str, Mapping[str, Any], None], new: Union[TrainConfig, Mapping[str, Any]],
                   ignore: Sequence[str] = RESUME_SAFE) -> List[Tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every key that differs, ``ignore`` left out.

    ``old`` is a checkpoint's ``state["config"]`` (JSON text) or a mapping; a key only one side
    has shows ``"(absent)"`` on the other.  No stored config at all is one change, ``"config"``.
    """
    new_data = new.to_dict() if isinstance(new, TrainConfig) else new
    if isinstance(old, str):
        try:
            old = json.loads(old)
        except json.JSONDecodeError:
            old = None
    if not isinstance(old, Mapping):
        return [("config", _Note("(not stored in the checkpoint)"), _Note("(the current config)"))]
    a, b = flatten(json.loads(json.dumps(old))), flatten(json.loads(json.dumps(new_data)))
    keys = [k for k in list(b) + [k for k in a if k not in b] if k not in ignore]
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def describe_changes(changes: Sequence[Tuple[str, Any, Any]]) -> str:
    """``optim.lr: 0.05 -> 0.01, train.epochs: 2 -> 4``."""
    def show(value: Any) -> str:
        return str(value) if isinstance(value, _Note) else json.dumps(value)

    return ", ".join(f"{key}: {show(a)} -> {show(b)}" for key, a, b in changes)
