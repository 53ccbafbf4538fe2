"""Training recipes, reachable by name: the recipe table and the configs shipped in the package.

``video3d-zoo train resnet3d_50.k700_16f`` trains the recipe of that name (see
:mod:`.recipe_table`: one row per release of the original project and per experiment of the
paper, built from a shared base); ``video3d-zoo train synthetic_r3d`` reads the packaged config
``video3d_zoo/configs/synthetic_r3d.toml``.  A name without a path separator that is not an
existing file is looked up among the recipes, then the packaged configs.  ``train --list`` lists
the recipes with the manifest entry each reproduces and the accuracy reported for it.
"""

from __future__ import annotations

import copy
import fnmatch
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import TrainConfigError
from .recipe_table import (_COMMON, BASE_SOURCES, BASES, DATASETS, GROUPS, OLD_NAMES, PAPER_GROUPS, ROWS,
                           TRAIN_VIDEOS, Row)

CONFIG_SUFFIXES = (".toml", ".json")
RECIPE_SOURCE_PREFIX = "recipe:"


def packaged_configs_dir() -> Path:
    return Path(str(files("video3d_zoo") / "configs"))


def list_configs() -> List[str]:
    """Names of the packaged training configs (file names without ``.toml``)."""
    folder = packaged_configs_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def merge(base: Dict[str, Any], changes: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``base`` updated by ``changes``, tables merged key by key (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in (changes or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Recipe:
    """One row of the recipe table, resolved against the manifest."""

    row: Row
    entry: Any  # the manifest's WeightsEntry of ``row.like``

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def reproduces(self) -> Optional[str]:
        """The manifest entry (``model.tag``) this recipe reproduces, if it is a release."""
        return self.row.like if self.row.release else None

    @property
    def groups(self) -> Tuple[str, ...]:
        return self.row.groups

    @property
    def train_videos(self) -> int:
        return TRAIN_VIDEOS[self.row.data][0]

    def sources(self) -> str:
        return f"{self.row.source}; base: {BASE_SOURCES[self.row.base]}"

    def reported(self) -> Optional[Tuple[float, str, str]]:
        """``(value, what, source)``: the release's first manifest accuracy, or the row's figure."""
        if self.row.release and self.entry.accuracy:
            acc = self.entry.accuracy[0]
            metric = {"mean_top1_top5": "mean(top-1, top-5)"}.get(acc.metric, acc.metric)
            split = f" {acc.split}" if acc.split else ""
            return acc.value, f"{acc.dataset}{split} {metric} ({acc.level or 'video'})", acc.source
        return self.row.reported

    def protocol(self) -> str:
        """How the reported figure is measured (the eval command's protocol for it)."""
        frames = self.entry.input_spec.frames
        acc = self.entry.accuracy[0] if self.row.release and self.entry.accuracy else None
        clips = acc.clips if acc is not None and acc.clips else f"all non-overlapping {frames}-frame clips"
        return f"video level: softmax per centre crop, averaged over {clips}"

    def config(self) -> Dict[str, Any]:
        """The training config (the mapping :func:`~video3d_zoo.train.config.load_config` reads)."""
        spec = self.entry.input_spec
        model = {"name": self.entry.model, "arch_kwargs": dict(self.entry.arch_kwargs), "input_preset": spec.name,
                 "frames": spec.frames, "crop_size": spec.crop_size,
                 "resize": spec.resize if isinstance(spec.resize, int) else min(spec.resize)}
        if self.row.release or self.row.base == "finetune":
            model["num_classes"] = self.entry.num_classes  # the released head's size
        cfg = merge(_COMMON, BASES[self.row.base])
        cfg = merge(cfg, {"model": model, "data": DATASETS[self.row.data]})
        cfg = merge(cfg, self.row.changes)
        return merge(cfg, {"output": {"name": self.name}, "source": RECIPE_SOURCE_PREFIX + self.name})


def _entries() -> Dict[str, Any]:
    from ..weights.manifest import load_manifest

    return {f"{e.model}.{e.tag}": e for e in load_manifest().entries}


def all_recipes() -> List[Recipe]:
    """Every recipe of the table, in table order."""
    entries = _entries()
    missing = [r.like for r in ROWS if r.like not in entries]
    if missing:
        raise TrainConfigError(f"the recipe table names weights the manifest does not list: {missing}")
    return [Recipe(row, entries[row.like]) for row in ROWS]


def find_recipes(selector: Optional[str] = None) -> List[Recipe]:
    """Recipes of a group (``paper``, ``scratch``, ``depth``, ``arch``, ``finetune``, ``2020``) or
    whose name matches a shell pattern; all of them for ``None``."""
    recipes = all_recipes()
    if not selector:
        return recipes
    if selector == "paper":
        return [r for r in recipes if set(r.groups) & set(PAPER_GROUPS)]
    if selector in GROUPS:
        return [r for r in recipes if selector in r.groups]
    found = [r for r in recipes if fnmatch.fnmatchcase(r.name, selector)]
    if not found:
        raise TrainConfigError(f"no recipe or group {selector!r}; groups: paper, {', '.join(GROUPS)} "
                               "(video3d-zoo train --list)")
    return found


def recipe(name: str) -> Optional[Recipe]:
    """The recipe called ``name`` (or an older config name of it), or ``None``."""
    name = OLD_NAMES.get(name, name)
    for row in ROWS:
        if row.name == name:
            return Recipe(row, _entries()[row.like])
    return None


def resolve_config_path(name_or_path: Union[str, os.PathLike]) -> Path:
    """The config file ``name_or_path`` means.

    An existing path wins.  Otherwise a bare name (no folder, ``.toml`` suffix optional) of a
    packaged config gives that file.  Anything else comes back unchanged as a path, so the
    caller's "no such config file" error names what the user typed.
    """
    path = Path(name_or_path).expanduser()
    if path.exists() or _is_path(name_or_path):
        return path
    text = os.fspath(name_or_path)
    stem = text[: -len(".toml")] if text.endswith(".toml") else text
    candidate = packaged_configs_dir() / f"{stem}.toml"
    return candidate if stem and candidate.is_file() else path


def _is_path(name_or_path: Union[str, os.PathLike]) -> bool:
    text = os.fspath(name_or_path)
    return os.sep in text or "/" in text or bool(os.altsep and os.altsep in text)


def recipe_config(name_or_path: Union[str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """The config of the recipe ``name_or_path`` names (``None`` for a file or a packaged config)."""
    if _is_path(name_or_path) or Path(name_or_path).expanduser().exists():
        return None
    found = recipe(os.fspath(name_or_path))
    return found.config() if found is not None else None


def unknown_config_hint() -> str:
    """One line naming the packaged configs and where the recipes are listed."""
    names = list_configs()
    configs = f"packaged configs (by name): {', '.join(names)}; " if names else ""
    return configs + f"{len(ROWS)} recipes: video3d-zoo train --list"


__all__ = ["Recipe", "all_recipes", "find_recipes", "list_configs", "merge", "packaged_configs_dir", "recipe",
           "recipe_config", "resolve_config_path", "unknown_config_hint"]
