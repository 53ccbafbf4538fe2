"""The weights manifest: which pretrained weights exist, what they are, and where they live.

``weights_manifest.json`` (repository root; the package ships an identical copy in
``video3d_zoo/data/``) is the one source of truth.  This module turns it into frozen
objects, validates it (every error names the entry and the field), resolves what a user asks
for (``pretrained=True``, a tag, an alias word) to one :class:`WeightsEntry`, and fetches the
converted checkpoint through :mod:`video3d_zoo.hub`.

Shape: ``{"schema_version": 1, "aliases": {model: {word: tag}}, "entries": [...]}``; each entry
is keyed by ``model`` and ``tag`` (see ``weights_manifest.json`` and :class:`WeightsEntry`).

Selection is explicit: ``pretrained=True`` is the entry marked ``"default": true`` for the
model (at most one per model); a word such as ``"kinetics"`` resolves only through the
``aliases`` mapping of that model; a tag names an entry directly.  Nothing depends on the
order of the entries.

``VIDEO3D_ZOO_MANIFEST`` (or the ``path`` argument of :func:`load_manifest`) points to another
manifest file, for private zoos and mirrors.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import stat as stat_module
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .config import InputSpec, ModelConfig, loads_finite, nonfinite_fields
from .errors import ConfigError, ManifestError, UnknownModelError, WeightsNotFoundError
from .registry import MODELS, get_model_spec

SCHEMA_VERSION = 1
MANIFEST_ENV = "VIDEO3D_ZOO_MANIFEST"
MANIFEST_NAME = "weights_manifest.json"

_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_HEX40_RE = re.compile(r"^[0-9a-f]{40}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
METRICS = ("top1", "top5", "mean_top1_top5")
LEVELS = ("clip", "video")
LAYOUTS = ("kenshohara2017", "kenshohara2020", "torchvision", "zoo")


# -- the frozen objects ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HubLocation:
    """Where the converted file is published, pinned to one commit, with its checksum."""

    repo_id: str
    filename: str
    revision: str
    sha256: str
    size: int

    def to_dict(self) -> dict:
        return _obj(self, "repo_id filename revision sha256 size")


@dataclass(frozen=True)
class EmbeddedFile:
    """A converted file shipped inside the package (``path`` relative to ``video3d_zoo/``)."""

    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict:
        return _obj(self, "path sha256 size")


@dataclass(frozen=True)
class Upstream:
    """The original checkpoint the converted file was made from."""

    release: str
    file: str
    url: Optional[str] = None
    sha256: Optional[str] = None
    sha256_prefix: Optional[str] = None
    layout: Optional[str] = None
    alternate_files: Tuple[str, ...] = ()
    note: Optional[str] = None

    def to_dict(self) -> dict:
        return _obj(self, "release file url sha256 sha256_prefix? layout alternate_files? note?")


@dataclass(frozen=True)
class Accuracy:
    """One reported number with its protocol (metric, clip/video level, crops x clips, source)."""

    dataset: str
    metric: str
    value: float
    source: str
    level: Optional[str] = None
    split: Optional[str] = None
    crops: Optional[int] = None
    clips: Union[int, str, None] = None
    note: Optional[str] = None

    def to_dict(self) -> dict:
        return _obj(self, "dataset split metric value level crops clips source note")


@dataclass(frozen=True)
class Dataset:
    name: str
    pretrained_on: Optional[str] = None

    def to_dict(self) -> dict:
        return _obj(self, "name pretrained_on")


@dataclass(frozen=True)
class WeightsEntry:
    """One set of pretrained weights (``model.tag``)."""

    model: str
    tag: str
    num_classes: int
    input_spec: InputSpec
    default: bool = False
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    dataset: Optional[Dataset] = None
    labels: Optional[Tuple[str, ...]] = None
    labels_source: Optional[str] = None
    accuracy: Tuple[Accuracy, ...] = ()
    accuracy_note: Optional[str] = None
    params: Optional[int] = None
    gmacs: Optional[float] = None
    upstream: Optional[Upstream] = None
    license: Optional[str] = None
    license_note: Optional[str] = None
    description: Optional[str] = None
    hub: Optional[HubLocation] = None
    embedded: Optional[EmbeddedFile] = None

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def published(self) -> bool:
        return self.hub is not None

    def to_config(self) -> ModelConfig:
        """The :class:`ModelConfig` the converted file is loaded with."""
        if self.embedded:
            source = f"package:video3d_zoo/{self.embedded.path}"
        elif self.hub:
            source = f"hf://{self.hub.repo_id}@{self.hub.revision}/{self.hub.filename}"
        else:
            source = f"manifest:{self.name}"
        return ModelConfig(architecture=self.model, num_classes=self.num_classes,
                           arch_kwargs=dict(self.arch_kwargs), input_spec=self.input_spec,
                           labels=self.labels, source=source, tag=self.tag)

    def to_dict(self) -> dict:
        """The JSON object of this entry (the manifest's own field order)."""
        return _obj(self, "model tag default description? arch_kwargs dataset num_classes labels labels_source "
                          "input_spec accuracy accuracy_note? params gmacs upstream license license_note? hub embedded?")


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: entries plus the explicit alias words of each model."""

    entries: Tuple[WeightsEntry, ...]
    aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    description: Optional[str] = None
    path: Optional[str] = None

    # -- lookups ---------------------------------------------------------------------------------
    def models(self) -> List[str]:
        return sorted({e.model for e in self.entries})

    def entries_for(self, model: str) -> List[WeightsEntry]:
        return sorted((e for e in self.entries if e.model == model), key=lambda e: e.tag)

    def get(self, model: str, tag: str) -> WeightsEntry:
        for entry in self.entries:
            if entry.model == model and entry.tag == tag:
                return entry
        raise WeightsNotFoundError(f"no weights {model}.{tag} in {self._where()}{self._choices(model)}")

    def default_for(self, model: str) -> Optional[WeightsEntry]:
        return next((e for e in self.entries if e.model == model and e.default), None)

    def list_pretrained(self, pattern: str = "*") -> List[str]:
        """Sorted ``model.tag`` names matching a shell-style ``pattern``."""
        return sorted(e.name for e in self.entries if fnmatch.fnmatchcase(e.name, pattern))

    def resolve(self, model: str, pretrained: Any = True) -> WeightsEntry:
        """The entry ``pretrained`` selects for ``model``.

        ``pretrained`` is ``True`` (the entry marked default), a tag (``"k400_64f"``), an alias word
        defined for the model in ``aliases`` (``"kinetics"``) or a full ``"model.tag"`` name.
        """
        model = _canonical_model(model)
        if pretrained is True:
            entry = self.default_for(model)
            if entry is None:
                raise WeightsNotFoundError(
                    f"{model} has no default pretrained weights in {self._where()}{self._choices(model)}")
            return entry
        if not isinstance(pretrained, str) or not pretrained:
            raise WeightsNotFoundError(f"pretrained must be True, a tag, an alias or a path; got {pretrained!r}")
        word = pretrained
        if "." in word:
            base, _, tag = word.partition(".")
            if _canonical_model(base) != model:
                raise WeightsNotFoundError(f"pretrained={pretrained!r} names weights of {base}, not of {model}")
            word = tag
        tags = {e.tag for e in self.entries if e.model == model}
        if word in tags:
            return self.get(model, word)
        target = self.aliases.get(model, {}).get(word)
        if target is not None:
            return self.get(model, target)
        raise WeightsNotFoundError(f"no weights {pretrained!r} for {model} in {self._where()}{self._choices(model)}")

    # -- helpers ---------------------------------------------------------------------------------
    def _where(self) -> str:
        return self.path or "the weights manifest"

    def _choices(self, model: str) -> str:
        tags = [e.tag + (" (default)" if e.default else "") for e in self.entries_for(model)]
        if not tags:
            return f"; the manifest has no weights for {model} (video3d_zoo.list_pretrained() lists them all)"
        aliases = self.aliases.get(model, {})
        alias_text = (", aliases: " + ", ".join(f"{k} -> {v}" for k, v in sorted(aliases.items()))
                      if aliases else "")
        return f"; available: {', '.join(tags)}{alias_text}"

    def to_dict(self) -> dict:
        out: Dict[str, Any] = {"schema_version": self.schema_version}
        if self.description is not None:
            out["description"] = self.description
        out["aliases"] = {m: dict(sorted(a.items())) for m, a in sorted(self.aliases.items())}
        out["entries"] = [e.to_dict() for e in self.entries]
        return out

    def to_json(self) -> str:
        return dumps(self.to_dict())


def dumps(data: Any) -> str:
    """The manifest's canonical JSON text: 2-space indent, lists of plain values on one line,
    UTF-8, trailing newline."""
    return _dump(data, 0) + "\n"


def _dump(value: Any, depth: int) -> str:
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dump(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
        return "[\n" + ",\n".join(inner + _dump(v, depth + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _obj(obj: Any, keys: str) -> dict:
    """JSON object of ``obj``'s attributes in the order of ``keys``; a ``?`` key is left out when empty."""
    out = {}
    for key in keys.split():
        name = key.rstrip("?")
        value = getattr(obj, name)
        if not (key.endswith("?") and value in (None, (), [])):
            out[name] = _jsonable(value)
    return out


def _canonical_model(name: str) -> str:
    try:
        return get_model_spec(name).name
    except UnknownModelError as exc:
        raise WeightsNotFoundError(str(exc)) from None


# -- parsing and validation ------------------------------------------------------------------------
class _Problems(list):
    """Collects every validation error (``where: message``) so one run reports them all."""

    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


class _Fields:
    """Typed, strict access to one JSON object; problems are recorded, not raised."""

    def __init__(self, data: Any, where: str, problems: _Problems, required: Tuple[str, ...],
                 optional: Tuple[str, ...]) -> None:
        self.where, self.problems, self.ok = where, problems, isinstance(data, Mapping)
        self.data: Mapping[str, Any] = data if self.ok else {}
        if not self.ok:
            return problems.add(where, f"expected an object, got {_type_name(data)}")
        for key in sorted(set(self.data) - set(required) - set(optional)):
            problems.add(f"{where}.{key}", f"unknown field; expected some of {sorted(required + optional)}")
        for key in (k for k in required if k not in self.data):
            problems.add(f"{where}.{key}", "missing required field")

    def at(self, key: str) -> str:
        return f"{self.where}.{key}"

    def get(self, key: str, ok, what: str, nullable: bool = False) -> Any:
        """The value if ``ok(value)``; ``None`` if absent (or null and ``nullable``); else a problem."""
        value = self.data.get(key)
        if value is None and (nullable or key not in self.data):
            return None
        if not ok(value):
            got = f"{value!r} ({len(value)} characters)" if isinstance(value, str) else repr(value)
            return self.problems.add(self.at(key), f"expected {what}, got {got}")
        return value

    def str(self, key: str, nullable: bool = False) -> Optional[str]:
        return self.get(key, lambda v: isinstance(v, str) and v != "", "a non-empty string", nullable)

    def int(self, key: str, nullable: bool = False, minimum: int = 0) -> Optional[int]:
        return self.get(key, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                        f"an integer >= {minimum}", nullable)

    def number(self, key: str, nullable: bool = False) -> Optional[float]:
        value = self.get(key, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v), "a finite number", nullable)
        return None if value is None else float(value)

    def bool(self, key: str, default: bool = False) -> bool:
        value = self.get(key, lambda v: isinstance(v, bool), "true or false", nullable=True)
        return default if value is None else value

    def hex(self, key: str, pattern: re.Pattern, what: str, nullable: bool = False) -> Optional[str]:
        return self.get(key, lambda v: isinstance(v, str) and pattern.match(v) is not None, what, nullable)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_manifest(data: Any, path: Optional[str] = None) -> Manifest:
    """Validate a loaded manifest object; raise :class:`ManifestError` listing every problem."""
    problems = _Problems()
    where = path or "manifest"
    top = _Fields(data, "manifest", problems, ("schema_version", "entries"), ("aliases", "description"))
    description = top.str("description", nullable=True) if top.ok else None
    if not top.ok:
        raise ManifestError(f"{where}: " + "; ".join(problems))
    version = top.data.get("schema_version")
    if version != SCHEMA_VERSION:
        problems.add("manifest.schema_version", f"expected {SCHEMA_VERSION}, got {version!r}")
    raw_entries = top.data.get("entries", [])
    if not isinstance(raw_entries, list):
        problems.add("manifest.entries", f"expected a list, got {_type_name(raw_entries)}")
        raw_entries = []
    entries: List[WeightsEntry] = []
    for index, raw in enumerate(raw_entries):
        entry = _parse_entry(raw, index, problems)
        if entry is not None:
            entries.append(entry)
    _check_entries(raw_entries, problems)
    aliases = _parse_aliases(top.data.get("aliases", {}), raw_entries, problems)
    if problems:
        count = len(problems)
        raise ManifestError(f"{where}: {count} problem{'s' if count > 1 else ''}:\n  " + "\n  ".join(problems))
    return Manifest(entries=tuple(entries), aliases=aliases, schema_version=SCHEMA_VERSION,
                    description=description, path=path)


