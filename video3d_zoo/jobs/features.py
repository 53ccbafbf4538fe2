"""Clip features and video-level predictions for one video.

:func:`extract_features` cuts a video into clips (default: non-overlapping ``spec.frames``-frame
windows, the paper's protocol; a trailing partial window and videos shorter than one clip are
loop-padded), preprocesses them as the model's weights expect (``model.config.input_spec``:
0-255 minus the ActivityNet mean for 2017 weights, 0-1 Kinetics mean/std for 2020 weights,
torchvision's own for torchvision's) and returns one feature vector per clip with its start
and end time in seconds.  :func:`classify_video` averages the clip softmax scores, as the paper
evaluates video-level accuracy.

Both run the ``extract`` job's path (:func:`video3d_zoo.jobs.pipeline.run_clips`) on the videos
given, keeping the arrays instead of writing files and raising on the first failure, so one
video gives here exactly what ``video3d-zoo extract`` writes for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..models.config import InputSpec
from .pipeline import check_finite, check_layer, model_id, model_input_spec, place_model, positive_int, run_clips


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


class _Kept:
    """The sink of the one-video call: each video's arrays and decode report, by index."""

    def __init__(self) -> None:
        self.results: Dict[int, tuple] = {}

    def done(self, index: int, features: np.ndarray, timestamps: np.ndarray, report) -> None:
        self.results[index] = (features, timestamps, report)

    def error(self, index: int, reason: str) -> None:  # fail_fast raises before a sink hears of it
        raise AssertionError(reason)


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
    The model runs in eval mode and gets its training flags back afterwards.  A video that
    cannot be decoded raises its decoding error; outputs holding NaN or infinity raise
    :class:`~video3d_zoo.errors.NonFiniteError`.
    """
    from ..io import ClipPreprocessor, ClipProtocol

    batch_size = positive_int("batch_size", batch_size)
    check_layer(model, layer)
    prep = ClipPreprocessor(model_input_spec(model, spec), **overrides)
    protocol = ClipProtocol(clip_len=clip_len, stride=stride, last=last, fps=fps)
    place_model(model, device)
    videos = list(video) if isinstance(video, (list, tuple)) else [video]
    kept = _Kept()
    run_clips(model, videos, prep.spec, protocol, layer, batch_size, kept, fail_fast=True)
    results = [ClipFeatures(*kept.results[i][:2], layer, model_id(model), prep.spec, kept.results[i][2])
               for i in range(len(videos))]
    return results if isinstance(video, (list, tuple)) else results[0]


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
