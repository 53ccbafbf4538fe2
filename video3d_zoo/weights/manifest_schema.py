"""The weights manifest's schema: frozen, validated objects and their JSON form.

:class:`WeightsEntry` is one set of weights (``model.tag``); :class:`Manifest` holds them and
resolves what a user asks for (``pretrained=True``, a tag, an alias word) to one entry.

Each JSON field is written once, as a dataclass field whose metadata (a :class:`JsonField`) says what
a valid value is; the validator (:mod:`video3d_zoo.weights.manifest_parse`) and :meth:`Record.to_dict`
walk ``dataclasses.fields()``, so adding a field here is the whole change.  The fields are in the
JSON file's order; Python 3.9 has no keyword-only dataclass fields, so a required field carries a
placeholder default of ``None`` that :meth:`Record.__post_init__` refuses.  Loading lives in
:mod:`video3d_zoo.weights.manifest`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ..errors import UnknownModelError, WeightsNotFoundError
from ..models.config import InputSpec, ModelConfig, as_tuples
from ..models.layout import LAYOUTS
from ..models.registry import MODELS, get_model_spec

SCHEMA_VERSION = 1

TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_HEX40_RE = re.compile(r"^[0-9a-f]{40}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
# where an original checkpoint can be fetched from: a web address with a host (not file:, ftp:, a path)
_WEB_URL_RE = re.compile(r"^https?://[^\s/?#]+(?:[/?#]\S*)?$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
METRICS = ("top1", "top5", "mean_top1_top5")
LEVELS = ("clip", "video")


# -- what one field accepts --------------------------------------------------------------------------
@dataclass(frozen=True)
class JsonField:
    """How one JSON field is read, checked and written (the metadata of a record's dataclass field)."""

    #: what a valid value is, for the message ``expected <what>, got <value>``
    what: str
    ok: Callable[[Any], bool] = lambda value: True
    #: the key must be present (``hub``: present, and null until published)
    required: bool = False
    #: null is a valid value (read as the field's default)
    nullable: bool = True
    #: left out of the JSON form when None or empty
    omit_empty: bool = False
    #: JSON value -> attribute value; may raise ConfigError, whose text becomes the problem
    convert: Callable[[Any], Any] = lambda value: value
    #: a record class: the value is one such object (``many``: a list of them), read by the same rules
    record: Optional[type] = None
    many: bool = False
    #: a further check of a well-typed value: ``(sub-path or "", problem)`` pairs
    problems: Callable[[Any], Iterator[Tuple[str, str]]] = lambda value: iter(())


SPEC = "manifest"  # the metadata key of a record field's :class:`JsonField`


def _json_field(spec: JsonField, default: Any = None, factory: Optional[Callable[[], Any]] = None):
    if factory is not None:
        return field(default_factory=factory, metadata={SPEC: spec})
    return field(default=default, metadata={SPEC: spec})


def text(required: bool = False, omit_empty: bool = False):
    """A non-empty string (required and never null, or optional and nullable)."""
    return _json_field(JsonField("a non-empty string", lambda v: isinstance(v, str) and v != "", required=required,
                             nullable=not required, omit_empty=omit_empty))


def integer(minimum: int, required: bool = False):
    return _json_field(JsonField(f"an integer >= {minimum}", lambda v: _is_int(v) and v >= minimum,
                             required=required, nullable=not required))


def number():
    return _json_field(JsonField("a finite number", lambda v: _is_number(v) and math.isfinite(v), convert=float))


def pattern(regex: re.Pattern, what: str, required: bool = False):
    return _json_field(JsonField(what, lambda v: isinstance(v, str) and regex.match(v) is not None,
                             required=required, nullable=not required))


def one_of(choices: Tuple[str, ...], required: bool = False):
    return _json_field(JsonField(f"one of {list(choices)}" + ("" if required else " or null"), lambda v: v in choices,
                             required=required, nullable=not required))


def relative_path(what: str):
    return _json_field(JsonField(what, lambda v: isinstance(v, str) and v != "" and not v.startswith("/")
                             and "\\" not in v and ".." not in v.split("/"), required=True, nullable=False))


def record(cls: type, required: bool = False, omit_empty: bool = False):
    """An object read by ``cls``'s own fields, or null."""
    return _json_field(JsonField("an object", required=required, omit_empty=omit_empty, record=cls))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Record:
    """A manifest object: its JSON fields are its dataclass fields carrying a :class:`JsonField`."""

    def __post_init__(self) -> None:
        for name, spec in json_fields(type(self)):
            if spec.required and not spec.nullable and getattr(self, name) is None:
                raise TypeError(f"{type(self).__name__}() needs {name}")

    def to_dict(self) -> dict:
        """The JSON object, in field order; an ``omit_empty`` field is left out when empty."""
        out = {}
        for name, spec in json_fields(type(self)):
            value = getattr(self, name)
            if not (spec.omit_empty and value in (None, (), [])):
                out[name] = _jsonable(value)
        return out


def json_fields(cls: type) -> List[Tuple[str, JsonField]]:
    """``(name, JsonField)`` of each JSON field of a record class, in order."""
    return [(f.name, f.metadata[SPEC]) for f in dataclasses.fields(cls) if SPEC in f.metadata]


def _percentage(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 100


def _clips(value: Any) -> bool:
    return (_is_int(value) and value > 0) or (isinstance(value, str) and value != "")


def _file_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) and x for x in value)


