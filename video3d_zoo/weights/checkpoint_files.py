"""Reading checkpoint files safely: zoo folders, ``.safetensors`` and pickled ``.pth`` files.

* :func:`read_checkpoint` reads ``model.safetensors`` (with its embedded config), a zoo folder
  (``model.safetensors`` + ``config.json``) or a pickled ``.pth`` - the latter only with
  ``torch.load(weights_only=True)``, so a file that would run code is refused, naming what it would
  import (:func:`pickle_imports`).  FIFOs, devices and folders without weights are refused before
  anything is opened; HTML pages and truncated files get their own messages.
"""

from __future__ import annotations

import os
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from ..models.config import CONFIG_METADATA_KEY, ModelConfig
from ..errors import CheckpointError, UnsafeCheckpointError

PathLike = Union[str, os.PathLike]
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def read_checkpoint(path: PathLike) -> Tuple[Any, Optional[ModelConfig]]:
    """Load a checkpoint file or zoo folder: ``(object, config or None)``."""
    path = Path(path)
    kind = _file_kind(path)
    if kind == "folder":
        weights = path / WEIGHTS_NAME
        if _file_kind(weights) != "file":
            raise CheckpointError(f"{path}: a folder without a readable {WEIGHTS_NAME} file "
                                  f"({_file_kind(weights)}); expected a zoo folder ({WEIGHTS_NAME} + "
                                  f"{CONFIG_NAME}) or a checkpoint file")
        sd, embedded = read_safetensors(weights)
        config_file = path / CONFIG_NAME
        config_kind = _file_kind(config_file)
        if config_kind not in ("file", "missing"):
            raise CheckpointError(f"{config_file}: expected a JSON file, found a {config_kind}")
        config = (ModelConfig.from_json(_read_text(config_file), str(config_file))
                  if config_kind == "file" else embedded)
        return sd, config
    if kind == "missing":
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    if kind != "file":
        raise CheckpointError(f"{path}: expected a checkpoint file or folder, found a {kind}; not read "
                              "(reading a pipe or device could block or never end)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return read_safetensors(path)
    return read_pickle(path), None


def _file_kind(path: Path) -> str:
    """``file``, ``folder``, ``missing`` or what else it is - from stat, without opening it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot access it ({exc.strerror or exc})") from exc
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read it as UTF-8 text ({exc})") from exc


def _looks_like_safetensors(path: Path) -> bool:
    return len(head := _head_bytes(path, 9)) == 9 and head[8:9] == b"{"


def _head_bytes(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


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
    head = _head_bytes(path, 64).lstrip().lower()
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
