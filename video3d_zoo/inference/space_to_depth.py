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

The rewritten module keeps the convolution's ``weight`` and ``bias`` under the same names and
rearranges them on each call (a few microseconds; compiled with freezing, once), so a prepared
network's state dict - and every digest recorded from it - is the same with and without it.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

#: at most this many input channels: beyond it oneDNN fills the tiles by itself
MAX_IN_CHANNELS = 4


class SpaceToDepthConv3d(nn.Module):
    """``conv`` (stride 2 over H and W, zero padding, no groups or dilation) computed on 2x2
    space-to-depth blocks; same parameters, same outputs up to float rounding."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        if not qualifies(conv):
            raise ValueError(f"{conv} is not a stride-(*, 2, 2) convolution with at most "
                             f"{MAX_IN_CHANNELS} input channels, no groups, no dilation and zero padding")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size: Tuple[int, int, int] = tuple(conv.kernel_size)
        self.stride: Tuple[int, int, int] = tuple(conv.stride)
        self.padding: Tuple[int, int, int] = tuple(conv.padding)
        self.weight = conv.weight
        self.bias = conv.bias

    def blocked_weight(self) -> torch.Tensor:
        """The kernel on 2x2 blocks: (O, 4C, kd, ceil(kh/2), ceil(kw/2)), channel order (c, dy, dx)."""
        _, kh, kw = self.kernel_size
        w = F.pad(self.weight, (0, kw % 2, 0, kh % 2))  # an even kernel; the extra taps are zero
        o, c, kd, h2, w2 = w.shape
        w = w.reshape(o, c, kd, h2 // 2, 2, w2 // 2, 2).permute(0, 1, 4, 6, 2, 3, 5)
        return w.reshape(o, 4 * c, kd, h2 // 2, w2 // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(_autocast_dtype(x.device.type) or x.dtype)  # rearrange in the dtype the convolution reads
        n, c, d, h, w = x.shape
        _, kh, kw = self.kernel_size
        _, ph, pw = self.padding
        out_h, out_w = (h + 2 * ph - kh) // 2 + 1, (w + 2 * pw - kw) // 2 + 1
        # zero padding as the convolution would add it, plus one row / column to make H and W even
        x = F.pad(x, (pw, pw + (w + 2 * pw) % 2, ph, ph + (h + 2 * ph) % 2))
        hb, wb = x.shape[-2] // 2, x.shape[-1] // 2
        x = x.reshape(n, c, d, hb, 2, wb, 2).permute(0, 1, 4, 6, 2, 3, 5).reshape(n, 4 * c, d, hb, wb)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        weight = self.blocked_weight().to(x.dtype).contiguous(memory_format=torch.channels_last_3d)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y = F.conv3d(x, weight, bias, stride=(self.stride[0], 1, 1), padding=(self.padding[0], 0, 0))
        return y[:, :, :, :out_h, :out_w]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, on 2x2 space-to-depth blocks")


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