def _entry_where(raw: Any, index: int) -> str:
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), str) and isinstance(raw.get("tag"), str):
        return f"entries[{index}] ({raw['model']}.{raw['tag']})"
    return f"entries[{index}]"


_ENTRY_REQUIRED = ("model", "tag", "num_classes", "input_spec", "hub")
_ENTRY_OPTIONAL = ("default", "description", "arch_kwargs", "dataset", "labels", "labels_source", "accuracy",
                   "accuracy_note", "params", "gmacs", "upstream", "license", "license_note", "embedded")


def _parse_entry(raw: Any, index: int, problems: _Problems) -> Optional[WeightsEntry]:
    where = _entry_where(raw, index)
    before = len(problems)
    f = _Fields(raw, where, problems, _ENTRY_REQUIRED, _ENTRY_OPTIONAL)
    if not f.ok:
        return None
    model = f.str("model")
    if model is not None:
        if model not in MODELS:
            problems.add(f.at("model"), f"unknown model {model!r}: not a registered name "
                                        "(video3d_zoo.list_models() lists them)")
        elif MODELS.resolve(model) != model:
            problems.add(f.at("model"), f"{model!r} is an alias; use the registered name {MODELS.resolve(model)!r}")
    tag = f.str("tag")
    if tag is not None and not _TAG_RE.match(tag):
        problems.add(f.at("tag"), f"expected lower-case letters, digits, '_' or '-' (no dots), got {tag!r}")
    num_classes = f.int("num_classes", minimum=1)
    arch_kwargs = f.data.get("arch_kwargs", {})
    if not isinstance(arch_kwargs, Mapping):
        problems.add(f.at("arch_kwargs"), f"expected an object, got {_type_name(arch_kwargs)}")
        arch_kwargs = {}
    for bad in nonfinite_fields(dict(arch_kwargs), f.at("arch_kwargs")):
        problems.add(bad, "expected a finite number, got NaN or infinity")
    input_spec = None
    if "input_spec" in f.data:
        try:
            input_spec = InputSpec.from_dict(f.data["input_spec"])
        except ConfigError as exc:
            problems.add(f.at("input_spec"), str(exc).replace("input_spec: ", "").replace("input_spec.", ""))
    labels = _parse_labels(f, num_classes, problems)
    labels_source = f.str("labels_source", nullable=True)
    if labels is None and "labels" in f.data and labels_source is None:
        problems.add(f.at("labels_source"), "required when labels is null: say where the class names and their "
                                            "order come from")
    dataset = (_parse_dataset(f.data["dataset"], f.at("dataset"), problems)
               if f.data.get("dataset") is not None else None)
    accuracy = _parse_accuracy(f.data.get("accuracy", []), f.at("accuracy"), problems)
    upstream = (_parse_upstream(f.data["upstream"], f.at("upstream"), problems)
                if f.data.get("upstream") is not None else None)
    hub = _parse_hub(f.data["hub"], f.at("hub"), problems) if f.data.get("hub") is not None else None
    embedded = (_parse_embedded(f.data["embedded"], f.at("embedded"), problems)
                if f.data.get("embedded") is not None else None)
    entry_kwargs = dict(
        default=f.bool("default"), description=f.str("description", nullable=True),
        accuracy_note=f.str("accuracy_note", nullable=True), params=f.int("params", nullable=True, minimum=1),
        gmacs=f.number("gmacs", nullable=True), license=f.str("license", nullable=True),
        license_note=f.str("license_note", nullable=True))
    if len(problems) != before or None in (model, tag, num_classes, input_spec):
        return None
    return WeightsEntry(model=model, tag=tag, num_classes=num_classes, input_spec=input_spec,
                        arch_kwargs=dict(arch_kwargs), dataset=dataset, labels=labels, labels_source=labels_source,
                        accuracy=accuracy, upstream=upstream, hub=hub, embedded=embedded, **entry_kwargs)