def _repo_id(value: Any) -> bool:
    return isinstance(value, str) and _REPO_ID_RE.match(value) is not None and "--" not in value \
        and ".." not in value


def _registered_model(model: str) -> Iterator[Tuple[str, str]]:
    if model not in MODELS:
        yield "", f"unknown model {model!r}: not a registered name (video3d_zoo.list_models() lists them)"
    elif MODELS.resolve(model) != model:
        yield "", f"{model!r} is an alias; use the registered name {MODELS.resolve(model)!r}"


def _finite_kwargs(kwargs: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    from ..models.config import nonfinite_fields

    for bad in nonfinite_fields(dict(kwargs), ""):
        yield bad.lstrip("."), "expected a finite number, got NaN or infinity"


# -- the frozen objects ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HubLocation(Record):
    """Where the converted file is published, pinned to one commit, with its checksum."""

    repo_id: str = _json_field(JsonField("'org/name'", _repo_id, required=True, nullable=False))
    filename: str = relative_path("a relative path inside the repository")
    revision: str = pattern(_HEX40_RE, "a commit id: 40 lower-case hex digits (not a branch or tag)", required=True)
    sha256: str = pattern(_HEX64_RE, "64 lower-case hex digits (sha256 of the file)", required=True)
    size: int = integer(1, required=True)


@dataclass(frozen=True)
class EmbeddedFile(Record):
    """A converted file shipped inside the package (``path`` relative to ``video3d_zoo/``)."""

    path: str = relative_path("a path relative to the video3d_zoo package")
    sha256: str = pattern(_HEX64_RE, "64 lower-case hex digits (sha256 of the file)", required=True)
    size: int = integer(1, required=True)


@dataclass(frozen=True)
class Upstream(Record):
    """The original checkpoint the converted file was made from."""

    release: str = text(required=True)
    file: str = text(required=True)
    url: Optional[str] = pattern(_WEB_URL_RE, "null or an http:// or https:// address with a host")
    sha256: Optional[str] = pattern(_HEX64_RE, "null or 64 lower-case hex digits (sha256)")
    sha256_prefix: Optional[str] = _json_field(JsonField(
        "6-64 lower-case hex digits", lambda v: isinstance(v, str) and _HEX_RE.match(v) is not None
        and 6 <= len(v) <= 64, omit_empty=True))
    layout: Optional[str] = one_of(LAYOUTS)
    alternate_files: Tuple[str, ...] = _json_field(JsonField("a list of file names", _file_names, omit_empty=True,
                                                         convert=tuple), factory=tuple)
    note: Optional[str] = text(omit_empty=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sha256 and self.sha256_prefix and not self.sha256.startswith(self.sha256_prefix):
            raise ValueError(f"sha256_prefix: {self.sha256_prefix!r} is not a prefix of sha256 {self.sha256!r}")


@dataclass(frozen=True)
class Accuracy(Record):
    """One reported number with its protocol (metric, clip/video level, crops x clips, source)."""

    dataset: str = text(required=True)
    split: Optional[str] = text()
    metric: str = one_of(METRICS, required=True)
    value: float = _json_field(JsonField("a percentage in [0, 100]", _percentage, required=True, nullable=False,
                                     convert=float))
    level: Optional[str] = one_of(LEVELS)
    crops: Optional[int] = integer(1)
    clips: Union[int, str, None] = _json_field(JsonField("a positive integer, a description or null", _clips))
    source: str = text(required=True)
    note: Optional[str] = text()


@dataclass(frozen=True)
class Dataset(Record):
    name: str = text(required=True)
    pretrained_on: Optional[str] = text()


@dataclass(frozen=True)
class WeightsEntry(Record):
    """One set of pretrained weights (``model.tag``)."""

    model: str = _json_field(JsonField("a non-empty string", lambda v: isinstance(v, str) and v != "", required=True,
                                   nullable=False, problems=_registered_model))
    tag: str = pattern(TAG_RE, "lower-case letters, digits, '_' or '-' (no dots)", required=True)
    default: bool = _json_field(JsonField("true or false", lambda v: isinstance(v, bool)), default=False)
    description: Optional[str] = text(omit_empty=True)
    arch_kwargs: Mapping[str, Any] = _json_field(JsonField("an object", lambda v: isinstance(v, Mapping),
                                                           nullable=False, convert=as_tuples, problems=_finite_kwargs),
                                                 factory=dict)
    dataset: Optional[Dataset] = record(Dataset)
    num_classes: int = integer(1, required=True)
    #: null, a list of class names, or the name of a packaged list (resolved by the parser, which
    #: also checks the count against ``num_classes``)
    labels: Optional[Tuple[str, ...]] = _json_field(JsonField(
        "null, the name of a packaged label set or a list of non-empty strings",
        lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) and x for x in v))))
    labels_source: Optional[str] = text()
    input_spec: InputSpec = _json_field(JsonField("an object", required=True, nullable=False,
                                                  convert=InputSpec.from_dict))
    accuracy: Tuple[Accuracy, ...] = _json_field(JsonField("a list", lambda v: isinstance(v, list), nullable=False,
                                                       record=Accuracy, many=True), factory=tuple)
    accuracy_note: Optional[str] = text(omit_empty=True)
    params: Optional[int] = integer(1)
    gmacs: Optional[float] = number()
    upstream: Optional[Upstream] = record(Upstream)
    license: Optional[str] = text()
    license_note: Optional[str] = text(omit_empty=True)
    hub: Optional[HubLocation] = record(HubLocation, required=True)
    embedded: Optional[EmbeddedFile] = record(EmbeddedFile, omit_empty=True)
    #: the packaged class list ``labels`` came from (``"kinetics400"``); not a field of its own in
    #: the file, where ``labels`` holds the name
    label_set: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def published(self) -> bool:
        return self.hub is not None

    def metadata(self) -> Dict[str, Any]:
        """What this entry adds to ``model.pretrained_cfg``: licence, dataset, where the file lives."""
        return {
            "weights": self.name,
            "license": self.license,
            "license_note": self.license_note,
            "dataset": self.dataset.name if self.dataset else None,
            "pretrained_on": self.dataset.pretrained_on if self.dataset else None,
            "description": self.description,
            "hf_hub_id": self.hub.repo_id if self.hub else None,
            "hf_hub_revision": self.hub.revision if self.hub else None,
            "hf_hub_filename": self.hub.filename if self.hub else None,
            "url": self.upstream.url if self.upstream else None,
            "upstream_release": self.upstream.release if self.upstream else None,
        }

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
        """The JSON object of this entry; labels taken from a packaged list are written as the list's name."""
        out = super().to_dict()
        if self.label_set is not None:
            out["labels"] = self.label_set
        return out


