"""Preparing a run: seeding, and freezing the early stages for fine-tuning.

The autocast dtype (``train.amp``) is :func:`video3d_zoo.inference.precision.resolve_amp`.
"""

from __future__ import annotations

import os
import random
from typing import List, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import TrainConfigError


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def freeze_before(model: nn.Module, stage: str) -> List[str]:
    """Freeze every module registered before ``stage`` (a module name such as ``layer4``, ``fc`` or a
    dotted path); returns the frozen module names.

    Frozen parameters get ``requires_grad=False``; :func:`set_train_mode` keeps the frozen
    modules (BatchNorm included) in eval mode, so their running statistics never change.
    """
    names = [n for n, _ in model.named_modules() if n]
    if stage not in names:
        top = [n for n, _ in model.named_children()]
        raise TrainConfigError(f"finetune.from_stage = {stage!r}: no such module; top-level modules of "
                               f"{type(model).__name__}: {', '.join(top)} (or 'all')")
    ancestors = {stage.rsplit(".", i)[0] for i in range(1, stage.count(".") + 1)}
    frozen = []
    for name in names:
        if name == stage:
            break
        if name in ancestors:
            continue
        if any(name.startswith(a + ".") for a in frozen):
            continue  # already covered by a frozen parent
        frozen.append(name)
    for name in frozen:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module, frozen: Sequence[str]) -> None:
    """``model.train()`` with the frozen modules back in eval mode (BatchNorm statistics fixed)."""
    model.train()
    for name in frozen:
        model.get_submodule(name).eval()
