"""Clip features and video-level predictions for one video.

:func:`extract_features` cuts a video into clips (default: non-overlapping ``spec.frames``-frame
windows, the paper's protocol; a trailing partial window and videos shorter than one clip are
loop-padded), preprocesses them as the model's weights expect (``model.config.input_spec``:
0-255 minus the ActivityNet mean for 2017 weights, 0-1 Kinetics mean/std for 2020 weights,
torchvision's own for torchvision's) and returns one feature vector per clip with its start
and end time in seconds.  :func:`classify_video` averages the clip softmax scores, as the paper
evaluates video-level accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .config import InputSpec, input_preset

SPECIAL_LAYERS = ("pooled", "logits")


@dataclass
class ClipFeatures:
    """``features`` is num_clips x D; ``timestamps`` num_clips x 2 (start, end) in seconds."""

    features: np.ndarray
    timestamps: np.ndarray
    layer: str
    model_id: str
    input_spec: InputSpec


@dataclass
class VideoPrediction:
    """Clip-averaged softmax scores and the ``topk`` (label, probability) pairs."""

    scores: np.ndarray
    top: List[Tuple[str, float]]
    num_clips: int


class _StageOutput(Exception):
    """Raised by a forward hook to stop the network once the requested stage has run."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__("stage output")
        self.value = value


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "model", model)  # an InferenceModel wraps the network


def stage_names(model: nn.Module) -> List[str]:
    return [info.module for info in getattr(_inner(model), "feature_info", [])]


def check_layer(model: nn.Module, layer: str) -> str:
    valid = list(SPECIAL_LAYERS) + stage_names(model)
    if layer not in valid:
        raise ValueError(f"layer must be one of {valid}, got {layer!r}")
    return layer


def clip_outputs(model: nn.Module, batch: torch.Tensor, layer: str = "pooled") -> torch.Tensor:
    """Per-clip vectors of ``batch`` (N x C x T x H x W): pooled features, logits or a pooled stage."""
    with torch.inference_mode():
        if layer == "logits":
            return model(batch).float()
        if layer == "pooled":
            return model.forward_head(model.forward_features(batch), pre_logits=True).float()
        stage = _inner(model).get_submodule(check_layer(model, layer))

        def stop(_module, _inputs, output):
            raise _StageOutput(output)

        handle = stage.register_forward_hook(stop)
        try:
            model.forward_features(batch)
        except _StageOutput as found:
            return found.value.float().mean(dim=(2, 3, 4))
        finally:
            handle.remove()
        raise RuntimeError(f"stage {layer!r} did not run during forward_features")


def model_input_spec(model: nn.Module, spec: Optional[InputSpec] = None) -> InputSpec:
    if spec is not None:
        return input_preset(spec) if isinstance(spec, str) else spec
    config = getattr(model, "config", None)
    return config.input_spec if config is not None else input_preset("kenshohara2020")


def model_id(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if config is None:
        return type(_inner(model)).__name__
    return f"{config.architecture}.{config.tag}" if config.tag else config.architecture


def _batches(clips: Iterable, batch_size: int):
    batch = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_features(model: nn.Module, video, clip_len: Optional[int] = None, stride: Optional[int] = None,
                     layer: str = "pooled", batch_size: int = 8, last: str = "pad", fps: Optional[float] = None,
                     spec: Optional[InputSpec] = None, device: Optional[str] = None, **overrides) -> ClipFeatures:
    """Features of every clip of ``video`` (a path); see the module docstring.

    ``layer``: ``"pooled"`` (the vector the classifier sees, default), ``"logits"``, or a stage
    name from ``model.feature_info`` (e.g. ``"layer3"``), pooled over space and time.
    ``overrides`` change input-spec fields (e.g. ``crop_size=128``).
    """
    from .io import iter_video_clips

    check_layer(model, layer)
    spec = model_input_spec(model, spec)
    device = torch.device(device) if device else _model_device(model)
    if isinstance(model, nn.Module) and not hasattr(model, "options"):
        model.eval()
    outputs, spans = [], []
    clips = iter_video_clips(video, spec, clip_len=clip_len, stride=stride, last=last, fps=fps, **overrides)
    for batch in _batches(clips, batch_size):
        tensor = torch.stack([c.tensor for c in batch]).to(device)
        outputs.append(clip_outputs(model, tensor, layer).cpu())
        spans.extend((c.start_s, c.end_s) for c in batch)
    features = torch.cat(outputs).numpy().astype(np.float32)
    return ClipFeatures(features, np.asarray(spans, dtype=np.float64).reshape(-1, 2), layer, model_id(model), spec)


def _model_device(model: nn.Module) -> torch.device:
    if hasattr(model, "device") and isinstance(model.device, torch.device):
        return model.device
    return next(model.parameters()).device


def top_labels(scores: np.ndarray, labels: Optional[Sequence[str]], topk: int) -> List[Tuple[str, float]]:
    order = np.argsort(-scores)[:topk]
    names = list(labels) if labels else [f"class_{i}" for i in range(len(scores))]
    return [(names[i], float(scores[i])) for i in order]


def classify_video(model: nn.Module, video, topk: int = 5, **kwargs) -> VideoPrediction:
    """Video-level prediction: softmax per clip, averaged over all clips (the paper's protocol)."""
    logits = extract_features(model, video, layer="logits", **kwargs).features
    probs = torch.softmax(torch.from_numpy(logits), dim=1).mean(dim=0).numpy()
    labels = getattr(getattr(model, "config", None), "labels", None)
    return VideoPrediction(probs, top_labels(probs, labels, topk), len(logits))
