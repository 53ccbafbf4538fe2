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

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..models.config import InputSpec, input_preset
from ..errors import ConfigError, NonFiniteError

SPECIAL_LAYERS = ("pooled", "logits")


@dataclass
class ClipFeatures:
    """``features`` is num_clips x D; ``timestamps`` num_clips x 2 (start, end) in seconds.

    ``input_spec`` is the preprocessing really applied (overrides, and a resize grown for a
    larger crop, included); ``decode_report`` says how decoding went (partial, still image).
    """

    features: np.ndarray
    timestamps: np.ndarray
    layer: str
    model_id: str
    input_spec: InputSpec
    decode_report: Optional[object] = None

    @property
    def notes(self) -> List[str]:
        return self.decode_report.notes() if self.decode_report is not None else []


@dataclass
class VideoPrediction:
    """Clip-averaged softmax scores and the ``topk`` (label, probability) pairs.

    ``decode_report`` says how decoding went; ``notes`` lists what makes the prediction less
    trustworthy than usual (a partial decode, a still image instead of a video).
    """

    scores: np.ndarray
    top: List[Tuple[str, float]]
    num_clips: int
    decode_report: Optional[object] = field(default=None, repr=False)

    @property
    def notes(self) -> List[str]:
        return self.decode_report.notes() if self.decode_report is not None else []


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "model", model)  # an InferenceModel wraps the network


def stage_names(model: nn.Module) -> List[str]:
    return [info.module for info in getattr(_inner(model), "feature_info", [])]


def check_layer(model: nn.Module, layer: str) -> str:
    valid = list(SPECIAL_LAYERS) + stage_names(model)
    if layer not in valid:
        raise ConfigError(f"layer must be one of {', '.join(valid)}; got {layer!r}")
    return layer


def clip_outputs(model: nn.Module, batch: torch.Tensor, layer: str = "pooled") -> torch.Tensor:
    """Per-clip vectors of ``batch`` (N x C x T x H x W): pooled features, logits or a pooled stage.

    A stage comes from ``model.forward_intermediates(..., stop_early=True)`` - the mechanism a
    ``features_only`` backbone uses - so the stages after it are not run.
    """
    with torch.inference_mode():
        if layer == "logits":
            return model(batch).float()
        if layer == "pooled":
            return model.forward_head(model.forward_features(batch), pre_logits=True).float()
        check_layer(model, layer)
        if not hasattr(model, "forward_intermediates"):
            raise ConfigError(f"layer={layer!r} needs a model with forward_intermediates(); "
                              f"{type(model).__name__} has none")
        infos = list(getattr(_inner(model), "feature_info", []))
        position = [info.module for info in infos].index(layer)
        index = getattr(infos[position], "index", position)
        (stage,) = model.forward_intermediates(batch, indices=[index], stop_early=True, intermediates_only=True)
        return stage.float().mean(dim=(2, 3, 4))


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


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_finite(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` unchanged, or :class:`NonFiniteError` naming how many entries and clips are bad."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) if values.ndim > 1 else []
        raise NonFiniteError(f"{what}: {int(bad.sum())} NaN/inf value(s) in {len(rows)} of {len(values)} "
                             f"clip(s) (first: clip {int(rows[0]) if len(rows) else 0}); nothing written")
    return values


@contextlib.contextmanager
def eval_mode(model):
    """Run ``model`` in eval mode, then give every submodule back its own training flag."""
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def place_model(model: nn.Module, device) -> torch.device:
    """Move ``model`` to ``device`` (in place, as ``Module.to``); return where it now runs."""
    if device is None:
        return _model_device(model)
    device = torch.device(device)
    if hasattr(model, "options"):  # an InferenceModel is prepared for one device
        if device != model.device:
            raise ConfigError(f"this fast-path model was prepared for {model.device}; call "
                              f"optimize_for_inference(..., device={str(device)!r}) instead of passing device=")
        return device
    model.to(device)
    return device


def extract_features(model: nn.Module, video, clip_len: Optional[int] = None, stride: Optional[int] = None,
                     layer: str = "pooled", batch_size: int = 8, last: str = "pad", fps: Optional[float] = None,
                     spec: Optional[InputSpec] = None, device: Optional[str] = None,
                     **overrides) -> Union[ClipFeatures, List[ClipFeatures]]:
    """Features of every clip of ``video`` (a path, or a list of paths: a list of results).

    ``layer``: ``"pooled"`` (the vector the classifier sees, default), ``"logits"``, or a stage
    name from ``model.feature_info`` (e.g. ``"layer3"``), pooled over space and time.
    ``overrides`` change input-spec fields (e.g. ``crop_size=128``; the resize grows with a
    larger crop); ``result.input_spec`` is the spec really applied.  ``device`` moves the model
    there (in place; it stays there afterwards); by default it runs where its parameters are.
    The model runs in eval mode and gets its training flags back afterwards.  Raises
    :class:`~video3d_zoo.errors.NonFiniteError` when the outputs hold NaN or infinity.
    """
    from ..io import iter_video_clips

    batch_size = positive_int("batch_size", batch_size)
    check_layer(model, layer)
    spec = model_input_spec(model, spec)
    run_on = place_model(model, device)
    if isinstance(video, (list, tuple)):
        return [extract_features(model, v, clip_len, stride, layer, batch_size, last, fps, spec, None, **overrides)
                for v in video]
    outputs, spans = [], []
    clips = iter_video_clips(video, spec, clip_len=clip_len, stride=stride, last=last, fps=fps, **overrides)
    with eval_mode(model), clips:
        for batch in _batches(clips, batch_size):
            tensor = torch.stack([c.tensor for c in batch]).to(run_on)
            outputs.append(clip_outputs(model, tensor, layer).cpu())
            spans.extend((c.start_s, c.end_s) for c in batch)
    features = check_finite(torch.cat(outputs).numpy().astype(np.float32), f"{video}: {layer} outputs")
    return ClipFeatures(features, np.asarray(spans, dtype=np.float64).reshape(-1, 2), layer, model_id(model),
                        clips.prep.spec, clips.report)


def _model_device(model: nn.Module) -> torch.device:
    if hasattr(model, "device") and isinstance(model.device, torch.device):
        return model.device
    return next(model.parameters()).device


def top_labels(scores: np.ndarray, labels: Optional[Sequence[str]], topk: int) -> List[Tuple[str, float]]:
    order = np.argsort(-scores)[:topk]
    names = list(labels) if labels else [f"class_{i}" for i in range(len(scores))]
    return [(names[i], float(scores[i])) for i in order]


def classify_video(model: nn.Module, video, topk: int = 5, **kwargs) -> VideoPrediction:
    """Video-level prediction: softmax per clip, averaged over all clips (the paper's protocol).

    Refuses non-finite logits or scores (:class:`~video3d_zoo.errors.NonFiniteError`); a
    partial decode or a still image is reported in ``prediction.notes``.
    """
    topk = positive_int("topk", topk)
    result = extract_features(model, video, layer="logits", **kwargs)
    probs = torch.softmax(torch.from_numpy(result.features), dim=1).mean(dim=0).numpy()
    check_finite(probs[None], f"{video}: class scores")
    labels = getattr(getattr(model, "config", None), "labels", None)
    return VideoPrediction(probs, top_labels(probs, labels, topk), len(result.features), result.decode_report)
