"""Training configuration: nested dataclasses read from TOML or JSON, with ``--set`` overrides.

A config file has one table per section (``[model]``, ``[data]``, ``[optim]``, ``[schedule]``,
``[train]``, ``[finetune]``, ``[output]``); every field has a default, so a file states only
what differs.  ``--set section.key=value`` overrides any field from the command line; the value
is read as a TOML value when it parses as one (``0.01``, ``true``, ``[10, 20]``,
``"text"``) and as a bare string otherwise (``data.root=/data/k700``).

Validation is strict and names the offending key: an unknown key (with the closest known
ones), a value of the wrong type, or an impossible value raise :class:`TrainConfigError`.
The resolved configuration is written to the run folder as ``train_config.json``, which
this module reads back as well (so ``train(run_dir / "train_config.json")`` repeats a run).

Relative paths in a config are relative to the current working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from ..errors import TrainConfigError
from ..models.config import loads_finite
from .config_schema import CHOICES, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, TrainConfig, upper_bounds


def _import_toml():
    """The TOML reader: the standard library's ``tomllib`` (Python 3.11+), else ``tomli``."""
    try:
        import tomllib as module
    except ModuleNotFoundError:
        try:
            import tomli as module
        except ModuleNotFoundError:
            raise ImportError("video3d_zoo.train reads TOML with tomllib (Python 3.11+) or, on older "
                              "Pythons, tomli: pip install tomli") from None
    return module


tomllib = _import_toml()