def _parse_labels(f: _Fields, num_classes: Optional[int], problems: _Problems) -> Optional[Tuple[str, ...]]:
    labels = f.data.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        problems.add(f.at("labels"), "expected null or a list of non-empty strings")
        return None
    if num_classes is not None and len(labels) != num_classes:
        problems.add(f.at("labels"), f"{len(labels)} names for num_classes={num_classes}")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        problems.add(f.at("labels"), f"duplicate class names {dupes[:5]}")
    return tuple(labels)


def _parse_dataset(raw: Any, where: str, problems: _Problems) -> Optional[Dataset]:
    f = _Fields(raw, where, problems, ("name",), ("pretrained_on",))
    if not f.ok:
        return None
    name = f.str("name")
    return Dataset(name, f.str("pretrained_on", nullable=True)) if name else None


def _parse_accuracy(raw: Any, where: str, problems: _Problems) -> Tuple[Accuracy, ...]:
    if not isinstance(raw, list):
        problems.add(where, f"expected a list, got {_type_name(raw)}")
        return ()
    out = []
    for i, item in enumerate(raw):
        f = _Fields(item, f"{where}[{i}]", problems, ("dataset", "metric", "value", "source"),
                    ("level", "split", "crops", "clips", "note"))
        if not f.ok:
            continue
        metric = f.get("metric", lambda v: v in METRICS, f"one of {list(METRICS)}")
        level = f.get("level", lambda v: v in LEVELS, f"one of {list(LEVELS)} or null", nullable=True)
        value = f.get("value", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100,
                      "a percentage in [0, 100]")
        clips = f.get("clips", lambda v: (isinstance(v, int) and not isinstance(v, bool) and v > 0)
                      or (isinstance(v, str) and v != ""), "a positive integer, a description or null", nullable=True)
        kwargs = dict(split=f.str("split", nullable=True), crops=f.int("crops", nullable=True, minimum=1),
                      note=f.str("note", nullable=True), dataset=f.str("dataset"), source=f.str("source"))
        if None not in (metric, value, kwargs["dataset"], kwargs["source"]):
            out.append(Accuracy(metric=metric, value=float(value), level=level, clips=clips, **kwargs))
    return tuple(out)


