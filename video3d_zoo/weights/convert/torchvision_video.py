"""torchvision video ResNet state dicts (``r3d_18``, ``mc3_18``, ``r2plus1d_18``) -> zoo layout.

torchvision keeps its stem in ``stem.*`` and wraps every convolution with its BatchNorm in a
``Sequential`` (``layerX.Y.conv1.0`` conv, ``conv1.1`` BN; for R(2+1)D ``conv1.0.0`` spatial
conv, ``conv1.0.1`` its BN, ``conv1.0.3`` temporal conv).  The files are bare state dicts.
Which of the three networks a file holds is read by the ``torchvision_video`` model family.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Optional

from ...models.layout import TORCHVISION
from .common import LayoutResult, StateDict

_R3D_RENAMES = (
    (re.compile(r"^stem\.0\."), "conv1."),
    (re.compile(r"^stem\.1\."), "bn1."),
    (re.compile(r"\.conv([12])\.0\."), r".conv\1."),
    (re.compile(r"\.conv([12])\.1\."), r".bn\1."),
)

_R2PLUS1D_RENAMES = (
    (re.compile(r"^stem\.0\."), "conv1_s."),
    (re.compile(r"^stem\.1\."), "bn1_s."),
    (re.compile(r"^stem\.3\."), "conv1_t."),
    (re.compile(r"^stem\.4\."), "bn1_t."),
    (re.compile(r"\.conv([12])\.0\.0\."), r".conv\1_s."),
    (re.compile(r"\.conv([12])\.0\.1\."), r".bn\1_s."),
    (re.compile(r"\.conv([12])\.0\.3\."), r".conv\1_t."),
    (re.compile(r"\.conv([12])\.1\."), r".bn\1_t."),
)


def is_torchvision_layout(sd: StateDict) -> bool:
    return "stem.0.weight" in sd and ("layer1.0.conv1.0.weight" in sd or "layer1.0.conv1.0.0.weight" in sd)


def convert(sd: StateDict, arch: Optional[str] = None, filename: Optional[str] = None) -> LayoutResult:
    factorised = "layer1.0.conv1.0.0.weight" in sd
    renames = _R2PLUS1D_RENAMES if factorised else _R3D_RENAMES
    out: StateDict = OrderedDict()
    for key, value in sd.items():
        for pattern, repl in renames:
            key = pattern.sub(repl, key)
        out[key] = value
    return LayoutResult(out, layout=TORCHVISION, input_preset="torchvision")
