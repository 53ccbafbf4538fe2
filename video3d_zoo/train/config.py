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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import ConfigError


class TrainConfigError(ConfigError):
    """A training config that does not validate; the message names the key."""


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


@dataclass
class ModelSection:
    name: str = "resnet3d_18"
    """Registered model name (``video3d-zoo list``), optionally ``name.tag`` for pretrained weights."""
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    """Architecture arguments, e.g. ``{widen_factor = 0.5, shortcut_type = "A"}``."""
    pretrained: Optional[str] = None
    """Weights to start from: a manifest tag / alias, ``"default"``, or a checkpoint path."""
    num_classes: Optional[int] = None
    """Classifier size; default: the number of classes in the training data."""
    in_chans: int = 3
    input_preset: Optional[str] = None
    """Input convention (``kenshohara2017``, ``kenshohara2020``, ``torchvision``); default: the model's."""
    frames: Optional[int] = None
    """Clip length T; default: the input preset's (16)."""
    crop_size: Optional[int] = None
    """Spatial crop side; default: the input preset's (112)."""
    resize: Optional[int] = None
    """Short side frames are scaled to before cropping; default: ``crop_size``."""
    channels_last_3d: bool = False
    sync_bn: bool = False
    """Convert BatchNorm to SyncBatchNorm under DistributedDataParallel."""


@dataclass
class SyntheticSection:
    videos_per_class: int = 100
    seed: int = 0
    size: int = 64
    frames: int = 32
    test_fraction: float = 0.25


@dataclass
class DataSection:
    format: str = "folder"
    """``kinetics`` | ``ucf101`` | ``hmdb51`` | ``folder`` | ``synthetic`` (generated into ``root``)."""
    root: str = ""
    """Folder holding the videos."""
    annotations: str = ""
    """Kinetics: the train CSV; UCF-101: the folder with classInd.txt / trainlist0N.txt;
    HMDB-51: the folder with the ``*_test_splitN.txt`` files; folder: the folder with the split lists
    (default: ``root``)."""
    val_annotations: str = ""
    """Kinetics: the validation CSV (default: ``validate.csv`` next to ``annotations``)."""
    split: int = 1
    """UCF-101 / HMDB-51 split number (1, 2 or 3)."""
    train_list: str = "train"
    """Folder format: split list name (``train`` -> ``train.txt``) for training."""
    val_list: str = "test"
    """Folder format: split list for validation / evaluation."""
    on_error: str = "skip"
    """``skip``: report malformed rows, missing and undecodable videos with file and line, skip and
    count them; ``fatal``: stop at the first one."""
    check_videos: str = "exists"
    """Before training: ``exists`` (stat every file), ``probe`` (open every file) or ``none``."""
    decode_short_side: int = 0
    """Decode training videos at this short side before cropping (0 = ``model.resize``); e.g. 240,
    the originals' frame height, so multi-scale crops are cut from full-resolution frames.
    Evaluation always decodes at ``model.resize``."""
    train_crop: str = "corner"
    """``corner`` (the paper's multi-scale corner crop), ``random_resized`` (2020 default) or ``center``."""
    n_scales: int = 5
    scale_step: float = 0.840896415253714
    """Multi-scale corner crop: scales 1, step, step^2, ... (2^-1/4 as in the original)."""
    hflip: bool = True
    """Random horizontal flip (turn off when left/right is part of the label)."""
    temporal_stride: int = 1
    """Take every k-th frame before cropping T frames (2020 ``sample_t_stride``)."""
    fps: Optional[float] = None
    """Resample videos to this frame rate when decoding (default: native)."""
    val_clips: int = 0
    """Validation clips per video: 0 = every non-overlapping clip, N = N evenly spaced clips."""
    num_workers: int = 0
    cache: bool = False
    """Keep decoded videos in memory after their first use (small data sets; per loader worker)."""
    limit_train: int = 0
    """Use only the first N training videos (0 = all); for smoke tests."""
    limit_val: int = 0
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)


@dataclass
class OptimSection:
    lr: float = 0.1
    momentum: float = 0.9
    dampening: float = 0.0
    weight_decay: float = 1e-3
    nesterov: bool = False
    clip_grad_norm: float = 0.0
    """Clip the global gradient norm to this value (0 = off)."""


@dataclass
class ScheduleSection:
    name: str = "multistep"
    """``multistep`` | ``plateau`` | ``cosine`` | ``constant``."""
    milestones: List[int] = field(default_factory=lambda: [50, 100, 150])
    gamma: float = 0.1
    patience: int = 10
    """Plateau: epochs without improvement of the validation loss before the lr is multiplied by gamma."""
    threshold: float = 1e-4
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    """Linear warmup from ``warmup_start_factor * lr`` over this many epochs (per step)."""
    warmup_start_factor: float = 0.1


