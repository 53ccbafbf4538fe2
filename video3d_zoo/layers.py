"""Building blocks shared by every model family.

* :class:`VideoClassifier` - the model interface every zoo model implements
  (``forward`` / ``forward_features`` / ``forward_head`` / ``reset_classifier`` /
  ``feature_info`` / input checking with a stated minimum size).
* :class:`ResNetTrunk` - stem + four residual stages + head, parametrised by a block factory;
  the ResNet, pre-activation ResNet and R(2+1)D families subclass it.
* :class:`ZeroPadShortcut` - the parameter-free shortcut "A" of the 2017 ResNet-18/34 weights.
* :func:`adapt_input_conv` - the rule that turns RGB stem weights into 1-, 2- or N-channel ones.

Parameter names follow the 2020 3D-ResNets-PyTorch layout (``conv1``, ``bn1``, ``layerN.M.*``,
``downsample.0/1``, ``fc``), so checkpoints of that release load without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputShapeError

Triple = Tuple[int, int, int]

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


def triple(value) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"expected an int or 3 ints, got {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class FeatureInfo:
    """One stage of a model: its module name, output channels and cumulative reduction."""

    module: str
    num_chs: int
    reduction_t: int
    reduction_s: int

    def to_dict(self) -> dict:
        return {"module": self.module, "num_chs": self.num_chs,
                "reduction_t": self.reduction_t, "reduction_s": self.reduction_s}


def _out_len(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def min_length(ops: Sequence[Tuple[int, int, int]], limit: int = 4096) -> int:
    """Smallest input length for which every (kernel, stride, padding) op yields >= 1."""
    for n in range(1, limit):
        size, ok = n, True
        for kernel, stride, padding in ops:
            size = _out_len(size, kernel, stride, padding)
            if size < 1:
                ok = False
                break
        if ok:
            return n
    raise ValueError("no input length up to the limit fits these operations")


class VideoClassifier(nn.Module):
    """Base class: a clip (N x C x T x H x W) in, class logits out.

    Any module may list ``fusable_pairs``: ``(conv, bn)`` attribute names where the BatchNorm
    directly follows the convolution, so inference can fold it (see ``video3d_zoo.inference``).

    Subclasses build their layers, call :meth:`_spine_op` for every op that changes the
    size of the feature map (in forward order) and :meth:`_add_stage` after each stage,
    then :meth:`_init_head`.  They implement :meth:`forward_features`.
    """

    head_name = "fc"

    def __init__(self, in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        self.num_classes = 0
        self.num_features = 0
        self.feature_info: List[FeatureInfo] = []
        self._ops_t: List[Tuple[int, int, int]] = []
        self._ops_s: List[Tuple[int, int, int]] = []
        self._reduction = [1, 1]
        self.min_input_size: Triple = (1, 1, 1)

    # -- construction helpers -------------------------------------------------------------
    def _spine_op(self, kernel, stride, padding) -> None:
        k, s, p = triple(kernel), triple(stride), triple(padding)
        self._ops_t.append((k[0], s[0], p[0]))
        self._ops_s.append((k[1], s[1], p[1]))
        self._reduction[0] *= s[0]
        self._reduction[1] *= s[1]

    def _add_stage(self, module: str, num_chs: int) -> None:
        self.feature_info.append(FeatureInfo(module, num_chs, self._reduction[0], self._reduction[1]))

    def _init_head(self, num_features: int, num_classes: int) -> None:
        self.num_features = num_features
        self.min_input_size = (min_length(self._ops_t), min_length(self._ops_s), min_length(self._ops_s))
        self.head_drop = nn.Dropout(self.drop_rate) if self.drop_rate > 0 else nn.Identity()
        self.reset_classifier(num_classes)

    # -- interface ----------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` (a ``ValueError``) unless ``x`` fits the model."""
        expected = f"N x C x T x H x W with C={self.in_chans}"
        if x.dim() != 5:
            raise InputShapeError(
                f"expected a 5-D clip tensor {expected}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise InputShapeError(
                f"expected {self.in_chans} input channels ({expected}), got {x.shape[1]} in "
                f"shape {tuple(x.shape)}; for T x H x W x C or T x C x H x W data permute it first")
        if not x.is_floating_point():
            hint = (" (uint8 frames: preprocess them first, e.g. video3d_zoo.io.ClipPreprocessor(model.config.input_spec),"
                    " which scales, normalises and puts channels first)") if x.dtype == torch.uint8 else ""
            raise InputShapeError(f"expected a floating-point clip tensor, got dtype {x.dtype}{hint}")
        t, h, w = x.shape[2], x.shape[3], x.shape[4]
        mt, mh, mw = self.min_input_size
        if t < mt or h < mh or w < mw:
            raise InputShapeError(
                f"input T x H x W = {t} x {h} x {w} is below this model's minimum "
                f"{mt} x {mh} x {mw} (shape {tuple(x.shape)})")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map of the last stage, N x num_features x t x h x w."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool over T, H, W; returns logits, or the pooled vector if ``pre_logits``."""
        x = F.adaptive_avg_pool3d(x, 1).flatten(1)
        x = self.head_drop(x)
        if pre_logits:
            return x
        return getattr(self, self.head_name)(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.head_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer by a freshly initialised one (``0``: no classifier)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        setattr(self, self.head_name, head)


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

    Subclasses provide ``expansion`` (output channels per ``planes``), :meth:`make_stem`
    and :meth:`make_block`.  Stage ``i`` (0-based) has ``planes = stage_widths[i]``,
    spatial stride 1 then 2, and temporal stride ``stage_stride_t[i]``.
    """

    expansion = 1
    fusable_pairs: Tuple[Tuple[str, str], ...] = (("conv1", "bn1"),)

    def __init__(self, layers: Sequence[int], stage_widths: Sequence[int], stem_width: int,
                 num_classes: int = 400, in_chans: int = 3, shortcut_type: str = "B",
                 stage_stride_t: Sequence[int] = (1, 2, 2, 2), drop_rate: float = 0.0,
                 init_weights: bool = True) -> None:
        super().__init__(in_chans=in_chans, drop_rate=drop_rate)
        if len(layers) != 4 or len(stage_widths) != 4 or len(stage_stride_t) != 4:
            raise ValueError("layers, stage_widths and stage_stride_t need 4 entries each")
        if any(int(n) < 1 for n in layers):
            raise ValueError(f"every stage needs at least one block, got layers={tuple(layers)}")
        self.shortcut_type = shortcut_type
        self.make_stem(in_chans, stem_width)
        in_planes = stem_width
        for i, (blocks, planes) in enumerate(zip(layers, stage_widths)):
            stride = (int(stage_stride_t[i]), 1 if i == 0 else 2, 1 if i == 0 else 2)
            stage, in_planes = self._make_stage(i, in_planes, int(planes), int(blocks), stride)
            setattr(self, f"layer{i + 1}", stage)
            self._spine_op((3, 3, 3), stride, (1, 1, 1))
            self._add_stage(f"layer{i + 1}", in_planes)
        self._init_head(in_planes, num_classes)
        if init_weights:
            init_conv_bn(self)

    def make_stem(self, in_chans: int, width: int) -> None:
        raise NotImplementedError

    def make_block(self, stage: int, in_planes: int, planes: int, stride: Triple,
                   downsample: Optional[nn.Module]) -> nn.Module:
        raise NotImplementedError

    def _make_stage(self, stage: int, in_planes: int, planes: int, blocks: int, stride: Triple):
        out_planes = planes * self.expansion
        downsample = make_shortcut(self.shortcut_type, in_planes, out_planes, stride)
        modules = [self.make_block(stage, in_planes, planes, stride, downsample)]
        for _ in range(1, blocks):
            modules.append(self.make_block(stage, out_planes, planes, (1, 1, 1), None))
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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.forward_stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


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