def _parse_upstream(raw: Any, where: str, problems: _Problems) -> Optional[Upstream]:
    f = _Fields(raw, where, problems, ("release", "file"),
                ("url", "sha256", "sha256_prefix", "layout", "alternate_files", "note"))
    if not f.ok:
        return None
    release, file = f.str("release"), f.str("file")
    sha = f.hex("sha256", _HEX64_RE, "null or 64 lower-case hex digits (sha256)", nullable=True)
    prefix = f.get("sha256_prefix", lambda v: isinstance(v, str) and _HEX_RE.match(v) and 6 <= len(v) <= 64,
                   "6-64 lower-case hex digits", nullable=True)
    if sha is not None and prefix is not None and not sha.startswith(prefix):
        problems.add(f.at("sha256_prefix"), f"{prefix!r} is not a prefix of sha256 {sha!r}")
    layout = f.get("layout", lambda v: v in LAYOUTS, f"one of {list(LAYOUTS)} or null", nullable=True)
    alternates = f.get("alternate_files", lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                       "a list of file names", nullable=True) or []
    if release is None or file is None:
        return None
    return Upstream(release=release, file=file, url=f.str("url", nullable=True), sha256=sha, sha256_prefix=prefix,
                    layout=layout, alternate_files=tuple(alternates), note=f.str("note", nullable=True))


