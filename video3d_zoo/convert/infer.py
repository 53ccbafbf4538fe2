"""Infer a registered architecture and its arguments from a zoo-layout state dict.

Everything comes from tensor names and shapes: family (stem and block key names), block type
(``conv3`` present), pre-activation (``layer2.0.bn1`` normalises the block *input*), depth
(blocks per stage), cardinality (grouped ``conv2``), expansion, stage and stem widths,
temporal kernels, shortcut type (no ``downsample`` keys at all = type A), R(2+1)D mid widths,
DenseNet block configuration, input channels and number of classes.  What tensors cannot show
(strides, max-pool) comes from the layout's hints; defaults are the released configurations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import CheckpointError
from ..models import densenet3d, r2plus1d, resnet3d

StateDict = Mapping[str, torch.Tensor]
_ARCH_FAMILY = {"resnet": "resnet3d", "preresnet": "preact_resnet3d", "wideresnet": "wide_resnet3d",
                "resnext": "resnext3d", "densenet": "densenet3d", "resnet2p1d": "r2plus1d"}


@dataclass
class InferredArch:
    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    in_chans: int = 3
    family: str = ""
    depth: int = 0


def _shape(sd: StateDict, key: str) -> Tuple[int, ...]:
    try:
        return tuple(sd[key].shape)
    except KeyError:
        raise CheckpointError(f"expected tensor {key!r} is missing from the checkpoint") from None


def stage_block_counts(sd: StateDict) -> Tuple[int, ...]:
    counts = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in sd for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        if not idx:
            raise CheckpointError(f"no blocks found for layer{stage}")
        counts.append(max(idx) + 1)
    return tuple(counts)


def _depth_for(table: Mapping[int, Tuple[str, Tuple[int, ...]]], block: str, counts, family: str) -> int:
    for depth, (kind, layers) in table.items():
        if kind == block and tuple(layers) == tuple(counts):
            return depth
    raise CheckpointError(f"{family}: {block} blocks per stage {tuple(counts)} match no known depth "
                          f"(known: { {d: l for d, (_, l) in table.items()} })")


def _head(sd: StateDict, head: str) -> int:
    return _shape(sd, f"{head}.weight")[0]


def _widen(widths: List[int], base: Tuple[int, ...]) -> Dict[str, Any]:
    """Smallest kwargs reproducing ``widths`` from ``base`` stage widths."""
    if list(widths) == list(base):
        return {}
    factor = widths[0] / base[0]
    if [int(w * factor) for w in base] == list(widths):
        return {"widen_factor": factor}
    return {"stage_widths": tuple(widths)}


def infer_resnet(sd: StateDict, hints: Mapping[str, Any]) -> InferredArch:
    counts = stage_block_counts(sd)
    bottleneck = "layer1.0.conv3.weight" in sd
    block = "bottleneck" if bottleneck else "basic"
    stem_out, in_chans, stem_kt = _shape(sd, "conv1.weight")[:3]
    preact = _shape(sd, "layer2.0.bn1.weight")[0] != _shape(sd, "layer2.0.conv1.weight")[0]
    kwargs: Dict[str, Any] = {}
    if not any(".downsample." in k for k in sd):
        kwargs["shortcut_type"] = "A"
    conv_t = "conv2" if bottleneck else "conv1"
    kernels = tuple(_shape(sd, f"layer{i}.0.{conv_t}.weight")[2] for i in range(1, 5))
    if preact:
        family, base, table = "preact_resnet3d", (64, 128, 256, 512), resnet3d.DEPTH_LAYERS
        widths = [_shape(sd, f"layer{i}.0.conv1.weight")[0] for i in range(1, 5)]
        name_fmt = "preact_resnet3d_{}"
    elif bottleneck:
        mid, per_group = _shape(sd, "layer1.0.conv2.weight")[:2]
        groups = mid // per_group
        expansion = _shape(sd, "layer1.0.conv3.weight")[0] // _shape(sd, "layer1.0.conv1.weight")[0]
        outs = [_shape(sd, f"layer{i}.0.conv3.weight")[0] for i in range(1, 5)]
        if groups > 1:
            family, base, name_fmt = "resnext3d", (128, 256, 512, 1024), "resnext3d_{}"
            if groups != 32:
                kwargs["cardinality"] = groups
        elif expansion == 2:
            family, base, name_fmt = "wide_resnet3d", (128, 256, 512, 1024), "wide_resnet3d_{}"
        else:
            family, base, name_fmt = "resnet3d", (64, 128, 256, 512), "resnet3d_{}"
            if expansion != 4:
                kwargs["expansion"] = expansion
        widths = [o // (expansion if groups == 1 else 2) for o in outs]
        table = resnet3d.DEPTH_LAYERS
    else:
        family, base, table, name_fmt = "resnet3d", (64, 128, 256, 512), resnet3d.DEPTH_LAYERS, "resnet3d_{}"
        widths = [_shape(sd, f"layer{i}.0.conv1.weight")[0] for i in range(1, 5)]
    depth = _depth_for(table, block, counts, family)
    kwargs.update(_widen(widths, base))
    factor = kwargs.get("widen_factor", 1.0)
    default_stem = int(64 * factor) if family in ("resnext3d", "wide_resnet3d") else widths[0]
    if stem_out != default_stem:
        if "widen_factor" in kwargs:  # an explicit stem needs explicit widths to stay exact
            del kwargs["widen_factor"]
            kwargs["stage_widths"] = tuple(widths)
        kwargs["stem_width"] = stem_out
    if stem_kt != 7:
        kwargs["stem_kernel_t"] = stem_kt
    if kernels != (3, 3, 3, 3):
        kwargs["block_kernel_t"] = kernels
    kwargs.update({k: v for k, v in hints.items() if k in ("stem_max_pool", "stem_stride_t", "stage_stride_t")})
    name = name_fmt.format(depth)
    if family == "wide_resnet3d" and depth != 50:
        name = f"resnet3d_{depth}"
        kwargs.update(stage_widths=tuple(widths), expansion=2, stem_width=stem_out)
    return InferredArch(name, kwargs, _head(sd, "fc"), in_chans, family, depth)


def infer_r2plus1d(sd: StateDict, hints: Mapping[str, Any]) -> InferredArch:
    counts = stage_block_counts(sd)
    block = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    depth = _depth_for(r2plus1d.DEPTH_LAYERS, block, counts, "r2plus1d")
    stem_mid, in_chans = _shape(sd, "conv1_s.weight")[:2]
    width, _, stem_kt = _shape(sd, "conv1_t.weight")[:3]
    key = "layer{}.0.conv1_t.weight" if block == "basic" else "layer{}.0.conv1.weight"
    widths = [_shape(sd, key.format(i))[0] for i in range(1, 5)]
    kwargs: Dict[str, Any] = _widen(widths, (64, 128, 256, 512))
    if not any(".downsample." in k for k in sd):
        kwargs["shortcut_type"] = "A"
    if block == "basic":
        planes = widths[1]
        mid2 = _shape(sd, "layer2.0.conv2_s.weight")[0]
        if mid2 != r2plus1d.factorised_mid(planes, planes):
            kwargs["mid_rule"] = "per_block"
    if stem_kt != 7:
        kwargs["stem_kernel_t"] = stem_kt
    if stem_mid != (3 * width * stem_kt * 49) // (3 * 49 + stem_kt * width):
        kwargs["stem_mid"] = stem_mid
    kwargs.update({k: v for k, v in hints.items() if k in ("stem_max_pool", "stem_stride_t")})
    name = f"r2plus1d_{depth}" if depth != 18 else "r2plus1d_18_kenshohara"
    return InferredArch(name, kwargs, _head(sd, "fc"), in_chans, "r2plus1d", depth)


def infer_densenet(sd: StateDict, hints: Mapping[str, Any]) -> InferredArch:
    config = []
    for block in range(1, 5):
        layers = {int(m.group(1)) for k in sd
                  for m in [re.match(rf"features\.denseblock{block}\.denselayer(\d+)\.", k)] if m}
        if not layers:
            break
        config.append(max(layers))
    config_t = tuple(config)
    depth = next((d for d, c in densenet3d.DEPTH_BLOCKS.items() if c == config_t), None)
    if depth is None:
        raise CheckpointError(f"densenet3d: layers per dense block {config_t} match no known depth "
                              f"(known: {dict(densenet3d.DEPTH_BLOCKS)})")
    init_features, in_chans, stem_kt = _shape(sd, "features.conv1.weight")[:3]
    growth = _shape(sd, "features.denseblock1.denselayer1.conv2.weight")[0]
    bn_size = _shape(sd, "features.denseblock1.denselayer1.conv1.weight")[0] // growth
    kwargs: Dict[str, Any] = {}
    for name, value, default in (("growth_rate", growth, 32), ("num_init_features", init_features, 64),
                                 ("bn_size", bn_size, 4), ("stem_kernel_t", stem_kt, 7)):
        if value != default:
            kwargs[name] = value
    kwargs.update({k: v for k, v in hints.items() if k in ("stem_max_pool", "stem_stride_t")})
    return InferredArch(f"densenet3d_{depth}", kwargs, _head(sd, "classifier"), in_chans, "densenet3d", depth)


def infer_architecture(sd: StateDict, hints: Optional[Mapping[str, Any]] = None,
                       arch_hint: Optional[str] = None) -> InferredArch:
    """Registered model name, its arguments, classes and input channels for a zoo-layout dict."""
    hints = dict(hints or {})
    if "features.conv1.weight" in sd:
        arch = infer_densenet(sd, hints)
    elif "conv1_s.weight" in sd:
        arch = infer_r2plus1d(sd, hints)
    elif "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:
        arch = infer_resnet(sd, hints)
    else:
        raise CheckpointError(
            "unrecognised checkpoint layout: expected the keys of a 3D ResNet (conv1.weight, "
            "layer1.0.conv1.weight, ...), R(2+1)D (conv1_s.weight), DenseNet (features.conv1.weight / "
            f"features.conv0.weight) or torchvision video ResNet (stem.0.weight); first keys: {list(sd)[:6]}")
    _check_arch_hint(arch, arch_hint)
    return arch


def _check_arch_hint(arch: InferredArch, arch_hint: Optional[str]) -> None:
    """The stored ``arch`` string (e.g. ``resnext-101``) must agree with the tensors."""
    if not arch_hint or not isinstance(arch_hint, str):
        return
    match = re.fullmatch(r"([a-z0-9]+)-(\d+)", arch_hint.strip().lower())
    if not match or match.group(1) not in _ARCH_FAMILY:
        return
    family, depth = _ARCH_FAMILY[match.group(1)], int(match.group(2))
    if family != arch.family or depth != arch.depth:
        raise CheckpointError(
            f"the checkpoint says arch={arch_hint!r}, but its tensors are a {arch.family} of depth "
            f"{arch.depth}; the file is inconsistent or was saved under the wrong --model")
