"""Test helpers: tiny architecture arguments per family, small inputs, golden case discovery."""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
GOLDEN_DIRS = [DATA / "golden", ROOT.parent / "shared" / "golden" / "cases"]

# Small widths so every registered model runs forward + backward in well under a second.
TINY_KWARGS = {
    "resnet3d": {"widen_factor": 0.125},
    "preact_resnet3d": {"widen_factor": 0.125},
    "wide_resnet3d": {"widen_factor": 0.125},
    "resnext3d": {"widen_factor": 0.25},
    "r2plus1d": {"widen_factor": 0.125},
    "torchvision_video": {"widen_factor": 0.125},
    "densenet3d": {"growth_rate": 4, "num_init_features": 8, "bn_size": 2},
}


def tiny_kwargs(name: str) -> dict:
    from video3d_zoo.registry import get_model_spec

    return dict(TINY_KWARGS[get_model_spec(name).family])


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
