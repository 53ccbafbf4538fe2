"""One way to read a reference to a model or to weights: :func:`parse_model_ref`.

Every entry point reads its reference here, with the same rules, and only then loads anything:
``create_model(NAME, pretrained=...)`` / ``checkpoint_path=``, ``load_model``,
``from_pretrained``, the factory functions, and every command line option that takes a model
(``--model`` / ``--weights`` of ``extract``, ``classify``, ``eval``; the model of ``export``).
In this order:

1. ``hf-hub:ORG/REPO[@REVISION]`` - a Hugging Face Hub repository holding a zoo folder
   (``model.safetensors`` + ``config.json``, as ``save_pretrained`` / ``publish`` write it).  The
   repository id and revision are checked here, before any request
   (:mod:`~video3d_zoo.weights.hub_names`: huggingface_hub's repo-id validator; a revision is a
   branch or tag name by git's ref-name rules or a 40-hex commit, never a path).
2. Text that looks like a path - a separator, a leading ``.`` or ``~``, or one of the
   :data:`CHECKPOINT_SUFFIXES` - is a checkpoint file or folder, also when it names nothing (then
   the error says the file is missing, never "unknown model").  A folder called like a model is
   reached as ``./NAME``.
3. A bare word: what it means depends on the caller (``expect``):

   * ``"name"`` (``load_model``, commands): a registered model or alias, optionally ``NAME.TAG``
     (pretrained weights from the weights manifest; see
     :func:`~video3d_zoo.weights.loading.fetch_converted`); else an existing file or folder; else
     an :class:`~video3d_zoo.errors.UnknownModelError` listing close names.
   * ``"tag"`` (``create_model``'s ``pretrained=``, the model being named already): an existing
     file or folder, else a weights tag or alias word such as ``k400_16f`` or ``kinetics``.
   * ``"path"`` (``from_pretrained``): a checkpoint file or folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, UnknownModelError
from ..models.registry import MODELS, get_model_spec
from .hub_names import EXPECTED_REVISION, repo_id_problem, revision_problem

HF_HUB_PREFIX = "hf-hub:"
HF_HUB_FORM = "hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION"
#: the one list of file suffixes that mark a checkpoint (compared in lower case; ``.pth.tar`` ends in ``.tar``)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors")
_EXPECT = ("name", "tag", "path")


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: ``kind`` is ``"name"``, ``"tag"``, ``"path"`` or ``"hf-hub"``."""

    text: str
    kind: str
    name: Optional[str] = None
    tag: Optional[str] = None
    path: Optional[Path] = None
    repo_id: Optional[str] = None
    revision: Optional[str] = None

    def describe(self) -> str:
        if self.kind == "name":
            return f"{self.name}.{self.tag}" if self.tag else str(self.name)
        if self.kind == "tag":
            return str(self.tag)
        if self.kind == "hf-hub":
            return f"{HF_HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")
        return str(self.path)


def looks_like_path(text: str) -> bool:
    """Text that can only mean a file or folder (see rule 2 of the module docstring)."""
    return (os.sep in text or "/" in text or text.startswith((".", "~"))
            or text.lower().endswith(CHECKPOINT_SUFFIXES))


def _parse_hub(text: str) -> ModelRef:
    repo_id, at, revision = text[len(HF_HUB_PREFIX):].partition("@")
    expected = f"expected {HF_HUB_FORM} (REVISION: {EXPECTED_REVISION})"
    problem = repo_id_problem(repo_id)
    if problem:
        raise ConfigError(f"{text!r}: repository id {repo_id!r} is not valid ({problem}); {expected}")
    if at:
        problem = revision_problem(revision)
        if problem:
            raise ConfigError(f"{text!r}: revision {revision!r} is not valid ({problem}); {expected}")
    return ModelRef(text, "hf-hub", repo_id=repo_id, revision=revision or None)


def parse_model_ref(ref: Any, *, expect: str = "name") -> ModelRef:
    """Classify ``ref`` (see the module docstring) without loading anything or sending a request.

    ``expect`` says what a bare word is: ``"name"`` (a registered model), ``"tag"`` (weights of a
    model already named) or ``"path"``.  Bad references raise
    :class:`~video3d_zoo.errors.ConfigError` (or :class:`~video3d_zoo.errors.UnknownModelError`).
    """
    if expect not in _EXPECT:
        raise ValueError(f"expect must be one of {_EXPECT}, got {expect!r}")
    if isinstance(ref, os.PathLike):
        return ModelRef(os.fspath(ref), "path", path=Path(ref))
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"a model reference must be a non-empty string or path, got {ref!r}")
    text = ref.strip()
    if text.startswith(HF_HUB_PREFIX):
        return _parse_hub(text)
    path = Path(text).expanduser()
    if looks_like_path(text) or expect == "path":
        return ModelRef(text, "path", path=path)
    base, _, tag = text.partition(".")
    if expect == "name" and base in MODELS:
        return ModelRef(text, "name", name=get_model_spec(base).name, tag=tag or None)
    if path.exists():
        return ModelRef(text, "path", path=path)
    if expect == "tag":
        return ModelRef(text, "tag", tag=text)
    MODELS.resolve(base)  # raises UnknownModelError with similar names
    raise UnknownModelError(f"unknown model {text!r}")  # pragma: no cover (resolve raised)
