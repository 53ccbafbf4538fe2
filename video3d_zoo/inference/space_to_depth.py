"""Stem convolutions with few input channels, rewritten so that AMX tiles are filled (bf16, CPU).

Why: the first convolution of most 3D ResNets reads 3 channels (RGB) with a 7x7x7 kernel at spatial
stride 2.  oneDNN's AMX kernels (``brg_conv_fwd``) reduce over the input channels of one kernel tap
at a time, so with 3 channels an AMX tile multiply does 3 of the 32 multiply-adds it could, and
the stem of a resnet3d_50 - a third of its multiply-adds - took half of a compiled bf16 batch at
about a fifth of the bf16 matmul peak (2-core Xeon with AMX, batch 8, 16x112x112; docs/performance.md).

What: a stride-2 convolution over H and W is the same as a stride-1 convolution over the input
rearranged into 2x2 blocks ("space to depth": 4x the channels, half the height and width) with the
kernel rearranged the same way (7x7 taps become 4x4 taps of 4x the channels; the padding tap is
zero).  It does 1.31x the multiply-adds of a 7x7 kernel but runs 1.3-1.9x faster in bf16 on AMX.
The same rewrite is slower in float32 (0.6x: AVX-512 kernels handle 3 channels well), so
:func:`use_space_to_depth` enables it only for bf16 on CPUs with AMX.

A long temporal kernel folds time into the blocks too (2x2x2 blocks, 24 channels; :func:`folds_time`):
at temporal stride 1 each block then yields two output frames, computed as twice the output channels
and interleaved back into frames (one copy, which a compiled model fuses into the max-pool that
follows).  The 7x7x7 stem becomes 4x4x4 taps over 24 channels: 1.45x faster than 7x4x4 taps over 12
as a bare convolution, 1.08x over a whole compiled resnet3d_50 batch.  Shorter temporal kernels lose
(measured for 3 and 1 frames), so they keep 1x2x2 blocks.

The rewritten module keeps the convolution's ``weight`` and ``bias`` under the same names and
rearranges them on each call (a few microseconds; compiled with freezing, once), so a prepared
network's state dict - and every digest recorded from it - is the same with and without it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

#: at most this many input channels: beyond it oneDNN fills the tiles by itself
MAX_IN_CHANNELS = 4
#: time folds into the blocks for temporal kernels this long or longer: measured faster for 7 frames
#: (1.09x eager, 1.17x compiled with the max-pool after it; 1.04-1.10x without one), slower for 3
#: (0.82-0.94x) and 1 (0.64-0.78x)
MIN_FRAMES_TO_FOLD = 7


class SpaceToDepthConv3d(nn.Module):
    """``conv`` (stride 2 over H and W, zero padding, no groups or dilation) computed on space-to-depth
    blocks; same parameters, same outputs up to float rounding.

    ``fold_time`` (default: :func:`folds_time`) makes the blocks 2x2x2 instead of 1x2x2: at temporal
    stride 1 the block convolution then computes two output frames per block, as ``2 * out_channels``
    output channels interleaved back into frames afterwards.
    """

    def __init__(self, conv: nn.Conv3d, fold_time: Optional[bool] = None) -> None:
        super().__init__()
        if not qualifies(conv):
            raise ValueError(f"{conv} is not a stride-(*, 2, 2) convolution with at most "
                             f"{MAX_IN_CHANNELS} input channels, no groups, no dilation and zero padding")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size: Tuple[int, int, int] = tuple(conv.kernel_size)
        self.stride: Tuple[int, int, int] = tuple(conv.stride)
        self.padding: Tuple[int, int, int] = tuple(conv.padding)
        self.fold_time = folds_time(conv) if fold_time is None else bool(fold_time)
        if self.fold_time and self.stride[0] not in (1, 2):
            raise ValueError(f"time folds into 2-frame blocks at temporal stride 1 or 2, not {self.stride[0]}")
        self.weight = conv.weight
        self.bias = conv.bias

    def _axes(self):
        """Per axis (T, H, W): (block size, stride, kernel, output phases per block, block taps)."""
        axes = []
        for axis, (k, s) in enumerate(zip(self.kernel_size, self.stride)):
            block = 2 if axis > 0 or self.fold_time else 1
            phases = block // s if block > 1 else 1
            taps = (s * (phases - 1) + k - 1) // block + 1 if block > 1 else k
            axes.append((block, s, k, phases, taps))
        return axes

    def blocked_weight(self) -> torch.Tensor:
        """The kernel on blocks: (phases * O, C * blocks, taps_t, taps_h, taps_w), input channel order
        (c, dt, dy, dx), output channel order (phase, o); taps outside the kernel are zero."""
        (bt, st, kt, phases, tt), (_, _, kh, _, th), (_, _, kw, _, tw) = self._axes()
        o, c = self.weight.shape[:2]
        per_phase = []
        for phase in range(phases):
            front = st * phase if bt > 1 else 0  # output frame 2b + phase reads input frames from 2b + st * phase
            w = F.pad(self.weight, (0, 2 * tw - kw, 0, 2 * th - kh, front, bt * tt - kt - front))
            w = w.reshape(o, c, tt, bt, th, 2, tw, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
            per_phase.append(w.reshape(o, c * bt * 4, tt, th, tw))
        return torch.cat(per_phase) if phases > 1 else per_phase[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(_autocast_dtype(x.device.type) or x.dtype)  # rearrange in the dtype the convolution reads
        n, c = x.shape[:2]
        axes = self._axes()
        pads, blocks, outs = [], [], []
        for (block, s, k, phases, taps), size, pad in zip(axes, x.shape[2:], self.padding):
            out = (size + 2 * pad - k) // s + 1
            outs.append(out)
            if block == 1:  # time left unfolded: the convolution pads and strides it itself
                pads.append((0, 0))
                blocks.append(size)
                continue
            out_blocks = -(-out // phases)
            length = (out_blocks - 1 + taps) * block  # exactly the blocks the output reads; a negative pad crops
            pads.append((pad, length - size - pad))
            blocks.append(length // block)
        (tf, tb), (hf, hb), (wf, wb) = pads
        x = F.pad(x, (wf, wb, hf, hb, tf, tb))
        bt = axes[0][0]
        x = x.reshape(n, c, blocks[0], bt, blocks[1], 2, blocks[2], 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(n, c * bt * 4, *blocks).contiguous(memory_format=torch.channels_last_3d)
        weight = self.blocked_weight().to(x.dtype).contiguous(memory_format=torch.channels_last_3d)
        phases = axes[0][3]
        bias = None if self.bias is None else self.bias.to(x.dtype).repeat(phases)
        unfolded = bt == 1
        y = F.conv3d(x, weight, bias, stride=(self.stride[0] if unfolded else 1, 1, 1),
                     padding=(self.padding[0] if unfolded else 0, 0, 0))
        if phases > 1:
            y = _interleave_frames(y, phases)
        return y[:, :, :outs[0]] if y.shape[2] != outs[0] else y

    def extra_repr(self) -> str:
        blocks = "2x2x2" if self.fold_time else "1x2x2"
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, on {blocks} space-to-depth blocks")


def _interleave_frames(y: torch.Tensor, phases: int) -> torch.Tensor:
    """(N, phases * O, D, H, W) with channel order (phase, o) -> (N, O, D * phases, H, W), channels-last
    (one copy; frame ``d * phases + p`` is phase ``p`` of block ``d``)."""
    n, _, d, h, w = y.shape
    o = y.shape[1] // phases
    frames = y.permute(0, 2, 3, 4, 1).reshape(n, d, h, w, phases, o).permute(0, 1, 4, 2, 3, 5)
    return frames.reshape(n, d * phases, h, w, o).permute(0, 4, 1, 2, 3)


def _autocast_dtype(device_type: str):
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except TypeError:  # torch < 2.4: per-device functions, CPU only here
        return torch.get_autocast_cpu_dtype() if device_type == "cpu" and torch.is_autocast_cpu_enabled() else None


def qualifies(module: nn.Module) -> bool:
    """Whether ``module`` is a convolution :class:`SpaceToDepthConv3d` computes exactly (and helps)."""
    return (type(module) is nn.Conv3d and module.in_channels <= MAX_IN_CHANNELS and module.groups == 1
            and tuple(module.stride[1:]) == (2, 2) and tuple(module.dilation) == (1, 1, 1)
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
            and min(module.kernel_size[1:]) >= 2)


def folds_time(conv: nn.Conv3d) -> bool:
    """Whether time is folded into the blocks too (see :class:`SpaceToDepthConv3d`)."""
    return conv.stride[0] in (1, 2) and conv.kernel_size[0] >= MIN_FRAMES_TO_FOLD


def use_space_to_depth(device: torch.device, precision: str) -> bool:
    """Where the rewrite was measured to be faster: bf16 on a CPU with AMX tiles."""
    if torch.device(device).type != "cpu" or precision != "bf16":
        return False
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def rewrite_stems(model: nn.Module) -> int:
    """Replace every qualifying convolution of ``model`` in place; returns how many."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if qualifies(child):
                setattr(module, name, SpaceToDepthConv3d(child))
                replaced += 1
    return replaced
