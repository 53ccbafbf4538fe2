"""C3D (Tran et al. 2015, "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV).

Eight 3x3x3 convolutions (stride 1, padding 1, each followed by a ReLU) in five groups of 64,
128, 256, 512 and 512 channels holding 1, 1, 2, 2 and 2 convolutions; each group ends in a
max-pool, 1x2x2 after the first (so early layers keep every frame) and 2x2x2 after the others.
Then two fully connected layers of 4096 (``fc6``, ``fc7``, each with a ReLU; dropout 0.5 in the
original) and the classifier (``fc8``).  No residual connections and no BatchNorm: the
convolutions carry biases, and BN folding finds nothing to fold.

The zoo's form of it:

* ``fc6`` and ``fc7`` are written as convolutions: ``fc6`` a 1x4x4 one over pool5's map (1 x 4 x 4
  for the paper's 16x112x112 clip), ``fc7`` a 1x1x1 one.  At 16x112x112 that is exactly the
  original's flatten + linear layers (the weight is the linear one, reshaped); on larger clips
  they slide over the map and the global average pooling averages them.  Their activations (the
  "C3D fc6 features") are stage outputs: ``forward_intermediates``, ``extract --layer fc6``.
* Stages (``feature_info``): the stem is ``conv1`` + ``pool1``; then ``conv2`` ... ``conv5`` (each
  ending with its pool), ``fc6`` and ``fc7``.
* ``pool5`` pads H and W by 1 (7 x 7 -> 4 x 4 at 112 pixels), as the common PyTorch port does.
  The smallest clip is therefore 16 x 96 x 96.
* ``widen_factor`` scales every width (the convolutions and the fc layers); the tests use tiny ones.
* ``fc6_drop_rate``: dropout after fc6 (0.5 in the original).  The dropout after fc7 is
  ``drop_rate``, before the classifier as in every zoo model.

Input: the paper resizes frames to 128x171 and crops 16x112x112 clips, the protocol of the
``torchvision`` input preset (torchvision's video models took it from C3D).  The manifest has no
C3D weights and the family reads no foreign checkpoints (no readers in its ``FamilySpec``):
C3D models load from the files ``save_pretrained`` writes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import VideoClassifier, init_conv_bn
from .registry import FamilySpec, register_family, register_model

WIDTHS = (64, 128, 256, 512, 512)  # conv1 .. conv5
CONVS = (1, 1, 2, 2, 2)  # convolutions per group: conv1a, conv2a, conv3a/b, conv4a/b, conv5a/b
FC_WIDTH = 4096
FC6_KERNEL = (1, 4, 4)  # pool5's map at the paper's 16x112x112 clip
MAX_WIDEN = 16.0


class ConvReLU3d(nn.Conv3d):
    """A biased 3x3x3 convolution (stride 1, padding 1) and its ReLU: one C3D block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, padding=1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x), inplace=True)


class C3D(VideoClassifier):
    """C3D; ``conv1``/``pool1`` are the stem, ``conv2`` ... ``conv5``, ``fc6`` and ``fc7`` the stages."""

    head_name = "fc8"

    def __init__(self, widen_factor: float = 1.0, num_classes: int = 400, in_chans: int = 3,
                 fc6_drop_rate: float = 0.0, drop_rate: float = 0.0, global_pool: Optional[str] = "avg",
                 init_weights: bool = True) -> None:
        super().__init__(in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        if (isinstance(widen_factor, bool) or not isinstance(widen_factor, (int, float))
                or not math.isfinite(widen_factor) or not 0 < widen_factor <= MAX_WIDEN):
            raise ValueError(f"widen_factor must be a number in (0, {MAX_WIDEN:g}], got {widen_factor!r}")
        if isinstance(fc6_drop_rate, bool) or not isinstance(fc6_drop_rate, (int, float)) \
                or not 0 <= fc6_drop_rate < 1:
            raise ValueError(f"fc6_drop_rate must be in [0, 1), got {fc6_drop_rate!r}")
        widths = [max(1, round(w * widen_factor)) for w in WIDTHS]
        fc_width = max(1, round(FC_WIDTH * widen_factor))
        self.conv1 = ConvReLU3d(in_chans, widths[0])
        self._spine_op(3, 1, 1)
        self.pool1 = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2))
        self._spine_op((1, 2, 2), (1, 2, 2), 0)
        for group in range(1, 5):
            self._add_conv_group(group, widths[group - 1], widths[group])
        self.fc6 = self._fc_stage(widths[-1], fc_width, FC6_KERNEL, fc6_drop_rate)
        self._spine_op(FC6_KERNEL, 1, 0)
        self._add_stage("fc6", fc_width)
        self.fc7 = self._fc_stage(fc_width, fc_width, 1, 0.0)
        self._add_stage("fc7", fc_width)
        self._init_head(fc_width, num_classes)
        if init_weights:
            init_conv_bn(self)
            for m in self.modules():
                if isinstance(m, nn.Conv3d):
                    nn.init.zeros_(m.bias)

    def _add_conv_group(self, group: int, in_width: int, width: int) -> None:
        """``conv{group+1}``: its convolutions ``a`` (``b``) then its max-pool, registered as a stage."""
        blocks = [("a", ConvReLU3d(in_width, width))]
        if CONVS[group] == 2:
            blocks.append(("b", ConvReLU3d(width, width)))
        padding = (0, 1, 1) if group == 4 else 0  # pool5: 7 x 7 -> 4 x 4 at 112 pixels
        blocks.append(("pool", nn.MaxPool3d(2, stride=2, padding=padding)))
        name = f"conv{group + 1}"
        self.add_module(name, nn.Sequential(OrderedDict(blocks)))
        self._spine_op(3, 1, 1)  # the convolutions keep the size
        self._spine_op(2, 2, padding)
        self._add_stage(name, width)

    @staticmethod
    def _fc_stage(in_width: int, width: int, kernel, drop_rate: float) -> nn.Sequential:
        blocks = [("conv", ConvReLU3d(in_width, width, kernel_size=kernel, padding=0))]
        if drop_rate > 0:  # rate 0 adds no op
            blocks.append(("drop", nn.Dropout(drop_rate)))
        return nn.Sequential(OrderedDict(blocks))

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool1(self.conv1(x))

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        if coarse:
            blocks: Any = [(r"^conv([2-5])\.", None), (r"^fc([67])\.", None)]
        else:  # one group per convolution: a before b
            blocks = [(r"^conv([2-5])\.a\.", (0,)), (r"^conv([2-5])\.b\.", (1,)), (r"^fc([67])\.", None)]
        return {"stem": self._stem_matcher(), "blocks": blocks}


@register_model(family="c3d", input_preset="torchvision", origin="tran2015")
def c3d(**kwargs) -> C3D:
    """C3D (Tran et al. 2015): eight 3x3x3 convolutions in five pooled groups, no residuals, no BatchNorm, fc6/fc7 of 4096."""
    return C3D(**kwargs)


register_family(FamilySpec(
    name="c3d", title="C3D", stem_conv="conv1", classifier="fc8",
    tiny_kwargs={"widen_factor": 1 / 32}, regularisers=("fc6_drop_rate",)))
