"""Stochastic depth (:class:`DropPath`), activation checkpointing helpers and :class:`PrunedModule`."""

from __future__ import annotations

import contextlib
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError

def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch of a random subset of samples, scaling the
    kept ones by ``1 / (1 - drop_prob)`` so the expectation is unchanged.  Identity in eval."""
    if drop_prob <= 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth of one residual branch (Huang et al. 2016); see :func:`drop_path`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def make_drop_path(drop_prob: float) -> nn.Module:
    """A :class:`DropPath`, or ``nn.Identity`` at rate 0 (so rate 0 runs exactly the original ops)."""
    return DropPath(drop_prob) if drop_prob > 0 else nn.Identity()


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> List[float]:
    """Per-block stochastic-depth rates rising linearly from 0 (first block) to ``drop_path_rate`` (last)."""
    rate = float(drop_path_rate)
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
    if num_blocks <= 1:
        return [rate] * num_blocks
    return [rate * i / (num_blocks - 1) for i in range(num_blocks)]


class _RecomputeKeepsBatchNormStats:
    """Entered while activation checkpointing recomputes a segment in the backward pass.

    BatchNorm layers of the segment that are in training mode normalise with the batch
    statistics again (bit for bit the first forward's, saving the same tensors), but leave
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` as the first forward left them:
    without this a checkpointed step would apply the momentum update twice.  The recompute
    runs with momentum 0 (``0 * batch + 1 * running`` is ``running`` exactly) and the batch
    counter is put back afterwards.
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.modules = tuple(modules)
        self.saved: List[Tuple[nn.Module, Optional[float], Optional[torch.Tensor]]] = []

    def __enter__(self) -> "_RecomputeKeepsBatchNormStats":
        for root in self.modules:
            for m in root.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
                    counter = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
                    self.saved.append((m, m.momentum, counter))
                    m.momentum = 0.0
        return self

    def __exit__(self, *exc_info) -> bool:
        for m, momentum, counter in self.saved:
            m.momentum = momentum
            if counter is not None:
                m.num_batches_tracked.copy_(counter)
        self.saved = []
        return False


def _checkpoint_contexts(modules):
    return contextlib.nullcontext(), _RecomputeKeepsBatchNormStats(modules)


def _run_modules(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in modules:
        x = module(x)
    return x


class PrunedModule(nn.Module):
    """Stands where a features-only backbone dropped a stage (or the final norm) it does not need;
    calling it says so instead of silently passing the input through."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError(f"{self.name} was pruned: this model is a features-only backbone that stops at an "
                          "earlier stage; build it without features_only to run the full network")

    def extra_repr(self) -> str:
        return f"pruned {self.name!r}"
