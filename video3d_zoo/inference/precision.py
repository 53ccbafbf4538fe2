"""Reduced precision in one place: what a device runs natively, and the autocast context.

* :func:`bf16_supported` - the one capability check: CUDA devices that report bf16, CPUs with
  AVX-512-BF16 or AMX (elsewhere bf16 is emulated, and slow).
* :func:`resolve_precision` - ``fp32`` / ``bf16`` / ``fp16`` of the inference fast path, refused
  where the device cannot run it.
* :func:`resolve_amp` - ``none`` / ``bf16`` / ``fp16`` / ``auto`` autocast of training and
  evaluation, as a dtype (``None`` = float32).
* :func:`autocast` - the autocast context for a dtype (a no-op for ``None``).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import ContextManager, Optional

import torch

from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
AMP_MODES = ("none", "bf16", "fp16", "auto")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively (CUDA: compute capability 8.0+; CPU: AVX-512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:  # pragma: no cover - a torch without these probes
            return False
    return False


def precision_dtype(precision: str) -> Optional[torch.dtype]:
    """``bf16`` / ``fp16`` -> their dtype; ``fp32`` -> ``None`` (no autocast)."""
    return _DTYPES.get(precision)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Check that ``precision`` (``fp32`` / ``bf16`` / ``fp16``) runs on ``device``; a
    :class:`~video3d_zoo.errors.ConfigError` says why not.  ``auto`` is ``bf16`` where the device
    runs it natively and ``fp32`` elsewhere (the answer is what gets recorded, never ``auto``)."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS + ('auto',)}, got {precision!r}")
    if precision == "bf16" and not bf16_supported(device):
        raise ConfigError(f"bf16 is not supported on {device} (CPU needs AVX-512-BF16 or AMX; "
                          "GPU needs compute capability 8.0+); use 'fp32'")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise ConfigError("fp16 inference needs a CUDA device; on CPU use 'bf16' or 'fp32'")
    return precision


def resolve_amp(mode: str, device: torch.device, setting: str = "train.amp") -> Optional[torch.dtype]:
    """Autocast dtype of an amp ``mode`` on ``device`` (``None`` = full fp32).

    ``auto`` takes bf16 where the device runs it natively, fp16 on CUDA without bf16, else
    nothing.  ``bf16`` on a CPU without native support runs (emulated) with a warning.  Errors
    name ``setting`` (``train.amp``, ``--amp``).
    """
    if mode not in AMP_MODES:
        raise ConfigError(f"{setting} = {mode!r}: expected one of {', '.join(AMP_MODES)}")
    if mode == "none":
        return None
    device = torch.device(device)
    native = bf16_supported(device)
    if device.type == "cuda":
        if mode == "bf16" and not native:
            raise ConfigError(f"{setting} = \"bf16\": this CUDA device has no bf16; use fp16 or auto")
        return torch.bfloat16 if (mode in ("bf16", "auto") and native) else torch.float16
    if mode == "fp16":
        raise ConfigError(f"{setting} = \"fp16\" needs a CUDA device (fp16 with a gradient scaler); "
                          "on CPU use bf16, or auto")
    if mode == "auto":
        return torch.bfloat16 if native else None
    if not native:
        warnings.warn(f"{setting} = \"bf16\" on a CPU without native bf16 (AVX512-BF16 / AMX): "
                      "it runs, emulated and slowly", RuntimeWarning, stacklevel=2)
    return torch.bfloat16


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; a no-op context for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
