"""Training configs shipped in the package (``video3d_zoo/configs/*.toml``), reachable by name.

``video3d-zoo train ucf101_resnext101_finetune`` works after ``pip install``: a name without a
path separator or suffix that is not an existing file is looked up among the packaged configs.
The repository's top-level ``configs/`` holds the same files (a test keeps them identical).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import List, Union

CONFIG_SUFFIXES = (".toml", ".json")


def packaged_configs_dir() -> Path:
    return Path(str(files("video3d_zoo") / "configs"))


def list_configs() -> List[str]:
    """Names of the packaged training configs (file names without ``.toml``)."""
    folder = packaged_configs_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def resolve_config_path(name_or_path: Union[str, os.PathLike]) -> Path:
    """The config file ``name_or_path`` means.

    An existing path wins.  Otherwise a bare name (no folder, ``.toml`` suffix optional) of a
    packaged config gives that file.  Anything else comes back unchanged as a path, so the
    caller's "no such config file" error names what the user typed.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = os.fspath(name_or_path)
    if os.sep in text or "/" in text or (os.altsep and os.altsep in text):
        return path
    stem = text[: -len(".toml")] if text.endswith(".toml") else text
    candidate = packaged_configs_dir() / f"{stem}.toml"
    return candidate if stem and candidate.is_file() else path


def unknown_config_hint() -> str:
    """One line naming the packaged configs, for "no such config file" errors."""
    names = list_configs()
    return f"packaged configs (by name): {', '.join(names)}" if names else ""


__all__ = ["list_configs", "packaged_configs_dir", "resolve_config_path", "unknown_config_hint"]
