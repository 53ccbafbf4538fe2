"""2020 (master) checkpoints of 3D-ResNets-PyTorch -> zoo layout.

The files are ``{"epoch", "arch", "state_dict", "optimizer", "scheduler"}`` with clean keys
(saved from ``model.module``) that already are the zoo layout.  A stray ``module.`` prefix
(a model saved while still wrapped) is removed.  The weights expect 0-1 RGB normalised with
the Kinetics mean/std (preset ``kenshohara2020``).
"""

from __future__ import annotations

from typing import Optional

from ...models.layout import KENSHOHARA2020
from .common import LayoutResult, StateDict, add_missing_batch_counters, strip_prefix


def convert(sd: StateDict, arch: Optional[str] = None, filename: Optional[str] = None) -> LayoutResult:
    sd = add_missing_batch_counters(strip_prefix(sd, "module."))
    hints = {"frames": 64} if filename and "64f" in filename else {}
    return LayoutResult(sd, layout=KENSHOHARA2020, input_preset="kenshohara2020",
                        arch_hint=arch, hints=hints)
