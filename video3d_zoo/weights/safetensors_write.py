"""Writing safetensors files whose tensors can be used in place, without a copy.

``safetensors`` memory-maps a file and hands out tensors that point into it, so a tensor is
only as aligned as its byte offset in the file.  ``safetensors.torch.save_file`` pads the
header to 8 bytes and orders tensors by dtype and name, which leaves most float tensors of a
model off the 64-byte boundary that PyTorch's allocator guarantees; the loader must then copy
every such tensor (:func:`~video3d_zoo.weights.tensor_checks.compact_state_dict`: 0.1-0.4 s for a
resnet3d_50, more than the rest of a warm start).  Here the header is padded with spaces (as
the format allows) so the data starts at a 64-byte boundary, and the tensors whose size is a
multiple of 64 bytes come first, so each of them starts at one; the few others (odd-sized
biases, the int64 BatchNorm counters) follow and are the only ones a loader copies.

The result is an ordinary safetensors file: any safetensors reader loads it.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Dict, Mapping, Optional

import torch

ALIGNMENT = 64

_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                torch.uint8: "U8", torch.bool: "BOOL"}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _header(tensors: Mapping[str, torch.Tensor], order, metadata: Optional[Dict[str, str]]) -> bytes:
    header: Dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key in order:
        t = tensors[key]
        header[key] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + _nbytes(t)]}
        offset += _nbytes(t)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return text + b" " * (-(8 + len(text)) % ALIGNMENT)


def save_aligned(tensors: Mapping[str, torch.Tensor], path: os.PathLike,
                 metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (CPU, any layout) to the safetensors file ``path`` (see the module docstring).

    ``metadata`` values must be strings, as the format requires.
    """
    if sys.byteorder != "little":  # pragma: no cover - safetensors stores little-endian data
        raise RuntimeError("save_aligned writes little-endian data and needs a little-endian machine")
    for key, t in tensors.items():
        if t.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{key}: dtype {t.dtype} cannot be stored in safetensors by this writer")
        if t.device.type != "cpu":
            raise ValueError(f"{key}: tensor on {t.device}; move the state dict to the CPU first")
    if metadata and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map strings to strings")
    order = sorted(tensors, key=lambda k: (_nbytes(tensors[k]) % ALIGNMENT != 0, k))
    header = _header(tensors, order, metadata)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)
        for key in order:
            flat = tensors[key].detach().contiguous().reshape(-1)
            if flat.numel():
                fh.write(memoryview(flat.view(torch.uint8).numpy()))
