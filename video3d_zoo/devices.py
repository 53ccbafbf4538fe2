"""Device names checked before any work: ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``.

A device this PyTorch build or machine does not have is a
:class:`~video3d_zoo.errors.ConfigError` that says what is available, instead of an
``AssertionError("Torch not compiled with CUDA enabled")`` deep inside the first ``.to()``.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def _available() -> str:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return ", ".join(found)


def resolve_device(text: str = "auto") -> torch.device:
    """The device ``text`` names, checked to exist here; ``auto`` is the first GPU, else the CPU."""
    if text in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {text!r} is not a device name (cpu, cuda, cuda:1, mps, auto)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build, but no GPU is visible"
            raise ConfigError(f"device {text!r}: CUDA is not available (torch {torch.__version__} is {build}); "
                              f"available here: {_available()}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {text!r}: only {torch.cuda.device_count()} CUDA device(s); "
                              f"available here: {_available()}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {text!r} is not available here; available: {_available()}")
    elif device.type != "cpu":
        raise ConfigError(f"device {text!r} is not supported; available here: {_available()}")
    return device