def _parse_hub(raw: Any, where: str, problems: _Problems) -> Optional[HubLocation]:
    f = _Fields(raw, where, problems, ("repo_id", "filename", "revision", "sha256", "size"), ())
    if not f.ok:
        return None
    repo_id = f.get("repo_id", lambda v: isinstance(v, str) and _REPO_ID_RE.match(v) and "--" not in v
                    and ".." not in v, "'org/name'")
    filename = f.get("filename", lambda v: isinstance(v, str) and v and not v.startswith("/") and "\\" not in v
                     and ".." not in v.split("/"), "a relative path inside the repository")
    revision = f.hex("revision", _HEX40_RE, "a commit id: 40 lower-case hex digits (not a branch or tag)")
    sha = f.hex("sha256", _HEX64_RE, "64 lower-case hex digits (sha256 of the file)")
    size = f.int("size", minimum=1)
    if None in (repo_id, filename, revision, sha, size):
        return None
    return HubLocation(repo_id=repo_id, filename=filename, revision=revision, sha256=sha, size=size)


def _parse_embedded(raw: Any, where: str, problems: _Problems) -> Optional[EmbeddedFile]:
    f = _Fields(raw, where, problems, ("path", "sha256", "size"), ())
    if not f.ok:
        return None
    path = f.get("path", lambda v: isinstance(v, str) and v and not v.startswith("/") and "\\" not in v
                 and ".." not in v.split("/"), "a path relative to the video3d_zoo package")
    sha = f.hex("sha256", _HEX64_RE, "64 lower-case hex digits (sha256 of the file)")
    size = f.int("size", minimum=1)
    if None in (path, sha, size):
        return None
    return EmbeddedFile(path=path, sha256=sha, size=size)


