"""Learning-rate schedules with linear warmup: multistep, plateau, cosine, constant.

One object computes the learning rate of every optimizer step from the position in training
(epoch and step inside it), so a resumed run recomputes exactly the rates of an uninterrupted
one; only the plateau schedule carries state (best loss, bad epochs, current factor).

* ``multistep``: ``lr * gamma ** (number of milestones <= epoch)`` (0-based epochs: with
  milestones [50, 100, 150], epochs 0-49 run at ``lr`` as in the 2020 recipe's per-epoch
  ``MultiStepLR``).
* ``plateau``: the 2017 recipe's ``ReduceLROnPlateau('min', patience)``: the factor is multiplied
  by ``gamma`` when the validation loss has not improved by ``threshold`` (relative) for more
  than ``patience`` validated epochs.
* ``cosine``: per step from ``lr`` down to ``min_lr`` over the epochs after warmup.
* warmup: the first ``warmup_epochs`` (fractional, per step) ramp linearly from
  ``warmup_start_factor * lr``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch


class LRSchedule:
    def __init__(self, optimizer: torch.optim.Optimizer, cfg, epochs: int, steps_per_epoch: int) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.epochs = int(epochs)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.base_lrs: List[float] = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = lr
        self.plateau_factor = 1.0
        self.best: Optional[float] = None
        self.bad_epochs = 0

    def factor(self, epoch: int, step: int = 0) -> float:
        """Multiplier of the base lr at optimizer step ``step`` of (0-based) ``epoch``."""
        cfg = self.cfg
        t = epoch + step / self.steps_per_epoch
        warm = 1.0
        if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
            warm = cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * t / cfg.warmup_epochs
        if cfg.name == "multistep":
            main = cfg.gamma ** sum(1 for m in cfg.milestones if m <= epoch)
        elif cfg.name == "plateau":
            main = self.plateau_factor
        elif cfg.name == "cosine":
            span = max(1e-12, self.epochs - cfg.warmup_epochs)
            progress = min(1.0, max(0.0, (t - cfg.warmup_epochs) / span))
            main = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            main = 1.0
        return warm * main

    def lr(self, epoch: int, step: int = 0, group: int = 0) -> float:
        base = self.base_lrs[group]
        f = self.factor(epoch, step)
        if self.cfg.name == "cosine":
            return self.cfg.min_lr + (base - self.cfg.min_lr) * f if base > self.cfg.min_lr else base * f
        return max(base * f, min(self.cfg.min_lr, base)) if self.cfg.name == "plateau" else base * f

    def apply(self, epoch: int, step: int = 0) -> float:
        """Set every parameter group's lr for this step; returns the first group's."""
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.lr(epoch, step, i)
        return self.optimizer.param_groups[0]["lr"]

    def epoch_end(self, val_loss: Optional[float]) -> None:
        """Plateau bookkeeping after a validated epoch (no-op for the other schedules)."""
        if self.cfg.name != "plateau" or val_loss is None or not math.isfinite(val_loss):
            return
        if self.best is None or val_loss < self.best * (1.0 - self.cfg.threshold):
            self.best, self.bad_epochs = float(val_loss), 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.cfg.patience:
                self.plateau_factor *= self.cfg.gamma
                self.bad_epochs = 0

    def state_dict(self) -> Dict[str, Any]:
        return {"plateau_factor": self.plateau_factor, "best": self.best, "bad_epochs": self.bad_epochs,
                "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.plateau_factor = float(state["plateau_factor"])
        self.best = state["best"]
        self.bad_epochs = int(state["bad_epochs"])
