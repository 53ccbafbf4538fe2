"""2017 (CVPR2018 branch) checkpoints of 3D-ResNets-PyTorch -> zoo layout.

The files are ``{"epoch", "arch", "state_dict", "optimizer"}`` saved from an
``nn.DataParallel`` wrapper: every key starts with ``module.`` and, written by PyTorch
0.2/0.3, no BatchNorm has ``num_batches_tracked``.  DenseNets use ``conv0``/``norm0`` and
dotted layer names (``norm.1``, ``conv.1``, ``norm.2``, ``conv.2``).  The weights expect raw
0-255 RGB minus the ActivityNet mean (preset ``kenshohara2017``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Optional

from ...models.layout import KENSHOHARA2017
from .common import LayoutResult, StateDict, add_missing_batch_counters, strip_prefix

_DENSE_RENAMES = (
    (re.compile(r"^features\.conv0\."), "features.conv1."),
    (re.compile(r"^features\.norm0\."), "features.norm1."),
    (re.compile(r"\.(norm|conv)\.([12])\."), r".\g<1>\g<2>."),
)


def rename_densenet(sd: StateDict) -> StateDict:
    out: StateDict = OrderedDict()
    for key, value in sd.items():
        for pattern, repl in _DENSE_RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def convert(sd: StateDict, arch: Optional[str] = None, filename: Optional[str] = None) -> LayoutResult:
    sd = strip_prefix(sd, "module.")
    if "features.conv0.weight" in sd:
        sd = rename_densenet(sd)
    hints = {}
    if filename and "64f" in filename:
        hints["frames"] = 64
    return LayoutResult(add_missing_batch_counters(sd), layout=KENSHOHARA2017,
                        input_preset="kenshohara2017", arch_hint=arch, hints=hints)