def _keyed(raw_entries: List[Any]):
    """``(index, raw)`` of the entries that have string ``model`` and ``tag`` (even if otherwise broken)."""
    return [(i, e) for i, e in enumerate(raw_entries)
            if isinstance(e, Mapping) and isinstance(e.get("model"), str) and isinstance(e.get("tag"), str)]


def _check_entries(raw_entries: List[Any], problems: _Problems) -> None:
    seen: Dict[str, int] = {}
    defaults: Dict[str, str] = {}
    for index, raw in _keyed(raw_entries):
        name, where = f"{raw['model']}.{raw['tag']}", _entry_where(raw, index)
        if name in seen:
            problems.add(f"{where}.tag", f"duplicate {name!r} (also entries[{seen[name]}])")
        seen.setdefault(name, index)
        if raw.get("default") is True and raw["model"] in defaults:
            problems.add(f"{where}.default", f"a second default for {raw['model']} (the first is "
                                             f"{defaults[raw['model']]}); at most one entry per model is default")
        elif raw.get("default") is True:
            defaults[raw["model"]] = name


def _parse_aliases(raw: Any, raw_entries: List[Any], problems: _Problems) -> Dict[str, Dict[str, str]]:
    if not isinstance(raw, Mapping):
        problems.add("manifest.aliases", f"expected an object {{model: {{word: tag}}}}, got {_type_name(raw)}")
        return {}
    tags: Dict[str, set] = {}
    for _, e in _keyed(raw_entries):  # entries with other problems still count: one mistake, one message
        tags.setdefault(e["model"], set()).add(e["tag"])
    out: Dict[str, Dict[str, str]] = {}
    for model, words in raw.items():
        where = f"aliases.{model}"
        if not isinstance(words, Mapping):
            problems.add(where, f"expected an object {{word: tag}}, got {_type_name(words)}")
            continue
        if model not in tags:
            problems.add(where, f"no entry has model {model!r}, so its aliases point nowhere")
            continue
        out[model] = {}
        for word, tag in words.items():
            at = f"{where}.{word}"
            if not isinstance(word, str) or not _TAG_RE.match(word):
                problems.add(at, "an alias word is lower-case letters, digits, '_' or '-'")
            elif word in tags[model]:
                problems.add(at, f"{word!r} is already a tag of {model}; an alias must not shadow a tag")
            elif not isinstance(tag, str) or tag not in tags[model]:
                problems.add(at, f"points to {tag!r}, which is not a tag of {model} "
                                 f"(tags: {sorted(tags[model])})")
            else:
                out[model][word] = tag
    return out


