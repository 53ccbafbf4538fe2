"""Residual building blocks: shortcuts, :class:`ResNetTrunk`, the ResNet depth table and :func:`adapt_input_conv`."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .classifier import Triple, VideoClassifier, triple
from .regularize import drop_path_rates


# Block type and blocks per stage of the ResNet-style depths, shared by every residual family.
RESNET_DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}





def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions and unit BatchNorm, as the original code does."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm3d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ZeroPadShortcut(nn.Module):
    """Shortcut type A: subsample by ``stride`` and append zero channels (no parameters)."""

    def __init__(self, out_channels: int, stride: Triple) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st, sh, sw = self.stride
        x = x[:, :, ::st, ::sh, ::sw]
        extra = self.out_channels - x.shape[1]
        if extra > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, extra))
        return x


class ConvBnShortcut(nn.Sequential):
    """Shortcut type B: 1x1x1 convolution (strided) followed by BatchNorm (keys ``0.*``, ``1.*``)."""

    fusable_pairs = (("0", "1"),)

    def __init__(self, in_planes: int, out_planes: int, stride: Triple) -> None:
        super().__init__(nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm3d(out_planes))


def conv_bn_shortcut(in_planes: int, out_planes: int, stride: Triple) -> nn.Sequential:
    return ConvBnShortcut(in_planes, out_planes, stride)


def make_shortcut(shortcut_type: str, in_planes: int, out_planes: int, stride: Triple) -> Optional[nn.Module]:
    if shortcut_type not in ("A", "B"):
        raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}")
    if stride == (1, 1, 1) and in_planes == out_planes:
        return None
    if shortcut_type == "A":
        return ZeroPadShortcut(out_planes, stride)
    return conv_bn_shortcut(in_planes, out_planes, stride)


class ResNetTrunk(VideoClassifier):
    """Stem, four residual stages ``layer1..layer4`` and a linear head.

    ``drop_path_rate``: stochastic depth of the residual branches, rising linearly from 0 at the
    first block to this rate at the last (identity in eval mode; 0 builds no extra op).
    Subclasses provide ``expansion`` (output channels per ``planes``), :meth:`make_stem`
    and :meth:`make_block`.  Stage ``i`` (0-based) has ``planes = stage_widths[i]``,
    spatial stride 1 then 2, and temporal stride ``stage_stride_t[i]``.
    """

    expansion = 1
    fusable_pairs: Tuple[Tuple[str, str], ...] = (("conv1", "bn1"),)
    #: constructor arguments every registered name of the family fixes (create_model refuses them)
    fixed_by_name: Tuple[str, ...] = ("block", "layers")

    def __init__(self, layers: Sequence[int], stage_widths: Sequence[int], stem_width: int,
                 num_classes: int = 400, in_chans: int = 3, shortcut_type: str = "B",
                 stage_stride_t: Sequence[int] = (1, 2, 2, 2), drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: Optional[str] = "avg",
                 init_weights: bool = True) -> None:
        super().__init__(in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        if len(layers) != 4 or len(stage_widths) != 4 or len(stage_stride_t) != 4:
            raise ValueError("layers, stage_widths and stage_stride_t need 4 entries each")
        if any(int(n) < 1 for n in layers):
            raise ValueError(f"every stage needs at least one block, got layers={tuple(layers)}")
        self.shortcut_type = shortcut_type
        self.drop_path_rate = float(drop_path_rate)
        rates = drop_path_rates(drop_path_rate, sum(int(n) for n in layers))
        self.make_stem(in_chans, stem_width)
        in_planes = stem_width
        for i, (blocks, planes) in enumerate(zip(layers, stage_widths)):
            stride = (int(stage_stride_t[i]), 1 if i == 0 else 2, 1 if i == 0 else 2)
            stage_rates, rates = rates[:int(blocks)], rates[int(blocks):]
            stage, in_planes = self._make_stage(i, in_planes, int(planes), int(blocks), stride, stage_rates)
            setattr(self, f"layer{i + 1}", stage)
            self._spine_op((3, 3, 3), stride, (1, 1, 1))
            self._add_stage(f"layer{i + 1}", in_planes)
        self._init_head(in_planes, num_classes)
        if init_weights:
            init_conv_bn(self)

    def make_stem(self, in_chans: int, width: int) -> None:
        raise NotImplementedError

    def make_block(self, stage: int, in_planes: int, planes: int, stride: Triple,
                   downsample: Optional[nn.Module], drop_path: float = 0.0) -> nn.Module:
        """One residual block; ``drop_path`` is its stochastic-depth rate (see :func:`make_drop_path`)."""
        raise NotImplementedError

    def _make_stage(self, stage: int, in_planes: int, planes: int, blocks: int, stride: Triple,
                    rates: Sequence[float]):
        out_planes = planes * self.expansion
        downsample = make_shortcut(self.shortcut_type, in_planes, out_planes, stride)
        modules = [self.make_block(stage, in_planes, planes, stride, downsample, drop_path=rates[0])]
        for j in range(1, blocks):
            modules.append(self.make_block(stage, out_planes, planes, (1, 1, 1), None, drop_path=rates[j]))
        return nn.Sequential(*modules), out_planes

    def add_standard_stem(self, in_chans: int, width: int, kernel_t: int, stride_t: int,
                          max_pool: bool, pool_kernel_t: int = 3) -> None:
        """conv (kt x 7 x 7, stride t x 2 x 2) + BN + ReLU [+ max-pool], as ``conv1``/``bn1``/``maxpool``."""
        self.conv1 = nn.Conv3d(in_chans, width, kernel_size=(kernel_t, 7, 7), stride=(stride_t, 2, 2),
                               padding=(kernel_t // 2, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self._spine_op((kernel_t, 7, 7), (stride_t, 2, 2), (kernel_t // 2, 3, 3))
        self.maxpool = self._make_max_pool(max_pool, pool_kernel_t)

    def _make_max_pool(self, enabled: bool, kernel_t: int) -> nn.Module:
        if not enabled:
            return nn.Identity()
        kernel, stride, padding = (kernel_t, 3, 3), (min(2, kernel_t), 2, 2), (kernel_t // 2, 1, 1)
        self._spine_op(kernel, stride, padding)
        return nn.MaxPool3d(kernel_size=kernel, stride=stride, padding=padding)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return {"stem": self._stem_matcher(),
                "blocks": r"^layer(\d+)\." if coarse else r"^layer(\d+)\.(\d+)\."}


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Stem weights for ``in_chans`` input channels from weights trained on RGB.

    Rule: every new input channel gets the mean of the three RGB filters, scaled by
    ``3 / in_chans``.  A clip whose channels are all equal therefore produces exactly the
    response the RGB model gives to the matching gray clip: for 1 channel (grayscale, depth)
    this is the sum of the RGB filters; for 2 channels (optical flow x/y) each gets 1.5x the
    mean filter.  ``in_chans == 3`` returns the weights unchanged.
    """
    if weight.dim() != 5:
        raise ValueError(f"expected a 5-D Conv3d weight, got shape {tuple(weight.shape)}")
    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] != 3:
        raise ValueError(f"can adapt RGB stem weights only, these take {weight.shape[1]} channels")
    mean = weight.mean(dim=1, keepdim=True) * (3.0 / in_chans)
    return mean.expand(-1, in_chans, -1, -1, -1).contiguous()
