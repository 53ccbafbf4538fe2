"""How a model wants to be fed (:class:`InputSpec`) and what a built model is (:class:`ModelConfig`).

Both are frozen dataclasses that round-trip through plain JSON (``config.json`` next to a
``model.safetensors``).  Parsing is strict: an unknown field, a wrong type or an impossible
value raises :class:`~video3d_zoo.errors.ConfigError` naming the field.

The three input conventions of the original code bases are presets:

* ``kenshohara2017``: raw 0-255 RGB minus the ActivityNet mean, no std division
  (the 2017 CVPR code's ``ToTensor(norm_value=1)`` + ``Normalize(mean, [1, 1, 1])``).
* ``kenshohara2020``: 0-1 RGB normalised with the Kinetics mean and std (2020 rewrite).
* ``torchvision``: 0-1 RGB, resize to 128x171, centre crop 112, torchvision's Kinetics mean/std.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple, Union

from .. import limits
from ..errors import ConfigError

Resize = Union[int, Tuple[int, int]]
# Key of the safetensors metadata entry that carries a model's config.json text.
CONFIG_METADATA_KEY = "video3d_zoo.models.config"


def _triple(name: str, value: Any) -> Tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except TypeError as exc:
        raise ConfigError(f"input_spec.{name}: expected 3 numbers, got {value!r}") from exc
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"input_spec.{name}: expected 3 finite numbers, got {value!r}")
    return out  # type: ignore[return-value]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"the literal {name} is not allowed: every number must be finite")


MAX_JSON_DEPTH = 32  # a config or manifest nests 4 levels; json.loads recurses (RecursionError at ~1000)
_JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _check_json_depth(text: str) -> None:
    """Refuse nesting deeper than :data:`MAX_JSON_DEPTH` by counting brackets outside strings."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for bracket in _NOT_BRACKETS.sub("", _JSON_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep; a config or manifest needs a few")


def loads_finite(text: str) -> Any:
    """``json.loads`` that refuses the ``NaN`` / ``Infinity`` / ``-Infinity`` literals (Python's json
    accepts them by default) and nesting deeper than :data:`MAX_JSON_DEPTH` (checked first: Python's
    parser recurses).  Raises :class:`json.JSONDecodeError` or :class:`ValueError`; a number too large
    for a float (``1e999``) still parses as inf and is caught by the field checks."""
    _check_json_depth(text)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        # Python's own message advises sys.set_int_max_str_digits(): advice for a programmer, not a user
        raise ValueError("an integer with thousands of digits; every number must be of a sensible size") from None


