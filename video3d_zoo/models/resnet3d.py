"""3D ResNet, Wide ResNet and ResNeXt, plus torchvision's R3D-18 and MC3-18.

Provenance
----------
* Hara, Kataoka & Satoh, "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and
  ImageNet?", CVPR 2018; code github.com/kenshohara/3D-ResNets-PyTorch, both the CVPR2018
  branch (2017 weights: ``resnet-*-kinetics.pth``, ``wideresnet-50``, ``resnext-101``) and
  the 2020 rewrite (``r3d*_K/KM_200ep.pth``).
* Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition",
  CVPR 2018, as packaged by ``torchvision.models.video`` (``r3d_18``, ``mc3_18``).

One implementation covers all of them:

* stem: ``kt x 7 x 7`` convolution (stride ``stem_stride_t x 2 x 2``) + BN + ReLU, then an
  optional 3x3x3 max-pool (stride 2 in T, H, W).  Kenshohara models: kt = 7 with max-pool;
  torchvision: kt = 3 without.
* blocks: basic (two ``kt x 3 x 3`` convolutions) or bottleneck (1x1x1, ``kt x 3 x 3``
  with the stride and ``cardinality`` groups, 1x1x1).  ``expansion`` is 4 for ResNet, 2 for
  WRN and ResNeXt.  ResNeXt mid width is ``cardinality * planes // 32`` as in the original.
* shortcut "A" (zero-padding, the 2017 ResNet-18/34 weights) or "B" (1x1x1 conv + BN).
* ``widen_factor`` scales every stage width and the stem (2020 ``--resnet_widen_factor``;
  a different network from WRN-50 k=2, which has expansion 2).
* ``stem_width``: 64 for the 2017 WRN-50 / ResNeXt layouts; the 2020 code uses the first
  stage width (128 for its WRN and ResNeXt).

Differences from the originals: global adaptive pooling replaces the 2017 fixed
``AvgPool3d`` (identical at the trained 16x112x112 / 64x112x112 sizes); shortcut A lets the
gradient through the identity part, where the 2017 code detached it (inference is identical).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..layers import RESNET_DEPTHS as DEPTH_LAYERS
from ..layers import ResNetTrunk, Triple, make_drop_path
from .layout import (LayoutReading, depth_for, first_block_widths, has_conv, block_input_normalised,
                      non_defaults, residual_block, shape_or_none, shortcut_kwargs, stage_block_counts,
                      tensor_shape, widen_kwargs)
from .registry import FamilySpec, register_family, register_model

#: Stage widths (``planes``) of the 3D ResNet; WRN-50 and ResNeXt use the doubled ones, with
#: the 2017 layout's 64-channel stem.
STAGE_WIDTHS = (64, 128, 256, 512)
WIDE_STAGE_WIDTHS = (128, 256, 512, 1024)
WIDE_STEM_WIDTH = 64
RESNEXT_CARDINALITY = 32


class BasicBlock3d(nn.Module):
    fusable_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_planes: int, planes: int, stride: Triple = (1, 1, 1),
                 downsample: Optional[nn.Module] = None, kernel_t: int = 3, drop_path: float = 0.0) -> None:
        super().__init__()
        kernel, padding = (kernel_t, 3, 3), (kernel_t // 2, 1, 1)
        self.conv1 = nn.Conv3d(in_planes, planes, kernel, stride=stride, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = make_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(self.drop_path(out) + identity)


class Bottleneck3d(nn.Module):
    fusable_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, in_planes: int, mid_planes: int, out_planes: int, stride: Triple = (1, 1, 1),
                 downsample: Optional[nn.Module] = None, kernel_t: int = 3, groups: int = 1,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, mid_planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid_planes)
        self.conv2 = nn.Conv3d(mid_planes, mid_planes, (kernel_t, 3, 3), stride=stride,
                               padding=(kernel_t // 2, 1, 1), groups=groups, bias=False)
        self.bn2 = nn.BatchNorm3d(mid_planes)
        self.conv3 = nn.Conv3d(mid_planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = make_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.drop_path(out) + identity)


class ResNet3d(ResNetTrunk):
    """3D ResNet / WRN / ResNeXt (see the module docstring for every option)."""

    def __init__(self, block: str = "bottleneck", layers: Sequence[int] = (3, 4, 6, 3),
                 stage_widths: Sequence[int] = STAGE_WIDTHS, num_classes: int = 400,
                 in_chans: int = 3, shortcut_type: str = "B", widen_factor: float = 1.0,
                 expansion: Optional[int] = None, cardinality: int = 1,
                 stem_width: Optional[int] = None, stem_kernel_t: int = 7, stem_stride_t: int = 1,
                 stem_max_pool: bool = True, stem_pool_kernel_t: int = 3,
                 block_kernel_t: Sequence[int] = (3, 3, 3, 3),
                 stage_stride_t: Sequence[int] = (1, 2, 2, 2), drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: Optional[str] = "avg",
                 init_weights: bool = True) -> None:
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if block == "basic" and cardinality != 1:
            raise ValueError("grouped convolutions (cardinality > 1) need bottleneck blocks")
        if len(block_kernel_t) != 4:
            raise ValueError(f"block_kernel_t needs 4 entries, got {tuple(block_kernel_t)}")
        self.block = block
        self.expansion = expansion or (1 if block == "basic" else 4)
        self.cardinality = int(cardinality)
        self.block_kernel_t = tuple(int(k) for k in block_kernel_t)
        self._stem_args = (int(stem_kernel_t), int(stem_stride_t), bool(stem_max_pool), int(stem_pool_kernel_t))
        widths = [int(w * widen_factor) for w in stage_widths]
        stem = int(stem_width * widen_factor) if stem_width else widths[0]
        super().__init__(layers, widths, stem, num_classes=num_classes, in_chans=in_chans,
                         shortcut_type=shortcut_type, stage_stride_t=stage_stride_t,
                         drop_rate=drop_rate, drop_path_rate=drop_path_rate, global_pool=global_pool,
                         init_weights=init_weights)

    def make_stem(self, in_chans: int, width: int) -> None:
        kernel_t, stride_t, max_pool, pool_kernel_t = self._stem_args
        self.add_standard_stem(in_chans, width, kernel_t, stride_t, max_pool, pool_kernel_t)

    def make_block(self, stage, in_planes, planes, stride, downsample, drop_path=0.0):
        kernel_t = self.block_kernel_t[stage]
        if self.block == "basic":
            return BasicBlock3d(in_planes, planes, stride, downsample, kernel_t, drop_path=drop_path)
        mid = self.cardinality * planes // 32 if self.cardinality > 1 else planes
        return Bottleneck3d(in_planes, mid, planes * self.expansion, stride, downsample,
                            kernel_t, self.cardinality, drop_path=drop_path)


def _resnet3d(depth: int, **kwargs) -> ResNet3d:
    block, layers = DEPTH_LAYERS[depth]
    return ResNet3d(block=block, layers=layers, **kwargs)


def _resnext3d(depth: int, **kwargs) -> ResNet3d:
    kwargs.setdefault("stem_width", WIDE_STEM_WIDTH)
    kwargs.setdefault("cardinality", RESNEXT_CARDINALITY)
    kwargs.setdefault("stage_widths", WIDE_STAGE_WIDTHS)
    kwargs.setdefault("expansion", 2)
    return _resnet3d(depth, **kwargs)


@register_model(family="resnet3d", aliases=("resnet10_3d",), origin="kenshohara")
def resnet3d_10(**kwargs) -> ResNet3d:
    """3D ResNet-10 (Hara et al. 2018); 2017 and 2020 Kinetics weights.
    Options: shortcut_type, widen_factor, stem_kernel_t, stem_stride_t, stem_max_pool.
    """
    return _resnet3d(10, **kwargs)


@register_model(family="resnet3d", aliases=("resnet18_3d",), origin="kenshohara")
def resnet3d_18(**kwargs) -> ResNet3d:
    """3D ResNet-18 (Hara et al. 2018); 2017 and 2020 Kinetics weights.
    Options: shortcut_type, widen_factor, stem_kernel_t, stem_stride_t, stem_max_pool.
    """
    return _resnet3d(18, **kwargs)


@register_model(family="resnet3d", aliases=("resnet34_3d",), origin="kenshohara")
def resnet3d_34(**kwargs) -> ResNet3d:
    """3D ResNet-34 (Hara et al. 2018); 2017 and 2020 Kinetics weights.
    Options: shortcut_type, widen_factor, stem_kernel_t, stem_stride_t, stem_max_pool.
    """
    return _resnet3d(34, **kwargs)


@register_model(family="resnet3d", aliases=("resnet50_3d",), origin="kenshohara")
def resnet3d_50(**kwargs) -> ResNet3d:
    """3D ResNet-50 (Hara et al. 2018); 2017 and 2020 Kinetics weights.
    Options: shortcut_type, widen_factor, stem_kernel_t, stem_stride_t, stem_max_pool.
    """
    return _resnet3d(50, **kwargs)


@register_model(family="resnet3d", aliases=("resnet101_3d",), origin="kenshohara")
def resnet3d_101(**kwargs) -> ResNet3d:
    """3D ResNet-101 (Hara et al. 2018); 2017 and 2020 Kinetics weights.
    Options: shortcut_type, widen_factor, stem_kernel_t, stem_stride_t, stem_max_pool.
    """
    return _resnet3d(101, **kwargs)


@register_model(family="resnet3d", aliases=("resnet152_3d",), origin="kenshohara")
def resnet3d_152(**kwargs) -> ResNet3d:
    """3D ResNet-152 (Hara et al. 2018); 2017 and 2020 Kinetics weights.
    Options: shortcut_type, widen_factor, stem_kernel_t, stem_stride_t, stem_max_pool.
    """
    return _resnet3d(152, **kwargs)


@register_model(family="resnet3d", aliases=("resnet200_3d",), origin="kenshohara")
def resnet3d_200(**kwargs) -> ResNet3d:
    """3D ResNet-200 (Hara et al. 2018); 2017 and 2020 Kinetics weights.
    Options: shortcut_type, widen_factor, stem_kernel_t, stem_stride_t, stem_max_pool.
    """
    return _resnet3d(200, **kwargs)


@register_model(family="wide_resnet3d", aliases=("wide_resnet50_3d", "wideresnet50_3d"),
                origin="kenshohara")
def wide_resnet3d_50(**kwargs) -> ResNet3d:
    """Wide 3D ResNet-50, k=2 (bottleneck expansion 2, 2048 features); 2017 layout, 64-channel stem.

    The 2020 code's WRN-50 is the same network with a 128-channel stem: ``stem_width=128``.
    """
    kwargs.setdefault("stem_width", WIDE_STEM_WIDTH)
    kwargs.setdefault("stage_widths", WIDE_STAGE_WIDTHS)
    kwargs.setdefault("expansion", 2)
    return _resnet3d(50, **kwargs)


@register_model(family="resnext3d", aliases=("resnext50_3d",), origin="kenshohara")
def resnext3d_50(**kwargs) -> ResNet3d:
    """3D ResNeXt-50, cardinality 32, 2048 features; 2017 layout (64-channel stem).
    The 2020 layout is stem_width=128.
    """
    return _resnext3d(50, **kwargs)


@register_model(family="resnext3d", aliases=("resnext101_3d",), origin="kenshohara")
def resnext3d_101(**kwargs) -> ResNet3d:
    """3D ResNeXt-101, cardinality 32, 2048 features; 2017 layout (64-channel stem).
    The 2020 layout is stem_width=128.
    """
    return _resnext3d(101, **kwargs)


@register_model(family="resnext3d", aliases=("resnext152_3d",), origin="kenshohara")
def resnext3d_152(**kwargs) -> ResNet3d:
    """3D ResNeXt-152, cardinality 32, 2048 features; 2017 layout (64-channel stem).
    The 2020 layout is stem_width=128.
    """
    return _resnext3d(152, **kwargs)


@register_model(family="resnext3d", aliases=("resnext200_3d",), origin="kenshohara")
def resnext3d_200(**kwargs) -> ResNet3d:
    """3D ResNeXt-200, cardinality 32, 2048 features; 2017 layout (64-channel stem).
    The 2020 layout is stem_width=128.
    """
    return _resnext3d(200, **kwargs)


# -- families: what their checkpoints look like --------------------------------------------------------
def _bottleneck_shape(sd) -> tuple:
    """(groups, expansion) of the first block: (1, 1) for basic blocks, (0, 0) if unreadable."""
    if residual_block(sd) == "basic":
        return 1, 1
    conv1, conv2, conv3 = (shape_or_none(sd, f"layer1.0.conv{i}.weight") for i in (1, 2, 3))
    if not (conv1 and conv2 and conv3) or len(conv2) < 2:
        return 0, 0
    return conv2[0] // conv2[1], conv3[0] // conv1[0]


def _post_activation(sd) -> bool:
    """A 3D ResNet trunk whose blocks start with a convolution (not a pre-activation BN)."""
    return has_conv(sd, "conv1.weight", "layer1.0.conv1.weight") and not block_input_normalised(sd)


def _is_resnet(sd) -> bool:
    groups, expansion = _bottleneck_shape(sd)
    return _post_activation(sd) and groups == 1 and expansion != 2


def _is_wide_resnet(sd) -> bool:
    return _post_activation(sd) and residual_block(sd) == "bottleneck" and _bottleneck_shape(sd) == (1, 2)


def _is_resnext(sd) -> bool:
    return _post_activation(sd) and residual_block(sd) == "bottleneck" and _bottleneck_shape(sd)[0] > 1


def _read_trunk(sd, family: str):
    """Depth, stage widths and the family-specific kwargs of a post-activation trunk."""
    block = residual_block(sd)
    depth = depth_for(DEPTH_LAYERS, block, stage_block_counts(sd), family)
    kwargs = shortcut_kwargs(sd)
    if block == "basic":
        return depth, first_block_widths(sd, "conv1"), kwargs
    groups, expansion = _bottleneck_shape(sd)
    if family == "resnext3d" and groups != RESNEXT_CARDINALITY:
        kwargs["cardinality"] = groups
    if family == "resnet3d" and expansion != 4:
        kwargs["expansion"] = expansion
    widths = [o // (expansion if groups == 1 else 2) for o in first_block_widths(sd, "conv3")]
    return depth, widths, kwargs


def _read_resnet_family(sd, family: str) -> LayoutReading:
    depth, widths, kwargs = _read_trunk(sd, family)
    wide = family in ("wide_resnet3d", "resnext3d")
    kwargs.update(widen_kwargs(widths, WIDE_STAGE_WIDTHS if wide else STAGE_WIDTHS))
    stem_out, _, stem_kt = tensor_shape(sd, "conv1.weight")[:3]
    default_stem = int(WIDE_STEM_WIDTH * kwargs.get("widen_factor", 1.0)) if wide else widths[0]
    if stem_out != default_stem:
        if "widen_factor" in kwargs:  # an explicit stem needs explicit widths to stay exact
            del kwargs["widen_factor"]
            kwargs["stage_widths"] = tuple(widths)
        kwargs["stem_width"] = stem_out
    conv_t = "conv2" if residual_block(sd) == "bottleneck" else "conv1"
    kernels = tuple(tensor_shape(sd, f"layer{i}.0.{conv_t}.weight")[2] for i in range(1, 5))
    kwargs.update(non_defaults(ResNet3d, stem_kernel_t=stem_kt, block_kernel_t=kernels))
    if family == "wide_resnet3d" and depth != 50:  # only WRN-50 is registered: a widened ResNet
        kwargs.pop("widen_factor", None)
        kwargs.update(stage_widths=tuple(widths), expansion=2, stem_width=stem_out)
        return LayoutReading(f"resnet3d_{depth}", kwargs, depth)
    return LayoutReading(f"{family}_{depth}", kwargs, depth)


register_family(FamilySpec(
    name="resnet3d", title="3D ResNet", stem_conv="conv1", classifier="fc",
    tiny_kwargs={"widen_factor": 0.125}, regularisers=("drop_path_rate",), recognise=_is_resnet,
    read_layout=lambda sd: _read_resnet_family(sd, "resnet3d"), arch_names=("resnet",)))
register_family(FamilySpec(
    name="wide_resnet3d", title="Wide 3D ResNet", stem_conv="conv1", classifier="fc",
    tiny_kwargs={"widen_factor": 0.125}, regularisers=("drop_path_rate",), recognise=_is_wide_resnet,
    read_layout=lambda sd: _read_resnet_family(sd, "wide_resnet3d"), arch_names=("wideresnet",)))
register_family(FamilySpec(
    name="resnext3d", title="3D ResNeXt", stem_conv="conv1", classifier="fc",
    tiny_kwargs={"widen_factor": 0.25}, regularisers=("drop_path_rate",), recognise=_is_resnext,
    read_layout=lambda sd: _read_resnet_family(sd, "resnext3d"), arch_names=("resnext",)))
