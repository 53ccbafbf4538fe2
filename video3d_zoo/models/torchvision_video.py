"""torchvision's video ResNets (``torchvision.models.video``): R3D-18, MC3-18 and R(2+1)D-18.

Provenance: Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition",
CVPR 2018, as packaged by torchvision.  The architectures are the zoo's 3D ResNet
(:mod:`.resnet3d`) and R(2+1)D (:mod:`.r2plus1d`) with torchvision's stems (3 x 7 x 7, no
max-pool) and, for R(2+1)D, its stem mid width 45 and per-block mid widths.

Their checkpoints come in torchvision's own key layout (``stem.*``, ``layerX.Y.convN.0.*``),
which :mod:`video3d_zoo.weights.convert` renames; this family reads only checkpoints of that layout.
In the zoo layout an R3D-18 is indistinguishable from a 3D ResNet-18 with a 3 x 7 x 7 stem
(whether there is a max-pool is not in the tensors), so there the 3D ResNet family answers.
"""

from __future__ import annotations

from .layout import (TORCHVISION, LayoutReading, count_blocks, first_block_widths, has_conv, residual_block,
                      tensor_shape, widen_kwargs)
from .registry import FamilySpec, register_family, register_model
from .r2plus1d import STAGE_WIDTHS as R2PLUS1D_WIDTHS
from .r2plus1d import R2Plus1d, _r2plus1d
from .resnet3d import STAGE_WIDTHS as RESNET_WIDTHS
from .resnet3d import ResNet3d, _resnet3d


@register_model(family="torchvision_video", input_preset="torchvision", origin="torchvision")
def r3d_18(**kwargs) -> ResNet3d:
    """torchvision R3D-18: 3D ResNet-18 with a 3x7x7 stem and no max-pool (Tran et al. 2018)."""
    kwargs.setdefault("stem_kernel_t", 3)
    kwargs.setdefault("stem_max_pool", False)
    return _resnet3d(18, **kwargs)


@register_model(family="torchvision_video", input_preset="torchvision", origin="torchvision")
def mc3_18(**kwargs) -> ResNet3d:
    """torchvision MC3-18: 3D convolutions in the stem and layer1, 2D (1x3x3) in layers 2-4."""
    kwargs.setdefault("stem_kernel_t", 3)
    kwargs.setdefault("stem_max_pool", False)
    kwargs.setdefault("block_kernel_t", (3, 1, 1, 1))
    kwargs.setdefault("stage_stride_t", (1, 1, 1, 1))
    return _resnet3d(18, **kwargs)


@register_model(family="torchvision_video", input_preset="torchvision", origin="torchvision")
def r2plus1d_18(**kwargs) -> R2Plus1d:
    """torchvision R(2+1)D-18: stem mid 45 with a 3x1x1 temporal conv, no max-pool, per-block mids."""
    kwargs.setdefault("stem_mid", 45)
    kwargs.setdefault("stem_kernel_t", 3)
    kwargs.setdefault("stem_max_pool", False)
    kwargs.setdefault("mid_rule", "per_block")
    return _r2plus1d(18, **kwargs)


# -- family: what its checkpoints look like (after renaming from torchvision's layout) -------------------
def _is_torchvision_net(sd) -> bool:
    stem = has_conv(sd, "conv1_s.weight", "conv1_t.weight") or has_conv(sd, "conv1.weight")
    return stem and residual_block(sd) == "basic" and count_blocks(sd) == (2, 2, 2, 2)


def _read_torchvision(sd) -> LayoutReading:
    if "conv1_s.weight" in sd:
        name, widths, base = "r2plus1d_18", first_block_widths(sd, "conv1_t"), R2PLUS1D_WIDTHS
    else:  # MC3 factorises layers 2-4 into 2D convolutions
        name = "mc3_18" if tensor_shape(sd, "layer2.0.conv1.weight")[2] == 1 else "r3d_18"
        widths, base = first_block_widths(sd, "conv1"), RESNET_WIDTHS
    return LayoutReading(name, widen_kwargs(widths, base), 18)


register_family(FamilySpec(
    name="torchvision_video", title="torchvision video ResNets", stem_conv=("conv1", "conv1_s"),
    classifier="fc", tiny_kwargs={"widen_factor": 0.125}, regularisers=("drop_path_rate",),
    recognise=_is_torchvision_net, read_layout=_read_torchvision, layouts=(TORCHVISION,)))