def nonfinite_fields(value: Any, where: str) -> list:
    """``where.key[i]...`` of every float inside ``value`` (nested objects and lists) that is NaN or inf."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in nonfinite_fields(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in nonfinite_fields(v, f"{where}[{i}]")]
    return []


def _positive_int(owner: str, name: str, value: Any, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or (high is not None and value > high):
        upper = f" of at most {high}" if high is not None else ""
        raise ConfigError(f"{owner}.{name}: expected a positive integer{upper}, got {value!r}")
    return value


#: architecture arguments that size a model -> their upper bound (:mod:`video3d_zoo.limits`); a list of
#: them (``stage_widths``) is checked entry by entry
ARCH_SIZE_BOUNDS = {"widen_factor": limits.MAX_WIDEN_FACTOR,
                    **{name: limits.MAX_CHANNELS for name in ("stage_widths", "stem_width", "stem_mid", "growth_rate",
                                                              "num_init_features", "bn_size", "cardinality",
                                                              "expansion")},
                    **{name: limits.MAX_FRAMES for name in ("layers", "block_config", "stem_kernel_t", "block_kernel_t",
                                                            "stem_stride_t", "stem_pool_kernel_t")}}


def check_arch_sizes(arch_kwargs: Mapping[str, Any], owner: str = "config.arch_kwargs") -> None:
    """Refuse an architecture argument that sizes a model (:data:`ARCH_SIZE_BOUNDS`) above its bound, before
    anything is built (``widen_factor: 1e6`` used to overflow deep inside the first layer)."""
    for name, high in ARCH_SIZE_BOUNDS.items():
        value = arch_kwargs.get(name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not 0 <= v <= high:
                raise ConfigError(f"{owner}.{name}: expected a number from 0 to {high:g}, got {value!r}")


@dataclass(frozen=True)
class InputSpec:
    """Preprocessing a set of weights expects.

    ``value_scale`` is the value of a fully saturated pixel before normalisation (255.0 for
    the 2017 weights, 1.0 otherwise); ``mean`` and ``std`` are in that same scale.
    ``resize`` is a short-side length (int) or an exact ``(height, width)`` pair.
    """

    frames: int = 16
    crop_size: int = 112
    resize: Resize = 112
    value_scale: float = 1.0
    mean: Tuple[float, float, float] = (0.4345, 0.4051, 0.3775)
    std: Tuple[float, float, float] = (0.2768, 0.2713, 0.2737)
    name: str = "kenshohara2020"

    def __post_init__(self) -> None:
        _positive_int("input_spec", "frames", self.frames, limits.MAX_FRAMES)
        _positive_int("input_spec", "crop_size", self.crop_size, limits.MAX_SIDE)
        resize = self.resize
        if isinstance(resize, (list, tuple)):
            if len(resize) != 2:
                raise ConfigError(f"input_spec.resize: expected an int or [height, width], got {resize!r}")
            resize = tuple(_positive_int("input_spec", "resize", int(v) if isinstance(v, float) and v.is_integer()
                                         else v, limits.MAX_SIDE) for v in resize)
        else:
            resize = _positive_int("input_spec", "resize", resize, limits.MAX_SIDE)
        object.__setattr__(self, "resize", resize)
        scale = self.value_scale
        if (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale)
                or scale <= 0):  # `inf > 0` holds, so finiteness is checked on its own
            raise ConfigError(f"input_spec.value_scale: expected a positive finite number, got {scale!r}")
        object.__setattr__(self, "value_scale", float(self.value_scale))
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        std = _triple("std", self.std)
        if any(s <= 0 for s in std):
            raise ConfigError(f"input_spec.std: every value must be positive, got {std!r}")
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["resize"] = list(self.resize) if isinstance(self.resize, tuple) else self.resize
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InputSpec":
        return _from_mapping(cls, data, "input_spec")

    def replace(self, **changes: Any) -> "InputSpec":
        return dataclasses.replace(self, **changes)

    def timm_data_config(self, in_chans: int = 3) -> dict:
        """This spec in timm's ``pretrained_cfg`` terms: ``mean`` / ``std`` on the 0-1 scale (timm's
        transforms divide pixels by 255 first), ``input_size`` (C, T, H, W), ``crop_pct`` (crop over
        the resized short side), ``interpolation`` and ``crop_mode``; what
        ``timm.data.resolve_data_config`` reads."""
        short = min(self.resize) if isinstance(self.resize, tuple) else self.resize
        return {"input_size": (in_chans, self.frames, self.crop_size, self.crop_size),
                "mean": tuple(m / self.value_scale for m in self.mean),
                "std": tuple(s / self.value_scale for s in self.std),
                "crop_pct": self.crop_size / short, "crop_mode": "center", "interpolation": "bilinear"}


INPUT_PRESETS: Mapping[str, InputSpec] = {
    "kenshohara2017": InputSpec(
        frames=16, crop_size=112, resize=112, value_scale=255.0,
        mean=(114.7748, 107.7354, 99.4750), std=(1.0, 1.0, 1.0), name="kenshohara2017"),
    "kenshohara2020": InputSpec(name="kenshohara2020"),
    "torchvision": InputSpec(
        frames=16, crop_size=112, resize=(128, 171), value_scale=1.0,
        mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989), name="torchvision"),
}


def input_preset(name: str) -> InputSpec:
    try:
        return INPUT_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown input preset {name!r}; known: {sorted(INPUT_PRESETS)}") from None


def as_tuples(value: Any) -> Any:
    """``value`` with every list (at any depth) a tuple.  JSON has only lists and builders take
    tuples, so an architecture argument compares equal before ``config.json`` and after it."""
    if isinstance(value, (list, tuple)):
        return tuple(as_tuples(v) for v in value)
    if isinstance(value, Mapping):
        return {k: as_tuples(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and feed it: stored as ``config.json``.

    Sequences in ``arch_kwargs`` are kept as tuples (:func:`as_tuples`), so a config saved and
    loaded back compares equal to the original.
    """

    architecture: str
    num_classes: int
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    in_chans: int = 3
    input_spec: InputSpec = field(default_factory=InputSpec)
    labels: Optional[Tuple[str, ...]] = None
    source: Optional[str] = None
    tag: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture:
            raise ConfigError(f"config.architecture: expected a model name, got {self.architecture!r}")
        if not (isinstance(self.num_classes, int) and not isinstance(self.num_classes, bool)
                and 0 <= self.num_classes <= limits.MAX_CLASSES):
            raise ConfigError(f"config.num_classes: expected an integer from 0 to {limits.MAX_CLASSES}, "
                              f"got {self.num_classes!r}")
        _positive_int("config", "in_chans", self.in_chans, limits.MAX_CHANNELS)
        if not isinstance(self.arch_kwargs, Mapping):
            raise ConfigError(f"config.arch_kwargs: expected an object, got {self.arch_kwargs!r}")
        bad = nonfinite_fields(dict(self.arch_kwargs), "config.arch_kwargs")
        if bad:
            raise ConfigError(f"{', '.join(bad)}: expected a finite number, got NaN or infinity")
        check_arch_sizes(self.arch_kwargs)
        object.__setattr__(self, "arch_kwargs", {k: as_tuples(v) for k, v in self.arch_kwargs.items()})
        if isinstance(self.input_spec, Mapping):
            object.__setattr__(self, "input_spec", InputSpec.from_dict(self.input_spec))
        elif not isinstance(self.input_spec, InputSpec):
            raise ConfigError(f"config.input_spec: expected an object, got {self.input_spec!r}")
        if self.labels is not None:
            labels = tuple(self.labels)
            if not all(isinstance(x, str) for x in labels):
                raise ConfigError("config.labels: expected a list of strings")
            if self.num_classes and len(labels) != self.num_classes:
                raise ConfigError(
                    f"config.labels: {len(labels)} names for num_classes={self.num_classes}")
            object.__setattr__(self, "labels", labels)

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture,
            "arch_kwargs": dict(self.arch_kwargs),
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "input_spec": self.input_spec.to_dict(),
            "labels": list(self.labels) if self.labels is not None else None,
            "source": self.source,
            "tag": self.tag,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        return _from_mapping(cls, data, "config")

    @classmethod
    def from_json(cls, text: str, where: str = "config.json") -> "ModelConfig":
        try:
            data = loads_finite(text)
        except ValueError as exc:  # JSONDecodeError is a ValueError too
            raise ConfigError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _from_mapping(cls, data: Mapping[str, Any], owner: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{owner}: expected an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{owner}: unknown field(s) {unknown}; expected some of {sorted(names)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"{owner}: missing required field(s) {missing}")
    kwargs = {k: v for k, v in data.items() if not (v is None and k in ("input_spec", "arch_kwargs"))}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{owner}: {exc}") from exc