@dataclass
class TrainSection:
    epochs: int = 200
    batch_size: int = 128
    """Global batch per optimizer step (over all processes and accumulation steps)."""
    accumulate: int = 1
    """Gradient accumulation steps per optimizer step."""
    val_batch_size: int = 0
    """Clips per evaluation forward pass (0 = batch_size // accumulate)."""
    amp: str = "none"
    """``none`` | ``bf16`` | ``fp16`` | ``auto`` (bf16 where the device runs it natively, fp16 on CUDA
    without bf16, else none).  fp16 uses a gradient scaler."""
    seed: int = 1
    deterministic: bool = True
    threads: int = 0
    """torch intra-op threads per process (0 = leave torch's default)."""
    device: str = "auto"
    """``auto`` | ``cpu`` | ``cuda``."""
    val_every: int = 1
    checkpoint_every_steps: int = 0
    """Also write ``last.pt`` every N optimizer steps inside an epoch (0 = at epoch ends only)."""
    best_metric: str = "val_video_top1"
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True
    """TensorBoard scalars when ``torch.utils.tensorboard`` imports (optional extra)."""
    max_steps: int = 0
    """Stop after this many optimizer steps in all (0 = run every epoch); for tests."""


@dataclass
class FinetuneSection:
    from_stage: str = "layer4"
    """With ``model.pretrained``: train this top-level module and everything after it (``layer4``
    trains layer4 + fc, ``fc`` only the head); earlier ones are frozen, BatchNorm statistics
    included.  ``all`` trains everything.  Ignored without pretrained weights."""


@dataclass
class OutputSection:
    dir: str = "runs"
    name: str = ""
    """Run folder name under ``dir``; default: the config file's stem."""
    overwrite: bool = False
    """Start afresh in an existing run folder (otherwise that needs ``--resume`` or a new name)."""
    export: str = "last"
    """Weights exported to ``RUN/export``: ``last`` or ``best`` (by ``train.best_metric``)."""
    plot: bool = True
    final_eval: bool = True
    """Evaluate the exported model on the validation split (every clip) and write metrics.json."""


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    output: OutputSection = field(default_factory=OutputSection)
    source: str = ""
    """The file the config came from (informational)."""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: Union[str, Path]) -> Path:
        from ..weights import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        return path


CHOICES = {
    "data.format": ("kinetics", "ucf101", "hmdb51", "folder", "synthetic"),
    "data.on_error": ("skip", "fatal"),
    "data.check_videos": ("exists", "probe", "none"),
    "data.train_crop": ("corner", "random_resized", "center"),
    "schedule.name": ("multistep", "plateau", "cosine", "constant"),
    "train.amp": ("none", "bf16", "fp16", "auto"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.best_metric": ("val_video_top1", "val_clip_top1", "val_video_top5", "val_loss"),
    "output.export": ("last", "best"),
}
POSITIVE = {"optim.lr", "data.fps", "data.n_scales", "data.temporal_stride", "train.epochs", "train.batch_size",
            "train.accumulate", "train.val_every", "train.log_every", "model.in_chans",
            "data.synthetic.videos_per_class", "data.synthetic.size", "data.synthetic.frames",
            "model.frames", "model.crop_size", "model.resize", "model.num_classes"}
NON_NEGATIVE = {"optim.momentum", "optim.dampening", "optim.weight_decay",
                "optim.clip_grad_norm", "schedule.min_lr", "schedule.warmup_epochs",
                "schedule.threshold", "schedule.patience", "train.threads", "train.val_batch_size",
                "train.checkpoint_every_steps", "train.max_steps", "data.num_workers",
                "data.val_clips", "data.limit_train", "data.limit_val", "data.decode_short_side"}
UNIT_INTERVAL = {"optim.momentum", "optim.dampening", "data.synthetic.test_fraction"}


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
        from ..train_configs import resolve_config_path

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
        from ..train_configs import unknown_config_hint

        raise TrainConfigError(f"{path}: no such config file (expected a .toml or .json file, or the name of a "
                               f"packaged config; {unknown_config_hint()})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainConfigError(f"{path}: cannot read the config file as UTF-8 text ({exc})") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrainConfigError(f"{path}: not valid JSON ({exc})") from exc
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TrainConfigError(f"{path}: not valid TOML ({exc})") from exc
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
    if config.data.format != "synthetic" and not config.data.root:
        fail("data.root", f"the {config.data.format} format needs the folder holding the videos "
                          "(--set data.root=PATH)")
    if config.data.format == "synthetic" and not config.data.root:
        fail("data.root", "the synthetic format needs a folder to write the data set to")
    size = config.data.synthetic.size
    if size % 2:
        fail("data.synthetic.size", "must be even (H.264 yuv420p)")


# -- resuming with a changed config ----------------------------------------------------------------
RESUME_SAFE = frozenset({
    "source", "output.dir", "output.name", "output.overwrite", "output.plot", "train.progress",
    "train.tensorboard", "train.log_every", "train.checkpoint_every_steps", "data.num_workers", "data.cache",
})
"""Keys that may differ from the checkpoint's config on ``--resume`` without
``--accept-config-changes``: they only locate the run folder (which held the checkpoint),
change what is shown, logged or cached, or when checkpoints are written, never the numbers.
(The data order and every clip's augmentation are functions of (seed, epoch, video), not of the
loader workers.)  Everything else, ``train.device``, ``train.threads`` and ``train.amp``
included, can change the results and has to be accepted."""

class _Note(str):
    """A placeholder shown as is (not as a JSON value) by :func:`describe_changes`."""


_ABSENT = _Note("(absent)")


def flatten(data: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (tables all the way down; lists are values)."""
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        name = _join(prefix, str(key))
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
