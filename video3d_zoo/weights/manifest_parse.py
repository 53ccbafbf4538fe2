"""Parsing and validation of the weights manifest: every problem names the entry and the field.

:func:`parse_manifest` collects all problems of a file before raising one
:class:`~video3d_zoo.errors.ManifestError` that lists them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..models.config import InputSpec, nonfinite_fields
from ..errors import ConfigError, ManifestError
from .labels import LABEL_SETS, label_set_names, load_label_set
from .manifest_schema import (_HEX40_RE, _HEX64_RE, _HEX_RE, _REPO_ID_RE, _TAG_RE, LAYOUTS, LEVELS, METRICS,
                              SCHEMA_VERSION, Accuracy, Dataset, EmbeddedFile, HubLocation, Manifest, Upstream,
                              WeightsEntry)
from ..models.registry import MODELS

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
    labels, label_set = _parse_labels(f, num_classes, problems)
    labels_source = f.str("labels_source", nullable=True)
    if labels is None and "labels" in f.data and labels_source is None:
        problems.add(f.at("labels_source"), "required when labels is null: say where the class names and their "
                                            "order come from")
    elif label_set is not None and labels_source is None:
        problems.add(f.at("labels_source"), f"required with the label set {label_set!r}: say what was verified "
                                            "about its fit to these weights")
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
                        label_set=label_set,
                        accuracy=accuracy, upstream=upstream, hub=hub, embedded=embedded, **entry_kwargs)


def _parse_labels(f: _Fields, num_classes: Optional[int],
                  problems: _Problems) -> Tuple[Optional[Tuple[str, ...]], Optional[str]]:
    """``(labels, label set name)``: ``labels`` is null, a list of names, or the name of a packaged list
    (:mod:`video3d_zoo.weights.labels`), which is resolved here."""
    labels = f.data.get("labels")
    if labels is None:
        return None, None
    if isinstance(labels, str):
        if labels not in LABEL_SETS:
            problems.add(f.at("labels"), f"unknown label set {labels!r}; expected null, a list of class names or "
                                         f"one of {list(label_set_names())}")
            return None, None
        names = load_label_set(labels)
        if num_classes is not None and len(names) != num_classes:
            problems.add(f.at("labels"), f"label set {labels!r} has {len(names)} names, but num_classes={num_classes}")
            return None, None
        return names, labels
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        problems.add(f.at("labels"), "expected null, the name of a packaged label set or a list of non-empty strings")
        return None, None
    if num_classes is not None and len(labels) != num_classes:
        problems.add(f.at("labels"), f"{len(labels)} names for num_classes={num_classes}")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        problems.add(f.at("labels"), f"duplicate class names {dupes[:5]}")
    return tuple(labels), None


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
