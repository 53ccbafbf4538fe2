"""Export to ONNX with dynamic batch and time axes, checked against PyTorch with onnxruntime.

Every zoo architecture ends in global average pooling, so the time axis (and the batch axis)
are exported as dynamic; height and width stay fixed at the traced size because the
preprocessing fixes them anyway.  The export is traced in float32 on CPU (BN is folded by the
ONNX optimiser; run :func:`video3d_zoo.inference.prepare.optimize_for_inference` first only if you want
a channels-last PyTorch model, not for ONNX).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..errors import ExportError


@dataclass(frozen=True)
class ExportReport:
    path: Path
    input_shape: tuple
    dynamic_axes: dict
    max_abs_diff: Optional[float]
    checked_shapes: tuple


def export_onnx(model: nn.Module, path, frames: Optional[int] = None, size: Optional[int] = None,
                opset: int = 17, check: bool = True, atol: float = 1e-4) -> ExportReport:
    """Write ``model`` to ``path`` as ONNX (atomically) and, if ``check``, compare with onnxruntime."""
    from ..fileio import atomic_path

    spec = getattr(getattr(model, "config", None), "input_spec", None)
    frames = frames or (spec.frames if spec else 16)
    size = size or (spec.crop_size if spec else 112)
    model = model.eval().float().cpu()
    x = torch.randn(1, getattr(model, "in_chans", 3), frames, size, size)
    axes = {"clip": {0: "batch", 2: "time"}, "logits": {0: "batch"}}
    path = Path(path)
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it, and would only say "Module onnx is not installed!")
    except ImportError as exc:
        raise ExportError("ONNX export needs the onnx package: pip install 'video3d-zoo[export]' "
                          "(onnx and onnxruntime)") from exc
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the shape checks in check_input
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, input_names=["clip"],
                              output_names=["logits"], dynamic_axes=axes, opset_version=opset)
    except ExportError:
        raise
    except Exception as exc:  # the exporter raises many types; say which model and why
        name = getattr(getattr(model, "config", None), "architecture", type(model).__name__)
        raise ExportError(f"{name} cannot be exported to ONNX (opset {opset}): {type(exc).__name__}: {exc}") from exc
    shapes = ((1, x.shape[1], frames, size, size), (2, x.shape[1], max(frames // 2, model.min_input_size[0]), size, size))
    diff = verify_onnx(model, path, shapes, atol) if check else None
    return ExportReport(path, tuple(x.shape), axes, diff, shapes if check else ())


def verify_onnx(model: nn.Module, path, shapes, atol: float) -> float:
    """Largest absolute difference between onnxruntime and PyTorch over ``shapes``; raises above ``atol``."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError("checking the export needs onnxruntime: pip install 'video3d-zoo[export]' "
                          "(or pass check=False)") from exc
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for shape in shapes:
        clip = torch.randn(*shape)
        with torch.no_grad():
            expected = model(clip).numpy()
        got = session.run(None, {"clip": clip.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
        scale = max(1.0, float(np.abs(expected).max()))
        if worst > atol * scale:
            raise ExportError(f"ONNX output differs from PyTorch by {worst:.3g} at input {shape} "
                              f"(tolerance {atol * scale:.3g})")
    return worst
