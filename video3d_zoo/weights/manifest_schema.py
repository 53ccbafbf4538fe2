"""The weights manifest's schema: frozen, validated objects and their JSON form.

:class:`WeightsEntry` is one set of weights (``model.tag``); :class:`Manifest` holds them and
resolves what a user asks for (``pretrained=True``, a tag, an alias word) to one entry.
Parsing and validation live in :mod:`video3d_zoo.weights.manifest_parse`, loading in
:mod:`video3d_zoo.weights.manifest`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..models.config import InputSpec, ModelConfig
from ..errors import UnknownModelError, WeightsNotFoundError
from ..models.registry import get_model_spec

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
    #: the packaged class list ``labels`` came from (``"kinetics400"``), when the manifest names one
    label_set: Optional[str] = None
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
        """The JSON object of this entry (the manifest's own field order); labels taken from a packaged
        list are written as the list's name."""
        out = _obj(self, "model tag default description? arch_kwargs dataset num_classes labels labels_source "
                         "input_spec accuracy accuracy_note? params gmacs upstream license license_note? hub embedded?")
        if self.label_set is not None:
            out["labels"] = self.label_set
        return out


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
        return f"; available: {', '.join(tags)}{alias_text} (name one as {model}.TAG)"

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
