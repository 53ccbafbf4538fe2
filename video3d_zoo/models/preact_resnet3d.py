"""Pre-activation 3D ResNet (He et al. 2016 "identity mappings", in 3D).

Provenance: github.com/kenshohara/3D-ResNets-PyTorch ``models/pre_act_resnet.py`` of both the
CVPR2018 branch (released ``preresnet-200-kinetics.pth``) and the 2020 rewrite (no released
weights; its constructor only builds with a keyword fixed, see the golden case notes).

Each block is BN-ReLU-conv (x2 basic, x3 bottleneck); the shortcut (type A or B) is applied
to the block input before its BN.  As in the original there is no ReLU after the residual
addition and no final BN/ReLU after ``layer4``, so pooled features can be negative.
The stem is the 3D ResNet stem (7x7x7 conv, BN, ReLU, max-pool).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..layers import RESNET_DEPTHS as DEPTH_LAYERS
from ..layers import ResNetTrunk, Triple, make_drop_path
from .layout import (LayoutReading, block_input_normalised, depth_for, first_block_widths, has_conv,
                      non_defaults, residual_block, shortcut_kwargs, stage_block_counts, tensor_shape,
                      widen_kwargs)
from .registry import FamilySpec, register_family, register_model

STAGE_WIDTHS = (64, 128, 256, 512)


class PreActBasicBlock3d(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: Triple = (1, 1, 1),
                 downsample: Optional[nn.Module] = None, drop_path: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm3d(in_planes)
        self.conv1 = nn.Conv3d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = make_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return self.drop_path(out) + identity


class PreActBottleneck3d(nn.Module):
    def __init__(self, in_planes: int, planes: int, out_planes: int, stride: Triple = (1, 1, 1),
                 downsample: Optional[nn.Module] = None, drop_path: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm3d(in_planes)
        self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_planes, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = make_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return self.drop_path(out) + identity


class PreActResNet3d(ResNetTrunk):
    """Pre-activation 3D ResNet with the 3D ResNet stem."""

    def __init__(self, block: str = "bottleneck", layers: Sequence[int] = (3, 4, 6, 3),
                 stage_widths: Sequence[int] = STAGE_WIDTHS, num_classes: int = 400,
                 in_chans: int = 3, shortcut_type: str = "B", widen_factor: float = 1.0,
                 stem_kernel_t: int = 7, stem_stride_t: int = 1, stem_max_pool: bool = True,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: Optional[str] = "avg",
                 init_weights: bool = True) -> None:
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        self.block = block
        self.expansion = 1 if block == "basic" else 4
        self._stem_args = (int(stem_kernel_t), int(stem_stride_t), bool(stem_max_pool))
        widths = [int(w * widen_factor) for w in stage_widths]
        super().__init__(layers, widths, widths[0], num_classes=num_classes, in_chans=in_chans,
                         shortcut_type=shortcut_type, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                         global_pool=global_pool, init_weights=init_weights)

    def make_stem(self, in_chans: int, width: int) -> None:
        self.add_standard_stem(in_chans, width, *self._stem_args)

    def make_block(self, stage, in_planes, planes, stride, downsample, drop_path=0.0):
        if self.block == "basic":
            return PreActBasicBlock3d(in_planes, planes, stride, downsample, drop_path=drop_path)
        return PreActBottleneck3d(in_planes, planes, planes * self.expansion, stride, downsample, drop_path=drop_path)


def _preact(depth: int, **kwargs) -> PreActResNet3d:
    block, layers = DEPTH_LAYERS[depth]
    return PreActResNet3d(block=block, layers=layers, **kwargs)


@register_model(family="preact_resnet3d", aliases=("preact_resnet10_3d", "preresnet10_3d"), origin="kenshohara")
def preact_resnet3d_10(**kwargs) -> PreActResNet3d:
    """Pre-activation 3D ResNet-10."""
    return _preact(10, **kwargs)


@register_model(family="preact_resnet3d", aliases=("preact_resnet18_3d", "preresnet18_3d"), origin="kenshohara")
def preact_resnet3d_18(**kwargs) -> PreActResNet3d:
    """Pre-activation 3D ResNet-18."""
    return _preact(18, **kwargs)


@register_model(family="preact_resnet3d", aliases=("preact_resnet34_3d", "preresnet34_3d"), origin="kenshohara")
def preact_resnet3d_34(**kwargs) -> PreActResNet3d:
    """Pre-activation 3D ResNet-34."""
    return _preact(34, **kwargs)


@register_model(family="preact_resnet3d", aliases=("preact_resnet50_3d", "preresnet50_3d"), origin="kenshohara")
def preact_resnet3d_50(**kwargs) -> PreActResNet3d:
    """Pre-activation 3D ResNet-50."""
    return _preact(50, **kwargs)


@register_model(family="preact_resnet3d", aliases=("preact_resnet101_3d", "preresnet101_3d"), origin="kenshohara")
def preact_resnet3d_101(**kwargs) -> PreActResNet3d:
    """Pre-activation 3D ResNet-101."""
    return _preact(101, **kwargs)


@register_model(family="preact_resnet3d", aliases=("preact_resnet152_3d", "preresnet152_3d"), origin="kenshohara")
def preact_resnet3d_152(**kwargs) -> PreActResNet3d:
    """Pre-activation 3D ResNet-152."""
    return _preact(152, **kwargs)


@register_model(family="preact_resnet3d", aliases=("preact_resnet200_3d", "preresnet200_3d"), origin="kenshohara")
def preact_resnet3d_200(**kwargs) -> PreActResNet3d:
    """Pre-activation 3D ResNet-200 (2017 Kinetics weights exist)."""
    return _preact(200, **kwargs)


def _is_preact(sd) -> bool:
    return has_conv(sd, "conv1.weight", "layer1.0.conv1.weight") and block_input_normalised(sd)


def _read_preact(sd) -> LayoutReading:
    depth = depth_for(DEPTH_LAYERS, residual_block(sd), stage_block_counts(sd), "preact_resnet3d")
    kwargs = shortcut_kwargs(sd)
    kwargs.update(widen_kwargs(first_block_widths(sd, "conv1"), STAGE_WIDTHS))
    kwargs.update(non_defaults(PreActResNet3d, stem_kernel_t=tensor_shape(sd, "conv1.weight")[2]))
    return LayoutReading(f"preact_resnet3d_{depth}", kwargs, depth)


register_family(FamilySpec(
    name="preact_resnet3d", title="Pre-activation 3D ResNet", stem_conv="conv1", classifier="fc",
    tiny_kwargs={"widen_factor": 0.125}, regularisers=("drop_path_rate",),
    recognise=_is_preact, read_layout=_read_preact,
    arch_names=("preresnet",)))
