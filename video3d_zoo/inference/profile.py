"""Parameters and multiply-accumulates (MACs) of a model, counted with fvcore.

fvcore counts one fused multiply-add as one "flop"; that is one MAC, the convention
torchvision and timm report as "GFLOPS".  Real floating-point operations are about twice
the MAC count.  Operators fvcore has no formula for (element-wise adds, ReLU, pooling, BN in
eval) are collected and returned by name instead of being printed as warnings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Tuple, Union

import torch
from torch import nn


@dataclass(frozen=True)
class ProfileResult:
    """What :func:`profile` measured."""

    params: int
    gmacs: float
    input_shape: Tuple[int, ...]
    uncounted_ops: Dict[str, int] = field(default_factory=dict)

    @property
    def params_millions(self) -> float:
        return self.params / 1e6

    def to_dict(self) -> dict:
        return {"params": self.params, "params_millions": round(self.params_millions, 3),
                "gmacs": round(self.gmacs, 3), "input_shape": list(self.input_shape),
                "uncounted_ops": dict(self.uncounted_ops)}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def profile(model_or_name: Union[str, nn.Module], frames: int = 16, size: int = 112,
            batch_size: int = 1, **create_kwargs) -> ProfileResult:
    """Parameters and GMACs (per clip) of a model or a registered name at ``frames x size x size``."""
    from fvcore.nn import FlopCountAnalysis

    if isinstance(model_or_name, str):
        from ..api import create_model

        model = create_model(model_or_name, **create_kwargs)
    else:
        model = model_or_name
    was_training = model.training
    model.eval()
    in_chans = getattr(model, "in_chans", 3)
    device = next(model.parameters()).device
    shape = (batch_size, in_chans, frames, size, size)
    x = torch.zeros(shape, device=device)
    try:
        with torch.no_grad(), _quiet_fvcore():
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            total = analysis.total()
            uncounted = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)
    return ProfileResult(params=count_params(model), gmacs=total / batch_size / 1e9,
                         input_shape=shape, uncounted_ops=uncounted)


class _quiet_fvcore:
    """Silence fvcore's loggers (it logs skipped ops at WARNING) for the duration."""

    def __enter__(self):
        self.loggers = [logging.getLogger(n) for n in ("fvcore", "fvcore.nn.jit_analysis")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)