@dataclass(frozen=True)
class Manifest(Record):
    """A validated manifest: entries plus the explicit alias words of each model."""

    schema_version: int = _json_field(JsonField(str(SCHEMA_VERSION), lambda v: v == SCHEMA_VERSION, required=True,
                                                nullable=False), default=SCHEMA_VERSION)
    description: Optional[str] = text(omit_empty=True)
    #: ``{model: {word: tag}}``; checked against the entries by the parser
    aliases: Mapping[str, Mapping[str, str]] = _json_field(JsonField(
        "an object {model: {word: tag}}", lambda v: isinstance(v, Mapping), nullable=False), factory=dict)
    entries: Tuple[WeightsEntry, ...] = _json_field(JsonField("a list", lambda v: isinstance(v, list), required=True,
                                                              nullable=False, record=WeightsEntry, many=True),
                                                    factory=tuple)
    #: the file it was read from (not part of the JSON)
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
        return f"; available: {', '.join(tags)}{alias_text} (name one as {model}.TAG)"

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["aliases"] = {m: dict(sorted(a.items())) for m, a in sorted(self.aliases.items())}
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


def _canonical_model(name: str) -> str:
    try:
        return get_model_spec(name).name
    except UnknownModelError as exc:
        raise WeightsNotFoundError(str(exc)) from None
