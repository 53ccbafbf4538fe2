"""Parsing and validation of the weights manifest: every problem names the entry and the field.

The rules come from the schema's dataclasses (:mod:`video3d_zoo.weights.manifest_schema`): each
record is read by walking its fields, so a field is named once, where it is declared.  What one
field cannot say alone (labels against ``num_classes``, duplicate tags, aliases against the
entries) is checked here.  :func:`parse_manifest` collects all problems of a file before raising
one :class:`~video3d_zoo.errors.ManifestError` that lists them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..errors import ConfigError, ManifestError
from .labels import LABEL_SETS, label_set_names, load_label_set
from .manifest_schema import TAG_RE, JsonField, Manifest, WeightsEntry, json_fields

_INVALID = object()  # a value that was reported as a problem


class _Problems(list):
    """Collects every validation error (``where: message``) so one run reports them all."""

    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_manifest(data: Any, path: Optional[str] = None) -> Manifest:
    """Validate a loaded manifest object; raise :class:`ManifestError` listing every problem."""
    problems = _Problems()
    where = path or "manifest"
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where}: manifest: expected an object, got {_type_name(data)}")
    _check_keys(Manifest, data, "manifest", problems)
    values = _read_fields(Manifest, data, "manifest", problems, skip=("entries", "aliases"))
    raw_entries = data.get("entries", [])
    if not isinstance(raw_entries, list):
        problems.add("manifest.entries", f"expected a list, got {_type_name(raw_entries)}")
        raw_entries = []
    entries = [_read_record(WeightsEntry, raw, _entry_where(raw, index), problems)
               for index, raw in enumerate(raw_entries)]
    _check_entries(raw_entries, problems)
    aliases = _parse_aliases(data.get("aliases", {}), raw_entries, problems)
    if problems:
        count = len(problems)
        raise ManifestError(f"{where}: {count} problem{'s' if count > 1 else ''}:\n  " + "\n  ".join(problems))
    return Manifest(entries=tuple(entries), aliases=aliases, path=path, **values)


def _entry_where(raw: Any, index: int) -> str:
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), str) and isinstance(raw.get("tag"), str):
        return f"entries[{index}] ({raw['model']}.{raw['tag']})"
    return f"entries[{index}]"


# -- reading a record by its fields --------------------------------------------------------------------
def _check_keys(cls: type, raw: Mapping[str, Any], where: str, problems: _Problems) -> None:
    """Unknown fields and missing required ones, named by the record's own field list."""
    specs = json_fields(cls)
    names = sorted(name for name, _ in specs)
    for key in sorted(set(raw) - set(names)):
        problems.add(f"{where}.{key}", f"unknown field; expected some of {names}")
    for name, spec in specs:
        if spec.required and name not in raw:
            problems.add(f"{where}.{name}", "missing required field")


def _read_fields(cls: type, raw: Mapping[str, Any], where: str, problems: _Problems,
                 skip: tuple = ()) -> Dict[str, Any]:
    """The attribute values of the fields present and valid (null or absent: the field's default)."""
    values = {}
    for name, spec in json_fields(cls):
        if name in raw and name not in skip:
            value = _read_value(spec, name, raw[name], f"{where}.{name}", problems)
            if value is not None and value is not _INVALID:
                values[name] = value
    return values


def _read_record(cls: type, raw: Any, where: str, problems: _Problems) -> Any:
    """One record (``None`` after recording its problems)."""
    if not isinstance(raw, Mapping):
        problems.add(where, f"expected an object, got {_type_name(raw)}")
        return None
    before = len(problems)
    _check_keys(cls, raw, where, problems)
    values = _read_fields(cls, raw, where, problems)
    if cls is WeightsEntry:
        _read_labels(values, raw, where, problems)
    if len(problems) != before:
        return None
    try:
        return cls(**values)
    except ValueError as exc:  # a rule between two fields (the record's __post_init__: "field: message")
        name, _, message = str(exc).partition(": ")
        problems.add(f"{where}.{name}", message)
        return None


def _read_value(spec: JsonField, name: str, value: Any, at: str, problems: _Problems) -> Any:
    if value is None and spec.nullable:
        return None
    if value is None or not spec.ok(value):
        got = f"{value!r} ({len(value)} characters)" if isinstance(value, str) else repr(value)
        problems.add(at, f"expected {spec.what}, got {got}")
        return _INVALID
    if spec.many:
        items = [_read_record(spec.record, item, f"{at}[{i}]", problems) for i, item in enumerate(value)]
        return tuple(items)
    if spec.record is not None:
        return _read_record(spec.record, value, at, problems)
    for sub, message in spec.problems(value):
        problems.add(f"{at}.{sub}" if sub else at, message)
    try:
        return spec.convert(value)
    except ConfigError as exc:  # InputSpec.from_dict names the field itself; the path says it already
        problems.add(at, str(exc).replace(f"{name}: ", "").replace(f"{name}.", ""))
        return _INVALID


def _read_labels(values: Dict[str, Any], raw: Mapping[str, Any], where: str, problems: _Problems) -> None:
    """``labels`` against ``num_classes``; a packaged list's name becomes its names (and ``label_set``)."""
    labels, num_classes = values.get("labels"), values.get("num_classes")
    at = f"{where}.labels"
    if isinstance(labels, str):
        if labels not in LABEL_SETS:
            problems.add(at, f"unknown label set {labels!r}; expected null, a list of class names or "
                             f"one of {list(label_set_names())}")
            return
        names = load_label_set(labels)
        if num_classes is not None and len(names) != num_classes:
            problems.add(at, f"label set {labels!r} has {len(names)} names, but num_classes={num_classes}")
            return
        values["labels"], values["label_set"] = names, labels
        if values.get("labels_source") is None:
            problems.add(f"{where}.labels_source", f"required with the label set {labels!r}: say what was verified "
                                                   "about its fit to these weights")
    elif isinstance(labels, list):
        if num_classes is not None and len(labels) != num_classes:
            problems.add(at, f"{len(labels)} names for num_classes={num_classes}")
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            problems.add(at, f"duplicate class names {dupes[:5]}")
        values["labels"] = tuple(labels)
    elif "labels" in raw and raw["labels"] is None and values.get("labels_source") is None:
        problems.add(f"{where}.labels_source", "required when labels is null: say where the class names and their "
                                               "order come from")


# -- rules across entries ----------------------------------------------------------------------------
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
            if not isinstance(word, str) or not TAG_RE.match(word):
                problems.add(at, "an alias word is lower-case letters, digits, '_' or '-'")
            elif word in tags[model]:
                problems.add(at, f"{word!r} is already a tag of {model}; an alias must not shadow a tag")
            elif not isinstance(tag, str) or tag not in tags[model]:
                problems.add(at, f"points to {tag!r}, which is not a tag of {model} "
                                 f"(tags: {sorted(tags[model])})")
            else:
                out[model][word] = tag
    return out
