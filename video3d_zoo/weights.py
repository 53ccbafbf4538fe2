"""The one glue step from a checkpoint (file, folder or loaded object) to a ready model.

* :func:`read_checkpoint` reads ``model.safetensors`` (with its embedded config), a zoo
  folder (``model.safetensors`` + ``config.json``) or a pickled ``.pth`` - the latter only
  with ``torch.load(weights_only=True)``, so a file that would run code is refused.
* :func:`load_converted` builds the architecture *without* random initialisation (meta
  device, then the tensors are assigned) and loads strictly: any missing, unexpected or
  mis-shaped tensor is an error that lists them.
* :func:`from_pretrained` = read + convert + build, with no architecture named by the user.
* :func:`save_pretrained` writes ``model.safetensors`` + ``config.json`` atomically.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .config import ModelConfig
from .convert import ConvertedCheckpoint, convert_checkpoint
from .errors import CheckpointError, ConfigError, UnsafeCheckpointError, WeightsNotFoundError
from .layers import adapt_input_conv
from .registry import get_model_spec

PathLike = Union[str, os.PathLike]
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CONFIG_METADATA_KEY = "video3d_zoo.config"
_STEM_KEYS = ("conv1.weight", "conv1_s.weight", "features.conv1.weight")


# -- reading -------------------------------------------------------------------------------------
def read_checkpoint(path: PathLike) -> Tuple[Any, Optional[ModelConfig]]:
    """Load a checkpoint file or zoo folder: ``(object, config or None)``."""
    path = Path(path)
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{path}: folder has no {WEIGHTS_NAME}")
        sd, embedded = read_safetensors(weights)
        config_file = path / CONFIG_NAME
        config = (ModelConfig.from_json(config_file.read_text(encoding="utf-8"), str(config_file))
                  if config_file.is_file() else embedded)
        return sd, config
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return read_safetensors(path)
    return read_pickle(path), None


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Optional[ModelConfig]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            sd = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); truncated or corrupt?") from exc
    text = metadata.get(CONFIG_METADATA_KEY)
    config = ModelConfig.from_json(text, f"{path} metadata") if text else None
    return sd, config


def read_pickle(path: PathLike) -> Any:
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<")):
        raise CheckpointError(f"{path}: this is an HTML page, not a checkpoint (a failed download from a "
                              "file-sharing site?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        imports = pickle_imports(path)
        if imports:
            raise UnsafeCheckpointError(
                f"{path}: refused - unpickling it would import and call {', '.join(imports[:5])}, which is "
                "not plain tensors and containers. Only if you trust its source: load it with "
                "torch.load(weights_only=False) and pass the result to from_pretrained().") from exc
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({_first_line(exc)})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({_first_line(exc)})") from exc


_SAFE_IMPORT_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset",
                         "_codecs.encode", "numpy.")


def pickle_imports(path: PathLike) -> list:
    """Globals a pickle (plain or inside a ``torch.save`` zip) would import, minus tensor plumbing."""
    import pickletools

    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next(n for n in zf.namelist() if n.endswith("data.pkl"))
                data = zf.read(member)
        else:
            data = path.read_bytes()
        strings, found = [], []
        for opcode, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings.append(arg)
            if opcode.name in ("GLOBAL", "INST"):
                found.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # unparseable: corrupt rather than malicious
        return []
    return [name for name in dict.fromkeys(found) if not name.startswith(_SAFE_IMPORT_PREFIXES)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text and "Weights only load failed" in text[0] else (text[0] if text else type(exc).__name__)


# -- building ------------------------------------------------------------------------------------
def build_empty(config: ModelConfig) -> nn.Module:
    """The architecture of ``config`` on the meta device (no memory, no initialisation)."""
    spec = get_model_spec(config.architecture)
    try:
        with torch.device("meta"):
            model = spec.builder(num_classes=config.num_classes, in_chans=config.in_chans,
                                 init_weights=False, **dict(config.arch_kwargs))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build {config.architecture!r} with {dict(config.arch_kwargs)}: {exc}") from exc
    return model


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`CheckpointError` listing every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                shown = "; ".join(items[:12]) + (f"; ... ({len(items)} in all)" if len(items) > 12 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{what} does not fit exactly - " + " | ".join(parts))


def load_converted(converted: ConvertedCheckpoint, num_classes: Optional[int] = None,
                   in_chans: Optional[int] = None) -> nn.Module:
    """Build the model a converted checkpoint describes and load it strictly.

    ``num_classes`` different from the checkpoint's keeps the backbone and gives a freshly
    initialised head; ``in_chans`` different from 3 adapts the stem (see
    :func:`~video3d_zoo.layers.adapt_input_conv`).
    """
    config = converted.config
    sd = dict(converted.state_dict)
    model = build_empty(config)
    check_state_dict(model, sd, f"checkpoint for {config.architecture} ({converted.layout} layout)")
    model.load_state_dict(sd, strict=True, assign=True)
    model.eval()
    if in_chans is not None and in_chans != config.in_chans:
        _adapt_stem(model, in_chans)
        config = config.replace(in_chans=in_chans)
    if num_classes is not None and num_classes != config.num_classes:
        model.reset_classifier(num_classes)
        config = config.replace(num_classes=num_classes, labels=None)
    model.config = config
    return model


def _adapt_stem(model: nn.Module, in_chans: int) -> None:
    for key in _STEM_KEYS:
        module_name = key.rsplit(".", 1)[0]
        try:
            conv = model.get_submodule(module_name)
        except AttributeError:
            continue
        conv.weight = nn.Parameter(adapt_input_conv(conv.weight.detach(), in_chans))
        conv.in_channels = in_chans
        model.in_chans = in_chans
        return
    raise CheckpointError("no stem convolution found to adapt to in_chans")


def from_pretrained(source: Union[PathLike, Mapping[str, Any]], num_classes: Optional[int] = None,
                    in_chans: Optional[int] = None) -> nn.Module:
    """A ready model (eval mode) from a zoo checkpoint, an original 3D-ResNets-PyTorch checkpoint
    (2017 or 2020 release) or a torchvision video ResNet state dict - no architecture needed.

    ``source`` is a path (file or folder), an already loaded checkpoint object, or an
    ``hf-hub:ORG/REPO[@REVISION]`` reference to a Hub repository holding a zoo folder.
    """
    if isinstance(source, str) and source.startswith("hf-hub:"):
        from .resolve import fetch_hub_folder, parse_model_ref

        ref = parse_model_ref(source)
        model = load_converted(convert_source(fetch_hub_folder(ref.repo_id, ref.revision)),
                               num_classes=num_classes, in_chans=in_chans)
        model.config = model.config.replace(source=ref.describe())
        return model
    return load_converted(convert_source(source), num_classes=num_classes, in_chans=in_chans)


def load_pretrained(name: str, pretrained: Any, num_classes: Optional[int] = None, in_chans: int = 3,
                    arch_kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """The one path from ``create_model(name, pretrained=...)`` to a loaded model.

    ``pretrained`` is a local path (file or folder) or, through the weights manifest,
    ``True`` (the model's default weights), a tag or an alias.
    """
    if _is_local_path(pretrained):
        converted = convert_source(pretrained)
    else:
        converted = fetch_converted(name, pretrained)
    if converted.config.architecture != name:
        raise CheckpointError(f"{pretrained!r} holds a {converted.config.architecture} checkpoint, "
                              f"not {name}; use from_pretrained() to load it as what it is")
    if arch_kwargs:
        merged = {**converted.config.arch_kwargs, **arch_kwargs}
        converted.config = converted.config.replace(arch_kwargs=merged)
    return load_converted(converted, num_classes=num_classes, in_chans=in_chans)


def _is_local_path(value: Any) -> bool:
    if isinstance(value, os.PathLike):
        return True
    if not isinstance(value, str):
        return False
    return os.sep in value or value.endswith((".pth", ".pt", ".safetensors", ".bin")) or Path(value).exists()


def convert_source(source: Union[PathLike, Mapping[str, Any]]) -> ConvertedCheckpoint:
    """Read (if a path) and convert a checkpoint to the zoo layout, using a stored config if any."""
    if isinstance(source, Mapping):
        return convert_checkpoint(source)
    obj, config = read_checkpoint(source)
    converted = convert_checkpoint(obj, filename=Path(source).name)
    if config is not None:
        converted.config = config
    return converted


# -- manifest entries ----------------------------------------------------------------------------------
def unpublished_message(entry) -> str:
    """What to do when an entry's converted file is not on the Hub yet."""
    folder = f"./{entry.name}"
    lines = [f"{entry.name} is in the weights manifest, but its converted file is not published on the "
             "Hugging Face Hub yet (its 'hub' is null)."]
    if entry.upstream is not None:
        up = entry.upstream
        alt = f" (or {', '.join(up.alternate_files)})" if up.alternate_files else ""
        lines.append(f"The original is {up.file}{alt}, released with {up.release}"
                     + (f", hosted at {up.url}" if up.url else "") + ".")
        if up.sha256 or up.sha256_prefix:
            lines.append(f"Its sha256 {'is' if up.sha256 else 'starts with'} {up.sha256 or up.sha256_prefix}.")
        source = up.file
    else:
        lines.append("The manifest does not record where the original checkpoint lives.")
        source = "<original checkpoint>"
    lines.append("Download it, convert it once, and load the folder:")
    lines.append(f"    video3d-zoo convert {source} -o {folder}")
    lines.append(f"    create_model({entry.model!r}, pretrained={folder!r})")
    return "\n".join(lines)


def fetch_converted(name: str, pretrained: Any = True, manifest=None) -> ConvertedCheckpoint:
    """Find, verify (sha256) and read the weights ``pretrained`` selects for ``name``: a file shipped
    in the package, or a download (cached) from the Hub; the config is the manifest entry's."""
    from .hub import download, verify_file
    from .manifest import load_manifest

    entry = (manifest or load_manifest()).resolve(name, pretrained)
    if entry.embedded is not None:
        from importlib.resources import files

        path = Path(str(files("video3d_zoo").joinpath(*entry.embedded.path.split("/"))))
        if not path.is_file():
            raise WeightsNotFoundError(f"{entry.name}: the packaged file {path} is missing; reinstall video3d-zoo")
        verify_file(path, entry.embedded.sha256, entry.embedded.size, what=f"{entry.name} ({path})")
    elif entry.hub is not None:
        path = download(entry.hub)
    else:
        raise WeightsNotFoundError(unpublished_message(entry))
    state_dict, _ = read_checkpoint(path)
    return ConvertedCheckpoint(state_dict=state_dict, config=entry.to_config(), layout="zoo")


# -- writing -------------------------------------------------------------------------------------
def save_pretrained(model: nn.Module, out_dir: PathLike, config: Optional[ModelConfig] = None) -> Path:
    """Write ``model.safetensors`` (config embedded in its metadata) and ``config.json`` to ``out_dir``.

    Both files are written to temporaries and renamed into place, so an interrupted save never
    leaves a half-written file where a good one was.
    """
    from safetensors.torch import save_file

    config = config or getattr(model, "config", None)
    if config is None:
        raise ConfigError("save_pretrained needs a ModelConfig (model.config is not set)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    text = config.to_json()
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(sd, str(tmp), metadata={CONFIG_METADATA_KEY: text, "format": "pt"})
    with atomic_path(out / CONFIG_NAME) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return out


class atomic_path:
    """Context manager yielding a temporary path that replaces ``target`` on success only."""

    def __init__(self, target: PathLike) -> None:
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def convert_to_folder(source: PathLike, out_dir: PathLike) -> Path:
    """``video3d-zoo convert``: any supported checkpoint -> zoo folder (safetensors + config.json)."""
    model = from_pretrained(source)
    return save_pretrained(model, out_dir)


def config_summary(config: ModelConfig) -> str:
    return json.dumps({k: v for k, v in config.to_dict().items() if k != "labels"}, indent=2)
