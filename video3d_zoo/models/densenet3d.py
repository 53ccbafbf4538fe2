"""3D DenseNet (Huang et al. 2017, "Densely Connected Convolutional Networks", in 3D).

Provenance: github.com/kenshohara/3D-ResNets-PyTorch ``models/densenet.py``, CVPR2018 branch
(released ``densenet-121-kinetics.pth``, ``densenet-201-kinetics.pth``) and the 2020 rewrite.

Stem: 7x7x7 conv (stride 1,2,2; the 2020 code allows ``stem_kernel_t`` / ``stem_stride_t``),
BN, ReLU, 3x3x3 max-pool (stride 2).  Dense layers are BN-ReLU-1x1x1 conv (``bn_size *
growth_rate``)-BN-ReLU-3x3x3 conv (``growth_rate``), concatenated; transitions halve the
channels (BN-ReLU-1x1x1 conv) and average-pool 2x2x2.  After ``norm5`` a ReLU, global
average pooling and the ``classifier``.  Parameter names follow the 2020 code
(``features.conv1``, ``features.norm1``, ``denselayerM.norm1/conv1/norm2/conv2``); the 2017
names (``conv0``, ``norm0``, ``norm.1``, ...) are converted on load.

Difference from the 2017 original: it pooled with a fixed ``AvgPool3d`` of
``(ceil(T/16), floor(112/32), floor(112/32))``, which equals global pooling at 16x112x112.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import VideoClassifier, init_conv_bn
from .layout import LayoutReading, depth_of, has_conv, non_defaults, tensor_shape
from .registry import FamilySpec, register_family, register_model

DEPTH_BLOCKS = {
    121: (6, 12, 24, 16),
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
    264: (6, 12, 64, 48),
}


class DenseLayer3d(nn.Sequential):
    # Pre-activation layer: only the bottleneck conv is followed directly by a BN.
    fusable_pairs = (("conv1", "norm2"),)

    def __init__(self, in_features: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__(OrderedDict([
            ("norm1", nn.BatchNorm3d(in_features)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv3d(in_features, bn_size * growth_rate, 1, bias=False)),
            ("norm2", nn.BatchNorm3d(bn_size * growth_rate)),
            ("relu2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv3d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)),
        ]))
        self.drop_rate = float(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = super().forward(x)
        if self.drop_rate > 0:
            new = F.dropout(new, p=self.drop_rate, training=self.training)
        return torch.cat([x, new], 1)


class Transition3d(nn.Sequential):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm3d(in_features)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv3d(in_features, out_features, 1, bias=False)),
            ("pool", nn.AvgPool3d(kernel_size=2, stride=2)),
        ]))


class DenseNet3d(VideoClassifier):
    """3D DenseNet; ``features`` is one ``nn.Sequential`` as in the original.

    Stage ``i`` is ``transition{i}`` (from the second on) then ``denseblock{i+1}``; its output is
    the dense block's.  ``norm5`` + ReLU is the final normalisation (``forward_norm``).
    """

    head_name = "classifier"
    norm_modules = ("features.norm5",)
    fixed_by_name = ("block_config",)

    def __init__(self, block_config: Sequence[int] = (6, 12, 24, 16), growth_rate: int = 32,
                 num_init_features: int = 64, bn_size: int = 4, num_classes: int = 400,
                 in_chans: int = 3, stem_kernel_t: int = 7, stem_stride_t: int = 1,
                 stem_max_pool: bool = True, drop_rate: float = 0.0, block_drop_rate: float = 0.0,
                 global_pool: Optional[str] = "avg", init_weights: bool = True) -> None:
        super().__init__(in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        kt = int(stem_kernel_t)
        stem = [
            ("conv1", nn.Conv3d(in_chans, num_init_features, (kt, 7, 7), stride=(stem_stride_t, 2, 2),
                                padding=(kt // 2, 3, 3), bias=False)),
            ("norm1", nn.BatchNorm3d(num_init_features)),
            ("relu1", nn.ReLU(inplace=True)),
        ]
        self._spine_op((kt, 7, 7), (stem_stride_t, 2, 2), (kt // 2, 3, 3))
        if stem_max_pool:
            stem.append(("pool1", nn.MaxPool3d(kernel_size=3, stride=2, padding=1)))
            self._spine_op(3, 2, 1)
        self.features = nn.Sequential(OrderedDict(stem))
        self.features.fusable_pairs = (("conv1", "norm1"),)
        self._stem_names = tuple(name for name, _ in stem)
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = nn.Sequential(OrderedDict(
                (f"denselayer{j + 1}", DenseLayer3d(channels + j * growth_rate, growth_rate, bn_size,
                                                    block_drop_rate))
                for j in range(num_layers)))
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += num_layers * growth_rate
            parts = ([f"features.transition{i}"] if i else []) + [f"features.denseblock{i + 1}"]
            self._add_stage(f"features.denseblock{i + 1}", channels, parts)
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition3d(channels, channels // 2))
                self._spine_op(2, 2, 0)
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm3d(channels))
        self._init_head(channels, num_classes)
        if init_weights:
            init_conv_bn(self)
            if isinstance(self.classifier, nn.Linear):
                nn.init.zeros_(self.classifier.bias)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._stem_names:
            x = getattr(self.features, name)(x)
        return x

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.features.norm5(x))

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        if coarse:  # a transition goes with the dense block before it
            blocks: Any = r"^features\.(?:denseblock|transition)(\d+)\."
        else:  # one group per dense layer; transition i after the layers of block i
            blocks = [(r"^features\.denseblock(\d+)\.denselayer(\d+)\.", None),
                      (r"^features\.transition(\d+)\.", (99999,))]
        return {"stem": self._stem_matcher(), "blocks": blocks}


def _densenet(depth: int, **kwargs) -> DenseNet3d:
    return DenseNet3d(block_config=DEPTH_BLOCKS[depth], **kwargs)


@register_model(family="densenet3d", aliases=("densenet121_3d",), origin="kenshohara")
def densenet3d_121(**kwargs) -> DenseNet3d:
    """3D DenseNet-121, growth rate 32 (2017 Kinetics weights)."""
    return _densenet(121, **kwargs)


@register_model(family="densenet3d", aliases=("densenet169_3d",), origin="kenshohara")
def densenet3d_169(**kwargs) -> DenseNet3d:
    """3D DenseNet-169, growth rate 32."""
    return _densenet(169, **kwargs)


@register_model(family="densenet3d", aliases=("densenet201_3d",), origin="kenshohara")
def densenet3d_201(**kwargs) -> DenseNet3d:
    """3D DenseNet-201, growth rate 32 (2017 Kinetics weights)."""
    return _densenet(201, **kwargs)


@register_model(family="densenet3d", aliases=("densenet264_3d",), origin="kenshohara")
def densenet3d_264(**kwargs) -> DenseNet3d:
    """3D DenseNet-264, growth rate 32."""
    return _densenet(264, **kwargs)


def _is_densenet(sd) -> bool:
    return has_conv(sd, "features.conv1.weight", "features.denseblock1.denselayer1.conv1.weight")


def _dense_block_config(sd) -> tuple:
    config = []
    for block in range(1, 5):
        layers = {int(m.group(1)) for k in sd
                  for m in [re.match(rf"features\.denseblock{block}\.denselayer(\d+)\.", k)] if m}
        if not layers:
            break
        config.append(max(layers))
    return tuple(config)


def _read_densenet(sd) -> LayoutReading:
    depth = depth_of(DEPTH_BLOCKS, _dense_block_config(sd), "densenet3d", "layers per dense block")
    init_features, _, stem_kt = tensor_shape(sd, "features.conv1.weight")[:3]
    growth = tensor_shape(sd, "features.denseblock1.denselayer1.conv2.weight")[0]
    bn_size = tensor_shape(sd, "features.denseblock1.denselayer1.conv1.weight")[0] // growth
    kwargs = non_defaults(DenseNet3d, growth_rate=growth, num_init_features=init_features, bn_size=bn_size,
                          stem_kernel_t=stem_kt)
    return LayoutReading(f"densenet3d_{depth}", kwargs, depth)


register_family(FamilySpec(
    name="densenet3d", title="3D DenseNet", stem_conv="features.conv1", classifier="classifier",
    tiny_kwargs={"growth_rate": 4, "num_init_features": 8, "bn_size": 2}, regularisers=("block_drop_rate",),
    recognise=_is_densenet,
    read_layout=_read_densenet, arch_names=("densenet",)))
