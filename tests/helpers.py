"""Test helpers: tiny models (arguments from the family contract), small inputs, golden case discovery."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
GOLDEN_DIRS = [DATA / "golden", ROOT.parent / "shared" / "golden" / "cases"]


def tiny_kwargs(name: str) -> dict:
    """Small widths (the family's ``FamilySpec.tiny_kwargs``): every model runs forward + backward fast."""
    from video3d_zoo.models.registry import family_of

    return dict(family_of(name).tiny_kwargs or {})


def regularisers(name: str) -> tuple:
    """The regulariser arguments (rates) the family of model ``name`` takes (``FamilySpec.regularisers``)."""
    from video3d_zoo.models.registry import family_of

    return tuple(family_of(name).regularisers)


def build_tiny(name: str, num_classes: int = 5, **kwargs):
    """Model ``name`` at its family's tiny width, seeded (the same weights on every call)."""
    import video3d_zoo

    torch.manual_seed(0)
    return video3d_zoo.create_model(name, num_classes=num_classes, **{**tiny_kwargs(name), **kwargs})


def first_model_of_each_family() -> list:
    """One registered model per family (the first by name)."""
    from video3d_zoo.models.registry import MODELS

    firsts = {}
    for name in MODELS.names():
        firsts.setdefault(MODELS.spec(name).family, name)
    return sorted(firsts.values())


def small_input(model, batch: int = 2, frames: int = 4, size: int = 32) -> torch.Tensor:
    mt, mh, mw = model.min_input_size
    return torch.randn(batch, model.in_chans, max(frames, mt), max(size, mh), max(size, mw))


def golden_case_files():
    """Every golden case: the copies in tests/data, plus any newer ones in ../shared (by name)."""
    found = {}
    for folder in GOLDEN_DIRS:
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                found.setdefault(path.name, path)
    return [found[name] for name in sorted(found)]


def as_2017(sd, arch=None, epoch=1) -> dict:
    """Zoo layout -> the 2017 release's checkpoint: DataParallel's ``module.`` prefix, no BatchNorm
    counters, 2017 DenseNet names, wrapped in the release's dict."""
    out = OrderedDict()
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("features."):
            key = key.replace("features.conv1.", "features.conv0.").replace("features.norm1.", "features.norm0.")
            key = re.sub(r"\.(norm|conv)([12])\.", r".\1.\2.", key)
        out["module." + key] = value
    return {"epoch": epoch, "arch": arch, "state_dict": out, "optimizer": {}}
