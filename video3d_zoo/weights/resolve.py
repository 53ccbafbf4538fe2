"""One way to name a model: :func:`parse_model_ref` and :func:`load_model`.

Every command line option that takes a model (``--model`` of ``extract``, ``classify``,
``eval``; the model argument of ``export``) and the Python entry points that take a
reference (``load_model``, ``from_pretrained("hf-hub:...")``, ``create_model("hf-hub:...")``)
read it with the same rules, in this order:

1. ``hf-hub:ORG/REPO[@REVISION]`` - a Hugging Face Hub repository holding a zoo folder
   (``model.safetensors`` + ``config.json``, as ``save_pretrained`` / ``publish`` write it),
   downloaded through huggingface_hub's cache (offline aware) and checked against the sha256
   the Hub reports for it.
2. ``NAME`` or ``NAME.TAG`` where ``NAME`` is a registered model or alias (``list_models``)
   and the text holds no path separator - pretrained weights from the weights manifest: the
   model's default weights, or those of ``TAG`` (a tag such as ``k400_16f`` or an alias word
   such as ``kinetics``), found embedded in the package, installed by ``video3d-zoo import``, or
   on the Hub, in that order (:func:`~video3d_zoo.weights.loading.fetch_converted`).  With ``pretrained=False`` a bare ``NAME`` gives the architecture
   with random weights (a ``TAG`` then is an error: it names weights).
3. A path to a checkpoint file or folder (a zoo folder, a ``.safetensors`` file, an original
   2017/2020 3D-ResNets-PyTorch or torchvision ``.pth``).  Text that looks like a path
   (a separator, a leading ``.`` or ``~``, a checkpoint suffix) but names nothing is an error,
   never a fallback to a registered name.  A folder that happens to be called like a model
   is reached as ``./NAME``.
4. Anything else is an :class:`~video3d_zoo.errors.UnknownModelError` listing close names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from torch import nn

from ..errors import ConfigError, UnknownModelError
from ..models.registry import MODELS, get_model_spec

HF_HUB_PREFIX = "hf-hub:"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar", ".safetensors", ".bin", ".ckpt")
HUB_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: ``kind`` is ``"name"``, ``"path"`` or ``"hf-hub"``."""

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
        if self.kind == "hf-hub":
            return f"{HF_HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")
        return str(self.path)


def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or text.startswith((".", "~"))
            or text.lower().endswith(CHECKPOINT_SUFFIXES))


def _parse_hub(text: str) -> ModelRef:
    body = text[len(HF_HUB_PREFIX):]
    repo_id, _, revision = body.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id) or (_ and not revision):
        raise ConfigError(f"{text!r}: expected hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION")
    return ModelRef(text, "hf-hub", repo_id=repo_id, revision=revision or None)


def parse_model_ref(ref: Any) -> ModelRef:
    """Classify ``ref`` (see the module docstring) without loading anything."""
    if isinstance(ref, os.PathLike):
        return ModelRef(os.fspath(ref), "path", path=Path(ref))
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"a model reference must be a non-empty string or path, got {ref!r}")
    text = ref.strip()
    if text.startswith(HF_HUB_PREFIX):
        return _parse_hub(text)
    base, _, tag = text.partition(".")
    if not _looks_like_path(text) and base in MODELS:
        return ModelRef(text, "name", name=get_model_spec(base).name, tag=tag or None)
    path = Path(text).expanduser()
    if path.exists() or _looks_like_path(text):
        return ModelRef(text, "path", path=path)
    MODELS.resolve(base)  # raises UnknownModelError with similar names
    raise UnknownModelError(f"unknown model {text!r}")  # pragma: no cover (resolve raised)


def load_model(ref: Any, *, pretrained: bool = True, num_classes: Optional[int] = None,
               in_chans: Optional[int] = None, allow_nonfinite: bool = False, features_only: bool = False,
               out_indices=None, **kwargs: Any) -> nn.Module:
    """The model ``ref`` names, ready in eval mode (see the module docstring for the rules).

    ``pretrained=False`` is only meaningful for a bare registered name (random weights).
    ``num_classes`` / ``in_chans`` adapt the head / stem as in
    :func:`~video3d_zoo.weights.loading.from_pretrained`; ``kwargs`` go to
    :func:`~video3d_zoo.api.create_model` for registered names, and are refused for files.
    ``allow_nonfinite=True`` loads weights holding NaN / inf (refused by default).
    ``features_only`` / ``out_indices``: a backbone returning stage outputs, applied after the
    weights are loaded (see :func:`~video3d_zoo.api.create_model`).
    """
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices selects the outputs of a backbone; pass features_only=True with it")
    parsed = parse_model_ref(ref)
    if parsed.kind == "name":
        options = dict(kwargs, allow_nonfinite=allow_nonfinite)
        if features_only:
            options.update(features_only=True, out_indices=out_indices)
        return _load_named(parsed, pretrained, num_classes, in_chans, options)
    if not pretrained:
        raise ConfigError(f"{parsed.describe()} is a checkpoint; pretrained=False only applies to a model name")
    if kwargs:
        raise ConfigError(f"architecture arguments {sorted(kwargs)} cannot be applied to the checkpoint "
                          f"{parsed.describe()}: its config says what to build")
    from .loading import from_pretrained

    if parsed.kind == "path" and not parsed.path.exists():
        raise ConfigError(f"{parsed.path}: no such checkpoint file or folder")
    source = parsed.text if parsed.kind == "hf-hub" else parsed.path
    return from_pretrained(source, num_classes=num_classes, in_chans=in_chans, allow_nonfinite=allow_nonfinite,
                           features_only=features_only, out_indices=out_indices).eval()


def _load_named(parsed: ModelRef, pretrained: bool, num_classes, in_chans, kwargs) -> nn.Module:
    from ..api import create_model

    if not pretrained and parsed.tag:
        raise ConfigError(f"{parsed.text!r} names the weights {parsed.tag!r}; drop the tag for random weights")
    weights = (parsed.tag or True) if pretrained else None
    model = create_model(parsed.name, pretrained=weights, num_classes=num_classes,
                         in_chans=3 if in_chans is None else in_chans, **kwargs)
    return model.eval()


def fetch_hub_folder(repo_id: str, revision: Optional[str] = None) -> Path:
    """Download (or find in the cache) a zoo folder from a Hub repository; returns the folder.

    Each file is checked against the sha256 the Hub reports for it (its LFS ETag); a file
    that does not match is removed from the cache and refused.
    """
    from .hub_repos import fetch_repo_file

    paths = [fetch_repo_file(repo_id, name, revision or "main") for name in HUB_FILES]
    folders = {p.parent for p in paths}
    if len(folders) != 1:  # both files come from one snapshot folder of the cache
        raise ConfigError(f"hf-hub:{repo_id}: config.json and model.safetensors resolved to different "
                          f"snapshots {sorted(map(str, folders))}; pin a revision with @REVISION")
    return folders.pop()