# -- loading ---------------------------------------------------------------------------------------
_CACHE: Dict[Tuple[str, int, int], Manifest] = {}  # per file version; dict operations are atomic


def packaged_manifest_path() -> Path:
    """The manifest copy inside the installed package."""
    from importlib.resources import files

    return Path(str(files("video3d_zoo") / "data" / MANIFEST_NAME))


def manifest_path(path: Union[str, os.PathLike, None] = None) -> Path:
    """Which manifest file is used: ``path``, else ``$VIDEO3D_ZOO_MANIFEST``, else the packaged copy."""
    env = os.environ.get(MANIFEST_ENV)
    return Path(path) if path is not None else Path(env).expanduser() if env else packaged_manifest_path()


def load_manifest(path: Union[str, os.PathLike, None] = None) -> Manifest:
    """Load and validate a manifest (see :func:`manifest_path` for which); cached per file version."""
    target = manifest_path(path)
    origin = ("the path argument" if path is not None
              else f"${MANIFEST_ENV}" if os.environ.get(MANIFEST_ENV) else "the package")
    try:
        stat = target.stat()
    except OSError as exc:
        raise ManifestError(f"{target}: cannot read the weights manifest (from {origin}): {exc}") from exc
    if not stat_module.S_ISREG(stat.st_mode):  # checked before opening: a FIFO would block the read forever
        kind = "a folder" if stat_module.S_ISDIR(stat.st_mode) else "not a regular file (a pipe, socket or device)"
        raise ManifestError(f"{target}: the weights manifest (from {origin}) is {kind}; expected a JSON file "
                            f"such as {MANIFEST_NAME}")
    key = (str(target.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE[key] = parse_manifest(_read_json(target, origin), path=str(target))
    return _CACHE[key]


def _read_json(target: Path, origin: str) -> Any:
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{target}: cannot read the weights manifest (from {origin}): {exc}") from exc
    try:
        return loads_finite(text)
    except ValueError as exc:  # JSONDecodeError, or a NaN / Infinity literal
        raise ManifestError(f"{target}: not valid JSON ({exc})") from exc


def list_pretrained(pattern: str = "*", manifest: Optional[Manifest] = None) -> List[str]:
    """Sorted ``model.tag`` names of every manifest entry matching ``pattern`` (e.g. ``"resnet3d_50.*"``)."""
    return (manifest or load_manifest()).list_pretrained(pattern)
