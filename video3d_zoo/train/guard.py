"""Divergence guard: training stops at the first non-finite loss, gradient or weight, and nothing
non-finite is ever saved.

At every optimizer step the trainer hands the guard each micro-batch's loss (the value it logs
anyway), lets it look at the gradients before the step (a step with a non-finite gradient is
not applied) and, after the step, at the weights (parameters and floating-point buffers such as
BatchNorm statistics).  Gradients and weights are measured by their infinity norm, which is
inf or nan exactly when some element is (no overflow, unlike the 2-norm), in one fused pass.
Under the fp16 gradient scaler the gradient check is left to the scaler, which skips such steps
by design; the loss and weight checks stay.

The three flags are summed over the processes in one all-reduce of three numbers, so under
DistributedDataParallel every process raises :class:`TrainingDivergedError` at the same step
and none is left waiting in a collective.  The error comes before anything is written, so
``checkpoints/last.pt`` and ``best.pt`` keep the last finite state; :meth:`DivergenceGuard.require_finite`
checks the weights once more (collectively) before every checkpoint and before the export.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, List, Mapping, Optional

import torch
from torch import nn

from ..errors import TrainingDivergedError
from .distributed import DistInfo, all_reduce_sum

__all__ = ["DivergenceGuard", "TrainingDivergedError", "max_abs", "nonfinite_names", "require_finite_state"]

# Fault injection for the tests: "RANK:GLOBAL_STEP" makes that process see a nan loss at that step.
NAN_ENV = "VIDEO3D_ZOO_TEST_NAN_LOSS_AT"


def max_abs(tensors: Iterable[torch.Tensor]) -> float:
    """The largest ``|x|`` over ``tensors`` (nan if any element is nan); 0.0 for none."""
    tensors = [t.detach() for t in tensors if t is not None and t.numel()]
    if not tensors:
        return 0.0
    total_norm = getattr(nn.utils, "get_total_norm", None)
    if total_norm is not None:
        return float(total_norm(tensors, float("inf")))
    return float(torch.stack([torch.linalg.vector_norm(t, float("inf")) for t in tensors]).max())  # pragma: no cover


def model_tensors(model: nn.Module) -> List[torch.Tensor]:
    """Parameters and floating-point buffers (BatchNorm running statistics)."""
    return list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]


def nonfinite_names(state: Mapping[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors in ``state`` holding an inf or a nan."""
    return [k for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _describe_bad(bad: List[str], total: int) -> str:
    more = f", ... ({len(bad) - 3} more)" if len(bad) > 3 else ""
    return f"{len(bad)} of {total} tensors are not finite ({', '.join(bad[:3])}{more})"


def require_finite_state(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`TrainingDivergedError` if ``state`` (a state dict) holds a non-finite tensor."""
    bad = nonfinite_names(state)
    if bad:
        raise TrainingDivergedError(f"{what}: {_describe_bad(bad, len(state))}; it was written by a run that "
                                    "diverged: start afresh (--set output.overwrite=true) with a lower optim.lr")


class DivergenceGuard:
    """Per-step finiteness checks of one training run (see the module docstring)."""

    CHECKS = ("loss", "gradients", "weights after the step")

    def __init__(self, cfg, info: DistInfo, amp_dtype: Optional[torch.dtype] = None) -> None:
        self.cfg, self.info, self.amp_dtype = cfg, info, amp_dtype
        self.loss: Optional[float] = None  # this step's loss: the first non-finite micro-batch loss, else the last
        self.bad_grads = False
        self.last_saved: Optional[str] = None  # what the run's last.pt holds, for the error message

    def note_loss(self, value: float) -> None:
        if self.loss is None or math.isfinite(self.loss):
            self.loss = value

    def grads_finite(self, params: Iterable[nn.Parameter]) -> bool:
        """False (and remembered for :meth:`after_step`) if any gradient holds an inf or a nan."""
        ok = math.isfinite(max_abs(p.grad for p in params))
        self.bad_grads = self.bad_grads or not ok
        return ok

    def after_step(self, model: nn.Module, epoch: int, step: int, steps: int, global_step: int) -> None:
        """Collective (every process, every optimizer step): raise if any process saw a non-finite value."""
        loss = self.loss if self.loss is not None else 0.0
        if os.environ.get(NAN_ENV) == f"{self.info.rank}:{global_step}":
            loss = math.nan
        weights_ok = math.isfinite(max_abs(model_tensors(model)))
        flags = torch.tensor([not math.isfinite(loss), self.bad_grads, not weights_ok], dtype=torch.float64)
        self.loss, self.bad_grads = None, False
        flags = all_reduce_sum(flags, self.info)
        if bool(flags.any()):
            raise TrainingDivergedError(self._message(flags, loss, epoch, step, steps, global_step))

    def require_finite(self, model: nn.Module, what: str, keeps: str = "") -> None:
        """Collective: raise unless every process's weights are finite (before a checkpoint or the export)."""
        state = model.state_dict()
        bad = nonfinite_names(state)
        flags = all_reduce_sum(torch.tensor([float(bool(bad))], dtype=torch.float64), self.info)
        if bool(flags[0]):
            found = _describe_bad(bad, len(state)) if bad else "another process holds non-finite weights"
            raise TrainingDivergedError(f"refusing to {what}: {found}; {keeps or self.saved()}")

    def saved_at(self, epoch: int, step: int, global_step: int) -> None:
        """Remember what checkpoints/last.pt holds (a checkpoint's ``epoch``, ``step_in_epoch``)."""
        where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
        self.last_saved = f"{where}, global step {global_step}"

    # messages ----------------------------------------------------------------------------------------
    def _message(self, flags: torch.Tensor, loss: float, epoch: int, step: int, steps: int, global_step: int) -> str:
        n = self.info.world_size
        what = [name + (f" (on {int(k)} of {n} processes)" if n > 1 else "")
                for name, k in zip(self.CHECKS, flags.tolist()) if k]
        where = f"epoch {epoch + 1}/{self.cfg.train.epochs}, step {step}/{steps} (global step {global_step})"
        here = f"loss {loss:.6g}" if n == 1 else f"loss on process {self.info.rank}: {loss:.6g}"
        return f"training diverged at {where}: non-finite {', '.join(what)}; {here}; try {self.advice()}; {self.saved()}"

    def saved(self) -> str:
        if self.last_saved is None:
            return "nothing was saved (no checkpoint, no export)"
        return (f"checkpoints/last.pt still holds the last finite state ({self.last_saved}) and no export was "
                "written: resume from it with --resume --accept-config-changes and the changed --set values")

    def advice(self) -> str:
        o, t = self.cfg.optim, self.cfg.train
        tips = [f"a lower optim.lr (now {o.lr:g})"]
        if o.clip_grad_norm:
            tips.append(f"a lower optim.clip_grad_norm (now {o.clip_grad_norm:g})")
        else:
            tips.append("gradient clipping (optim.clip_grad_norm, now off; e.g. 1.0)")
        if self.cfg.schedule.warmup_epochs == 0:
            tips.append("a warmup (schedule.warmup_epochs, e.g. 1)")
        if self.amp_dtype is not None:
            dtype = str(self.amp_dtype).replace("torch.", "")
            tips.append(f"train.amp = \"none\" (now \"{t.amp}\": {dtype})")
        return ", ".join(tips)
