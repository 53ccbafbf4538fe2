"""Reading checkpoint files safely: zoo folders, ``.safetensors`` and pickled ``.pth`` files.

* :func:`read_checkpoint` reads ``model.safetensors`` (with its embedded config), a zoo folder
  (``model.safetensors`` + ``config.json``) or a pickled ``.pth`` - the latter only with
  ``torch.load(weights_only=True)``, and only after :func:`check_pickle` read its opcodes without
  unpickling: a file that is no ``torch.save`` output ("not a checkpoint"), one that would run code
  (naming what it would import) and one declaring more storage than it holds are refused before
  ``torch.load`` allocates anything.  FIFOs, devices and folders without weights are refused before
  anything is opened; HTML pages and truncated files get their own messages.
"""

from __future__ import annotations

import os
import pickle
import re
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ..models.config import CONFIG_METADATA_KEY, ModelConfig
from ..errors import CheckpointError, UnknownModelError, UnsafeCheckpointError
from ..models.registry import get_model_spec
from .pickle_scan import NotAPickle, PickleScan, ZipBomb, scan_checkpoint
from .tensor_checks import MAX_GROWTH, MAX_TENSOR_BYTES, SLACK_BYTES, human_bytes

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
        config_file = path / CONFIG_NAME
        config_kind = _file_kind(config_file)
        if config_kind not in ("file", "missing"):
            raise CheckpointError(f"{config_file}: expected a JSON file, found a {config_kind}")
        # the config is checked before the weights are read: a bad one costs nothing
        config = _registered(ModelConfig.from_json(_read_text(config_file), str(config_file)), config_file) \
            if config_kind == "file" else None
        sd, embedded = read_safetensors(weights)
        return sd, config or _registered(embedded, weights)
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


def _registered(config: Optional[ModelConfig], where: Path) -> Optional[ModelConfig]:
    """``config``, once its architecture is known to the registry (the error names the file)."""
    if config is not None:
        try:
            get_model_spec(config.architecture)
        except UnknownModelError as exc:
            raise UnknownModelError(f"{where}: architecture: {exc}") from None
    return config


def read_pickle(path: PathLike) -> Any:
    """A ``torch.save`` file, loaded with ``weights_only=True`` after :func:`check_pickle` passed it."""
    path = Path(path)
    head = _head_bytes(path, 64).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<")):
        raise CheckpointError(f"{path}: this is an HTML page, not a checkpoint (a failed download from a "
                              "file-sharing site?)")
    check_pickle(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise UnsafeCheckpointError(
                f"{path}: refused - unpickling it needs {refused.group(1)}, which torch.load(weights_only=True) "
                f"does not allow. {_TRUST_HINT}") from exc
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({_first_line(exc)})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, TypeError,
            AttributeError, struct.error, OverflowError) as exc:  # what unpicklers raise on damaged bytes
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({_first_line(exc)})") from exc


_TRUST_HINT = ("Only if you trust its source: load it with torch.load(weights_only=False) and pass the result "
               "to from_pretrained().")


def check_pickle(path: Path) -> None:
    """Refuse, without unpickling or allocating: a file that is no ``torch.save`` output, one that would
    run code, and one whose declared tensor storages the file cannot hold (see :mod:`.pickle_scan`)."""
    size = path.stat().st_size
    try:
        scan = scan_checkpoint(path, MAX_GROWTH * size + SLACK_BYTES)
    except NotAPickle as exc:
        raise CheckpointError(f"{path}: not a checkpoint: neither a zip archive nor a pickle written by "
                              f"torch.save ({exc}); expected a .pth/.pt file, a .safetensors file or a zoo "
                              "folder") from None
    except ZipBomb as exc:
        raise CheckpointError(f"{path}: refused before unpacking - {exc} ({MAX_GROWTH} x the file + "
                              f"{human_bytes(SLACK_BYTES)}); a zip bomb?") from None
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({exc})") from None
    if scan is None:
        return  # the pre-2017 tar layout: torch.load reads it
    unsafe = _unsafe(scan.imports)
    if unsafe:
        raise UnsafeCheckpointError(f"{path}: this file runs code when unpickled (imports {', '.join(unsafe[:5])}): "
                                    f"refused. {_TRUST_HINT}")
    if scan.layout == "pickle":
        raise CheckpointError(f"{path}: not a checkpoint: a pickle, but not one written by torch.save. If you "
                              "trust its source, unpickle it yourself and pass the object to from_pretrained()")
    _check_declared_sizes(path, scan)


def _check_declared_sizes(path: Path, scan: PickleScan) -> None:
    huge = [f"{key} ({kind}, {human_bytes(n)})" for key, (kind, n) in scan.storages.items() if n > MAX_TENSOR_BYTES]
    if huge:
        raise CheckpointError(f"{path}: refused before reading - storage(s) {', '.join(huge[:5])} declare more than "
                              f"{human_bytes(MAX_TENSOR_BYTES)} each")
    if scan.layout == "legacy":
        needed = scan.declared_bytes + 8 * len(scan.storages)  # each storage: its length, then its bytes
        if needed > scan.payload_bytes:
            raise CheckpointError(
                f"{path}: refused before reading - its tensors declare {human_bytes(scan.declared_bytes)} of "
                f"storage, but the file holds {human_bytes(scan.payload_bytes)} after its header (truncated, or a "
                "forged size)")
        return
    short = [f"{key} declares {human_bytes(n)}, its record holds "
             f"{human_bytes(scan.records[key]) if key in scan.records else 'nothing'}"
             for key, (_, n) in scan.storages.items() if scan.records.get(key, -1) < n]
    if short:
        raise CheckpointError(f"{path}: refused before reading - storage {'; '.join(short[:5])} (truncated, or a "
                              "forged size)")


_SAFE_IMPORT_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset",
                         "_codecs.encode", "numpy.")


def _unsafe(imports: List[str]) -> List[str]:
    """Globals that are not tensor plumbing: importing and calling them could run any code."""
    return [name for name in dict.fromkeys(imports) if not name.startswith(_SAFE_IMPORT_PREFIXES)]


def pickle_imports(path: PathLike) -> list:
    """Globals a pickle (plain, legacy ``torch.save`` or inside its zip) would import, minus tensor plumbing."""
    path = Path(path)
    try:
        scan = scan_checkpoint(path, MAX_GROWTH * path.stat().st_size + SLACK_BYTES)
    except (NotAPickle, ZipBomb, zipfile.BadZipFile, EOFError, OSError):  # unreadable: corrupt rather than malicious
        return []
    return _unsafe(scan.imports) if scan is not None else []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text and "Weights only load failed" in text[0] else (text[0] if text else type(exc).__name__)
