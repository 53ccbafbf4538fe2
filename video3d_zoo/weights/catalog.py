"""Weights the way torchvision and timm users reach for them: :func:`get_weights` and ``list_models(pretrained=True)``.

``video3d_zoo.get_weights("r3d_18.k400_16f")`` (or ``get_weights(model)``) returns a
:class:`Weights`: ``.meta`` holds what the weights manifest knows - the categories, every
accuracy record with its protocol, parameters, GMACs, input spec, licence and source - and
``.transforms()`` the callable that turns decoded uint8 frames (either channel order) into the
clip these weights expect, with the same preprocessing the extraction and classification jobs
use (:class:`~video3d_zoo.io.frame_layout.ClipTransform`).  ``.get_model()`` builds the model
with these weights.

:func:`list_models` is the registry's listing with timm's ``pretrained`` switch: the names that
have weights, as ``model.tag`` (timm's ``include_tags``, on by default with ``pretrained``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..errors import ConfigError
from ..models.config import ModelConfig
from ..models.registry import list_models as _registered


@dataclass(frozen=True)
class Weights:
    """One set of weights: ``name`` (``model.tag``), the config they load with, and their manifest
    entry (None for weights the manifest does not know: a fine-tuned or converted file)."""

    name: str
    config: ModelConfig
    entry: Any = None

    @property
    def model(self) -> str:
        return self.config.architecture

    @property
    def tag(self) -> Optional[str]:
        return self.config.tag

    @property
    def meta(self) -> Dict[str, Any]:
        """torchvision's ``weights.meta``: categories, accuracy (with protocol), params, GMACs, input spec,
        licence, source."""
        entry, config = self.entry, self.config
        meta: Dict[str, Any] = {
            "name": self.name, "model": self.model, "tag": self.tag, "num_classes": config.num_classes,
            "categories": list(config.labels) if config.labels else None,
            "input_spec": config.input_spec.to_dict(), "min_temporal_size": config.input_spec.frames,
            "accuracy": [], "params": None, "gmacs": None, "dataset": None, "license": None,
            "source": {"config": config.source}}
        if entry is not None:
            meta.update(
                accuracy=[a.to_dict() for a in entry.accuracy], accuracy_note=entry.accuracy_note,
                params=entry.params, gmacs=entry.gmacs, license=entry.license, license_note=entry.license_note,
                dataset=entry.dataset.to_dict() if entry.dataset else None, description=entry.description,
                labels_source=entry.labels_source,
                source={"upstream": entry.upstream.to_dict() if entry.upstream else None,
                        "hub": entry.hub.to_dict() if entry.hub else None,
                        "embedded": entry.embedded.to_dict() if entry.embedded else None})
        return meta

    def transforms(self, **overrides: Any):
        """Decoded uint8 frames (``T x H x W x C`` or ``T x C x H x W``) -> float ``C x T x crop x crop``.

        ``overrides`` change fields of the input spec (``crop_size=...``) as ClipPreprocessor does."""
        from ..io.frame_layout import ClipTransform

        return ClipTransform(self.config.input_spec, **overrides)

    def get_model(self, **kwargs: Any):
        """The model with these weights (``create_model(model, pretrained=tag, **kwargs)``)."""
        from ..api import create_model

        if self.entry is None:
            raise ConfigError(f"{self.name}: not weights of the manifest; load the file they came from "
                              "with video3d_zoo.from_pretrained(PATH)")
        return create_model(self.model, pretrained=self.tag, **kwargs)

    def __repr__(self) -> str:
        return f"Weights({self.name!r})"

    def __hash__(self) -> int:  # usable as a dict key, as torchvision's weights enums are
        return hash((self.name, self.config.num_classes))


def get_weights(ref: Any, manifest=None) -> Weights:
    """The :class:`Weights` named by ``"model.tag"`` (or ``"model"``: its default weights), a manifest
    entry, or a loaded model (its ``model.config``)."""
    from .manifest import WeightsEntry, load_manifest

    if isinstance(ref, WeightsEntry):
        return Weights(ref.name, ref.to_config(), ref)
    if isinstance(ref, str):
        from ..api import split_name

        model, tag = split_name(ref)
        entry = (manifest or load_manifest()).resolve(model, tag or True)
        return Weights(entry.name, entry.to_config(), entry)
    config = getattr(ref, "config", None)
    if not isinstance(config, ModelConfig):
        raise ConfigError(f"get_weights takes 'model.tag', a manifest entry or a model built by video3d_zoo; "
                          f"got {type(ref).__name__}")
    return _weights_of(config, manifest or load_manifest())


def _weights_of(config: ModelConfig, manifest) -> Weights:
    entry = None
    if config.tag:
        entry = next((e for e in manifest.entries if e.model == config.architecture and e.tag == config.tag), None)
    if entry is not None and entry.num_classes != config.num_classes:
        entry = None  # a new head: the entry's categories and accuracy are not this model's
    name = entry.name if entry is not None else (f"{config.architecture}.{config.tag}" if config.tag
                                                 else config.architecture)
    return Weights(name, config, entry)


def list_models(pattern: str = "*", pretrained: bool = False, include_aliases: bool = False,
                include_tags: Optional[bool] = None, manifest=None) -> List[str]:
    """Sorted model names matching a shell-style ``pattern``; ``pretrained=True``: only those with weights
    in the manifest, as ``model.tag`` (``include_tags=False``: bare model names), as timm lists them.

    With tags, ``pattern`` matches the ``model.tag`` name or the model name (``"resnet3d_50"`` lists
    every ``resnet3d_50.*``)."""
    if not pretrained:
        if include_tags:
            raise ConfigError("include_tags lists the tags of pretrained weights; pass pretrained=True with it")
        return _registered(pattern, include_aliases=include_aliases)
    from .manifest import load_manifest

    entries = (manifest or load_manifest()).entries
    if include_tags is False:
        return sorted({e.model for e in entries if fnmatch.fnmatchcase(e.model, pattern)})
    return sorted(e.name for e in entries
                  if fnmatch.fnmatchcase(e.name, pattern) or fnmatch.fnmatchcase(e.model, pattern))


__all__ = ["Weights", "get_weights", "list_models"]