# -- reading ---------------------------------------------------------------------------------
def load_config(source: Union[str, Path, Mapping[str, Any], TrainConfig, None] = None,
                overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML / JSON config file (or a mapping), apply ``key=value`` overrides, validate."""
    if isinstance(source, TrainConfig):
        data = source.to_dict()
        where = source.source or "config"
    elif isinstance(source, Mapping):
        data, where = dict(source), "config"
    elif source is None:
        data, where = {}, "defaults"
    else:
        from .recipes import recipe_config, resolve_config_path

        data = recipe_config(source)  # a recipe of the table, by name
        if data is not None:
            where = data["source"]
        else:
            path = resolve_config_path(source)  # a path, or the name of a config shipped in the package
            where = str(path)
            data = read_config_file(path)
            data.setdefault("source", str(path))
    data = json.loads(json.dumps(data))  # deep copy, plain types
    for item in overrides or ():
        key, value = parse_override(item)
        set_dotted(data, key, value)
    config = from_dict(TrainConfig, data, "", where)
    validate(config, where)
    return config


def read_config_file(path: Path) -> Dict[str, Any]:
    if path.is_dir():
        raise TrainConfigError(f"{path}: is a folder; expected a config file (.toml or .json)")
    if not path.is_file():
        from .recipes import unknown_config_hint

        raise TrainConfigError(f"{path}: no such config file (expected a .toml or .json file, or the name of a "
                               f"recipe or packaged config; {unknown_config_hint()})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainConfigError(f"{path}: cannot read the config file as UTF-8 text ({exc})") from exc
    if path.suffix.lower() == ".json":
        try:
            data = loads_finite(text)  # no NaN literals, no nesting deep enough to exhaust the recursion
        except ValueError as exc:  # json.JSONDecodeError included
            raise TrainConfigError(f"{path}: not valid JSON ({exc})") from exc
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TrainConfigError(f"{path}: not valid TOML ({exc})") from exc
        except RecursionError:  # tomllib recurses into nested arrays and inline tables
            raise TrainConfigError(f"{path}: not valid TOML (nested too deep; a config needs a few levels)") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: expected a table / object at the top level")
    return data


def parse_override(item: str) -> Tuple[str, Any]:
    """``"optim.lr=0.01"`` -> ``("optim.lr", 0.01)``; values parse as TOML, else as a string."""
    if not isinstance(item, str) or "=" not in item:
        raise TrainConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=0.01")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key:
        raise TrainConfigError(f"--set {item!r}: empty key")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key, value


def set_dotted(data: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise TrainConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _hints(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls, data: Any, prefix: str, where: str):
    """Build dataclass ``cls`` from ``data`` with type checks; errors name ``prefix.key``."""
    if not isinstance(data, Mapping):
        raise TrainConfigError(f"{where}: {prefix or 'config'}: expected a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=3)
        hint = f"; did you mean {', '.join(_join(prefix, c) for c in close)}?" if close else ""
        raise TrainConfigError(f"{where}: unknown key {_join(prefix, key)!r}{hint} "
                               f"(known in {prefix or 'the top level'}: {', '.join(fields)})")
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, _join(prefix, name), where)
    return cls(**kwargs)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _coerce(tp: Any, value: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key, where)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, where)
    bad = TrainConfigError(f"{where}: {key} = {value!r}: expected {_type_name(tp)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(float(value)):
            raise TrainConfigError(f"{where}: {key} = {value!r}: expected a finite number")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise bad
        return value
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    if tp is Any:
        return value
    raise bad  # pragma: no cover


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, Dict):
        return "a table"
    if tp is type(None):
        return "nothing"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _get(config: TrainConfig, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def validate(config: TrainConfig, where: str = "config") -> None:
    """Range and consistency checks beyond types."""
    def fail(key: str, message: str) -> None:
        raise TrainConfigError(f"{where}: {key} = {_get(config, key)!r}: {message}")

    for key, choices in CHOICES.items():
        if _get(config, key) not in choices:
            fail(key, f"expected one of {', '.join(choices)}")
    for key in sorted(POSITIVE):
        value = _get(config, key)
        if value is not None and value <= 0:
            fail(key, "must be positive")
    for key in sorted(NON_NEGATIVE):
        if _get(config, key) < 0:
            fail(key, "must not be negative")
    for key in sorted(UNIT_INTERVAL):
        if not 0 <= _get(config, key) <= 1:
            fail(key, "must be in [0, 1]")
    for key, high in sorted(upper_bounds().items()):
        value = _get(config, key)
        if value is not None and value > high:
            fail(key, f"must be at most {high:g} (the bounds are in video3d_zoo/limits.py)")
    if not config.model.name:
        fail("model.name", "give a registered model name")
    if config.optim.nesterov and (config.optim.momentum <= 0 or config.optim.dampening != 0):
        fail("optim.nesterov", "Nesterov momentum needs momentum > 0 and dampening = 0")
    if config.schedule.min_lr > config.optim.lr:
        fail("schedule.min_lr", f"must not exceed optim.lr = {config.optim.lr!r}")
    if not 0 < config.schedule.gamma <= 1:
        fail("schedule.gamma", "must be in (0, 1]")
    if not 0 < config.schedule.warmup_start_factor <= 1:
        fail("schedule.warmup_start_factor", "must be in (0, 1]")
    ms = config.schedule.milestones
    if any(m <= 0 for m in ms) or list(ms) != sorted(set(ms)):
        fail("schedule.milestones", "must be increasing positive epochs")
    if config.train.batch_size % config.train.accumulate:
        fail("train.batch_size", f"must be divisible by train.accumulate = {config.train.accumulate}")
    if not 0 < config.data.scale_step <= 1:
        fail("data.scale_step", "must be in (0, 1]")
    if config.data.split not in (1, 2, 3):
        fail("data.split", "UCF-101 and HMDB-51 have splits 1, 2 and 3")
    if config.data.format == "merged":
        _validate_merge(config.data, fail)
    elif config.data.format != "synthetic" and not config.data.root:
        fail("data.root", f"the {config.data.format} format needs the folder holding the videos "
                          "(--set data.root=PATH)")
    if config.data.format == "synthetic" and not config.data.root:
        fail("data.root", "the synthetic format needs a folder to write the data set to")
    size = config.data.synthetic.size
    if size % 2:
        fail("data.synthetic.size", "must be even (H.264 yuv420p)")


MERGEABLE = ("kinetics", "moments", "stair", "activitynet", "ucf101", "hmdb51", "folder")
PART_KEYS = ("root", "annotations", "val_annotations")


def _validate_merge(data, fail) -> None:
    """A ``merged`` data section: at least two known sets, each with a ``parts`` entry naming its root."""
    if len(data.merge) < 2 or len(set(data.merge)) != len(data.merge) or any(m not in MERGEABLE for m in data.merge):
        fail("data.merge", f"expected two or more different sets of {', '.join(MERGEABLE)}, in class order")
    for name in data.merge:
        part = data.parts.get(name)
        if not isinstance(part, dict) or not part.get("root"):
            fail("data.parts", f"give data.parts.{name}.root (the folder holding the {name} videos)")
    for name, part in data.parts.items():
        unknown = [k for k in part if k not in PART_KEYS] if isinstance(part, dict) else ["(not a table)"]
        if name not in data.merge or unknown:
            fail("data.parts", f"parts.{name}: expected a set of data.merge with keys {', '.join(PART_KEYS)}")
