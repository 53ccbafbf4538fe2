"""R(2+1)D: every 3D convolution factorised into a spatial 1xkxk and a temporal kx1x1 one.

Provenance: Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
Recognition", CVPR 2018.  Two released lineages, one implementation:

* github.com/kenshohara/3D-ResNets-PyTorch ``models/resnet2p1d.py`` (2020; released
  ``r2p1d18_K_200ep.pth`` and ``r2p1d34_K_200ep.pth``): every factorised conv picks its own
  mid width ``(27 * cin * cout) // (9 * cin + 3 * cout)`` (``mid_rule="per_conv"``); stem
  1x7x7 (stride 1,2,2) to ``(3 * 64 * kt * 49) // (147 + kt * 64)`` = 110 channels, BN, ReLU,
  kt x1x1 to 64; max-pool; depths 10-200 with bottlenecks from 50 on.
* ``torchvision.models.video.r2plus1d_18``: stem 1x7x7 to 45 channels, 3x1x1 to 64, no
  max-pool; both convolutions of a block share the mid width of its first
  (``mid_rule="per_block"``).

Spatial stride sits on the ``_s`` convolution, temporal stride on the ``_t`` one.  Parameter
names follow the 2020 code (``conv1_s``, ``bn1_s``, ``conv1_t``, ``bn1_t``, ...).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..layers import RESNET_DEPTHS as DEPTH_LAYERS
from ..layers import ResNetTrunk, Triple, make_drop_path
from .layout import (LayoutReading, count_blocks, depth_for, first_block_widths, has_conv, non_defaults,
                      residual_block, shortcut_kwargs, stage_block_counts, tensor_shape, widen_kwargs)
from .registry import FamilySpec, register_family, register_model

STAGE_WIDTHS = (64, 128, 256, 512)


def factorised_mid(in_planes: int, out_planes: int) -> int:
    """Mid width that gives a (2+1)D pair about the parameters of a 3x3x3 convolution."""
    return (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)


def stem_mid_width(width: int, kernel_t: int) -> int:
    """The 2020 code's stem mid width: a (2+1)D pair about as large as a kt x 7 x 7 conv from 3 channels
    (110 for 64 channels and kt = 7).  It assumes 3 input channels whatever ``in_chans`` is."""
    return (3 * width * kernel_t * 49) // (3 * 49 + kernel_t * width)


def spatial_conv(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)


def temporal_conv(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False)


class BasicBlock2plus1d(nn.Module):
    fusable_pairs = (("conv1_s", "bn1_s"), ("conv1_t", "bn1_t"), ("conv2_s", "bn2_s"), ("conv2_t", "bn2_t"))

    def __init__(self, in_planes: int, planes: int, stride: Triple = (1, 1, 1),
                 downsample: Optional[nn.Module] = None, mid_rule: str = "per_conv",
                 drop_path: float = 0.0) -> None:
        super().__init__()
        st, ss = stride[0], stride[1]
        mid1 = factorised_mid(in_planes, planes)
        mid2 = mid1 if mid_rule == "per_block" else factorised_mid(planes, planes)
        self.conv1_s = spatial_conv(in_planes, mid1, ss)
        self.bn1_s = nn.BatchNorm3d(mid1)
        self.conv1_t = temporal_conv(mid1, planes, st)
        self.bn1_t = nn.BatchNorm3d(planes)
        self.conv2_s = spatial_conv(planes, mid2)
        self.bn2_s = nn.BatchNorm3d(mid2)
        self.conv2_t = temporal_conv(mid2, planes)
        self.bn2_t = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = make_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1_s(self.conv1_s(x)))
        out = self.relu(self.bn1_t(self.conv1_t(out)))
        out = self.relu(self.bn2_s(self.conv2_s(out)))
        out = self.bn2_t(self.conv2_t(out))
        return self.relu(self.drop_path(out) + identity)


class Bottleneck2plus1d(nn.Module):
    fusable_pairs = (("conv1", "bn1"), ("conv2_s", "bn2_s"), ("conv2_t", "bn2_t"), ("conv3", "bn3"))

    def __init__(self, in_planes: int, planes: int, out_planes: int, stride: Triple = (1, 1, 1),
                 downsample: Optional[nn.Module] = None, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = factorised_mid(planes, planes)
        self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2_s = spatial_conv(planes, mid, stride[1])
        self.bn2_s = nn.BatchNorm3d(mid)
        self.conv2_t = temporal_conv(mid, planes, stride[0])
        self.bn2_t = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = make_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2_s(self.conv2_s(out)))
        out = self.relu(self.bn2_t(self.conv2_t(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.drop_path(out) + identity)


class R2Plus1d(ResNetTrunk):
    """R(2+1)D network; see the module docstring for the two released configurations."""

    fusable_pairs = (("conv1_s", "bn1_s"), ("conv1_t", "bn1_t"))

    def __init__(self, block: str = "basic", layers: Sequence[int] = (2, 2, 2, 2),
                 stage_widths: Sequence[int] = STAGE_WIDTHS, num_classes: int = 400,
                 in_chans: int = 3, shortcut_type: str = "B", widen_factor: float = 1.0,
                 stem_mid: Optional[int] = None, stem_kernel_t: int = 7, stem_stride_t: int = 1,
                 stem_max_pool: bool = True, mid_rule: str = "per_conv", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: Optional[str] = "avg",
                 init_weights: bool = True) -> None:
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if mid_rule not in ("per_conv", "per_block"):
            raise ValueError(f"mid_rule must be 'per_conv' or 'per_block', got {mid_rule!r}")
        if block == "bottleneck" and mid_rule != "per_conv":
            raise ValueError("bottleneck blocks have a single factorised conv; use mid_rule='per_conv'")
        self.block = block
        self.mid_rule = mid_rule
        self.expansion = 1 if block == "basic" else 4
        self._stem_args = (stem_mid, int(stem_kernel_t), int(stem_stride_t), bool(stem_max_pool))
        widths = [int(w * widen_factor) for w in stage_widths]
        super().__init__(layers, widths, widths[0], num_classes=num_classes, in_chans=in_chans,
                         shortcut_type=shortcut_type, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                         global_pool=global_pool, init_weights=init_weights)

    def make_stem(self, in_chans: int, width: int) -> None:
        stem_mid, kernel_t, stride_t, max_pool = self._stem_args
        mid = stem_mid or stem_mid_width(width, kernel_t)
        self.conv1_s = nn.Conv3d(in_chans, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn1_s = nn.BatchNorm3d(mid)
        self.conv1_t = nn.Conv3d(mid, width, (kernel_t, 1, 1), stride=(stride_t, 1, 1),
                                 padding=(kernel_t // 2, 0, 0), bias=False)
        self.bn1_t = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self._spine_op((kernel_t, 7, 7), (stride_t, 2, 2), (kernel_t // 2, 3, 3))
        self.maxpool = self._make_max_pool(max_pool, 3)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1_s(self.conv1_s(x)))
        x = self.relu(self.bn1_t(self.conv1_t(x)))
        return self.maxpool(x)

    def make_block(self, stage, in_planes, planes, stride, downsample, drop_path=0.0):
        if self.block == "basic":
            return BasicBlock2plus1d(in_planes, planes, stride, downsample, self.mid_rule, drop_path=drop_path)
        return Bottleneck2plus1d(in_planes, planes, planes * self.expansion, stride, downsample, drop_path=drop_path)


def _r2plus1d(depth: int, **kwargs) -> R2Plus1d:
    block, layers = DEPTH_LAYERS[depth]
    return R2Plus1d(block=block, layers=layers, **kwargs)


# torchvision owns the plain name "r2plus1d_18"; the 2020 18-layer net is suffixed.
@register_model(family="r2plus1d", aliases=("r2p1d10_3d",), origin="kenshohara")
def r2plus1d_10(**kwargs) -> R2Plus1d:
    """R(2+1)D-10, 2020 3D-ResNets-PyTorch layout (stem mid 110, per-conv mid widths)."""
    return _r2plus1d(10, **kwargs)


@register_model(family="r2plus1d", aliases=("r2p1d18_3d",), origin="kenshohara")
def r2plus1d_18_kenshohara(**kwargs) -> R2Plus1d:
    """R(2+1)D-18, 2020 3D-ResNets-PyTorch layout (stem mid 110, per-conv mid widths)."""
    return _r2plus1d(18, **kwargs)


@register_model(family="r2plus1d", aliases=("r2p1d34_3d",), origin="kenshohara")
def r2plus1d_34(**kwargs) -> R2Plus1d:
    """R(2+1)D-34, 2020 3D-ResNets-PyTorch layout (stem mid 110, per-conv mid widths)."""
    return _r2plus1d(34, **kwargs)


@register_model(family="r2plus1d", aliases=("r2p1d50_3d",), origin="kenshohara")
def r2plus1d_50(**kwargs) -> R2Plus1d:
    """R(2+1)D-50, 2020 3D-ResNets-PyTorch layout (stem mid 110, per-conv mid widths)."""
    return _r2plus1d(50, **kwargs)


@register_model(family="r2plus1d", aliases=("r2p1d101_3d",), origin="kenshohara")
def r2plus1d_101(**kwargs) -> R2Plus1d:
    """R(2+1)D-101, 2020 3D-ResNets-PyTorch layout (stem mid 110, per-conv mid widths)."""
    return _r2plus1d(101, **kwargs)


@register_model(family="r2plus1d", aliases=("r2p1d152_3d",), origin="kenshohara")
def r2plus1d_152(**kwargs) -> R2Plus1d:
    """R(2+1)D-152, 2020 3D-ResNets-PyTorch layout (stem mid 110, per-conv mid widths)."""
    return _r2plus1d(152, **kwargs)


@register_model(family="r2plus1d", aliases=("r2p1d200_3d",), origin="kenshohara")
def r2plus1d_200(**kwargs) -> R2Plus1d:
    """R(2+1)D-200, 2020 3D-ResNets-PyTorch layout (stem mid 110, per-conv mid widths)."""
    return _r2plus1d(200, **kwargs)


# -- family: what its checkpoints look like ------------------------------------------------------------
def _is_r2plus1d(sd) -> bool:
    return has_conv(sd, "conv1_s.weight", "conv1_t.weight") and 0 not in count_blocks(sd)


def _read_r2plus1d(sd) -> LayoutReading:
    block = residual_block(sd)
    depth = depth_for(DEPTH_LAYERS, block, stage_block_counts(sd), "r2plus1d")
    width, _, stem_kt = tensor_shape(sd, "conv1_t.weight")[:3]
    widths = first_block_widths(sd, "conv1_t" if block == "basic" else "conv1")
    kwargs = widen_kwargs(widths, STAGE_WIDTHS)
    kwargs.update(shortcut_kwargs(sd))
    if block == "basic" and tensor_shape(sd, "layer2.0.conv2_s.weight")[0] != factorised_mid(widths[1], widths[1]):
        kwargs["mid_rule"] = "per_block"
    kwargs.update(non_defaults(R2Plus1d, stem_kernel_t=stem_kt))
    if tensor_shape(sd, "conv1_s.weight")[0] != stem_mid_width(width, stem_kt):
        kwargs["stem_mid"] = tensor_shape(sd, "conv1_s.weight")[0]
    # torchvision owns the plain name "r2plus1d_18" (see models/torchvision_video.py)
    name = "r2plus1d_18_kenshohara" if depth == 18 else f"r2plus1d_{depth}"
    return LayoutReading(name, kwargs, depth)


register_family(FamilySpec(
    name="r2plus1d", title="R(2+1)D (2020 3D-ResNets-PyTorch)", stem_conv="conv1_s", classifier="fc",
    tiny_kwargs={"widen_factor": 0.125}, regularisers=("drop_path_rate",),
    recognise=_is_r2plus1d, read_layout=_read_r2plus1d,
    arch_names=("resnet2p1d",)))
