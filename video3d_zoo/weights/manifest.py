"""The weights manifest: which pretrained weights exist, what they are, and where they live.

``weights_manifest.json`` at the repository root is the one source of truth; the package reaches
it through ``video3d_zoo/data/weights_manifest.json``, a link that a wheel or sdist build turns
into a copy of the file.  This module turns it into frozen
objects, validates it (every error names the entry and the field), resolves what a user asks
for (``pretrained=True``, a tag, an alias word) to one :class:`WeightsEntry`, and fetches the
converted checkpoint through :mod:`video3d_zoo.weights.hub`.

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

import dataclasses
import os
import stat as stat_module
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..models.config import loads_finite
from ..errors import ManifestError
from .manifest_parse import parse_manifest
from .manifest_schema import (SCHEMA_VERSION, Accuracy, Dataset, EmbeddedFile, HubLocation, Manifest, Upstream,
                              WeightsEntry, dumps)

MANIFEST_ENV = "VIDEO3D_ZOO_MANIFEST"
MANIFEST_NAME = "weights_manifest.json"
PACKAGED_MANIFEST_LABEL = "the weights manifest shipped with video3d_zoo"

__all__ = ["Accuracy", "Dataset", "EmbeddedFile", "HubLocation", "MANIFEST_ENV", "MANIFEST_NAME", "Manifest",
           "SCHEMA_VERSION", "Upstream", "WeightsEntry", "dumps", "list_pretrained", "load_manifest", "manifest_path",
           "packaged_manifest_path", "parse_manifest"]


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
        manifest = parse_manifest(_read_json(target, origin), path=str(target))
        # messages name a manifest the user chose by its path, the package's copy by what it is
        _CACHE[key] = manifest if path is not None or os.environ.get(MANIFEST_ENV) else \
            dataclasses.replace(manifest, path=PACKAGED_MANIFEST_LABEL)
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


def list_pretrained(pattern: str = "*", manifest: Optional[Manifest] = None, sources: bool = False) -> List[Any]:
    """Sorted ``model.tag`` names of every manifest entry matching ``pattern`` (e.g. ``"resnet3d_50.*"``).

    ``sources=True`` returns :class:`~video3d_zoo.weights.installed.WeightsSources` instead: where each entry's
    weights can come from now (``.available``: embedded, installed, cached, hub or original only).
    """
    if sources:
        from .installed import list_sources

        return list_sources(pattern, manifest or load_manifest())
    return (manifest or load_manifest()).list_pretrained(pattern)
