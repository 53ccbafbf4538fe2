"""Clip- and video-level evaluation (the paper's protocol), the eval report, per-video predictions.

By default every video is cut into non-overlapping ``T``-frame clips (the last one loop-padded)
after a short-side resize and centre crop; other protocols (``N`` evenly spaced clips, a frame
rate, three spatial crops, another clip length or stride) are a
:class:`~video3d_zoo.io.ClipProtocol`, and every clip comes from the one clip path
(:func:`video3d_zoo.io.video_clips`).  *Clip accuracy* scores each clip on its own; *video
accuracy* averages the clips' softmax over the whole video, as the paper reports (its
``val.log`` numbers are clip accuracy).  Top-1 and top-5 of both, per-class top-1 (video level),
mean class accuracy, the confusion matrix and the mean clip cross-entropy.

No silently wrong answers: a split that cannot be found is an error (:mod:`.eval_splits`); a
video whose logits are not finite is skipped and reported, never averaged in; partial decodes
and still images are counted and listed (``strict=True`` skips them); metrics of nothing are
``null`` and :class:`EvalFailed` is raised.  The report's keys: :mod:`.eval_report`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..devices import resolve_device
from ..errors import ConfigError, DataError, EvalFailed
from ..io.protocol import ClipProtocol
from ..inference.precision import autocast, resolve_amp
from .data import ClipSampling, EvalVideos, collate_eval, worker_init
from .distributed import DistInfo, all_gather_objects
from .eval_report import write_eval_outputs
from .eval_splits import SplitRequest, read_eval_split
from .videolist import DataIssues, VideoList
from ..wording import count


@dataclass
class EvalResult:
    """Raw predictions: one row per evaluated video, plus clip-level tallies."""

    video_index: np.ndarray       # (V,) index into the VideoList
    labels: np.ndarray            # (V,) true labels
    video_probs: np.ndarray       # (V, C) softmax averaged over the video's clips
    clip_count: int
    clip_top1: int
    clip_top5: int
    loss_sum: float
    num_classes: int
    clip_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (V,) clips per video
    notes: Dict[int, dict] = field(default_factory=dict)  # video index -> decode report, incomplete decodes

    def metrics(self, class_names: Optional[Sequence[str]] = None, with_confusion: bool = False) -> Dict[str, Any]:
        return compute_metrics(self, class_names, with_confusion)


def _topk_hits(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def compute_metrics(result: EvalResult, class_names: Optional[Sequence[str]] = None,
                    with_confusion: bool = False) -> Dict[str, Any]:
    n_videos = len(result.labels)
    c = result.num_classes
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    out: Dict[str, Any] = {"num_videos": n_videos, "num_clips": result.clip_count}
    if n_videos == 0:
        out.update(clip_top1=float("nan"), clip_top5=float("nan"), video_top1=float("nan"),
                   video_top5=float("nan"), mean_class_top1=float("nan"), loss=float("nan"), per_class={})
        return out
    probs = torch.from_numpy(result.video_probs)
    labels = torch.from_numpy(result.labels)
    pred = probs.argmax(1)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (result.labels, pred.numpy()), 1)
    per_class = {}
    accs = []
    for i in range(c):
        n = int(confusion[i].sum())
        if n:
            acc = float(confusion[i, i] / n)
            accs.append(acc)
            per_class[names[i]] = {"videos": n, "top1": acc}
    out.update(
        clip_top1=result.clip_top1 / max(1, result.clip_count),
        clip_top5=result.clip_top5 / max(1, result.clip_count),
        video_top1=float(_topk_hits(probs, labels, 1).float().mean()),
        video_top5=float(_topk_hits(probs, labels, 5).float().mean()),
        mean_class_top1=float(np.mean(accs)),
        loss=result.loss_sum / max(1, result.clip_count),
        per_class=per_class,
    )
    if with_confusion:
        out["confusion"] = confusion.tolist()
        out["labels"] = names
    return out


@dataclass
class _Tally:
    """One process's share of the predictions."""

    index: List[int] = field(default_factory=list)
    label: List[int] = field(default_factory=list)
    probs: List[np.ndarray] = field(default_factory=list)
    clips: List[int] = field(default_factory=list)
    clip_count: int = 0
    clip_top1: int = 0
    clip_top5: int = 0
    loss_sum: float = 0.0
    num_classes: int = 0
    notes: Dict[int, dict] = field(default_factory=dict)

    def add(self, video: int, label: int, logits: torch.Tensor) -> None:
        target = torch.full((len(logits),), label, dtype=torch.long)
        self.loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        self.clip_count += len(logits)
        self.clip_top1 += int(_topk_hits(logits, target, 1).sum())
        self.clip_top5 += int(_topk_hits(logits, target, 5).sum())
        self.index.append(video)
        self.label.append(label)
        self.probs.append(logits.softmax(1).mean(0).numpy())
        self.clips.append(len(logits))


def _merge(parts: List[_Tally]) -> EvalResult:
    index = [i for p in parts for i in p.index]
    order = np.argsort(index, kind="stable")
    num_classes = max(p.num_classes for p in parts)
    probs = [pr for p in parts for pr in p.probs]
    return EvalResult(
        video_index=np.asarray(index, dtype=np.int64)[order],
        labels=np.asarray([lab for p in parts for lab in p.label], dtype=np.int64)[order],
        video_probs=(np.stack(probs)[order] if probs else np.zeros((0, num_classes), np.float32)),
        clip_count=sum(p.clip_count for p in parts), clip_top1=sum(p.clip_top1 for p in parts),
        clip_top5=sum(p.clip_top5 for p in parts), loss_sum=sum(p.loss_sum for p in parts),
        num_classes=num_classes, clip_counts=np.asarray([c for p in parts for c in p.clips], np.int64)[order],
        notes={k: v for p in parts for k, v in p.notes.items()})


def _forward(model: nn.Module, clips: torch.Tensor, batch_size: int, device: torch.device,
             amp_dtype: Optional[torch.dtype], channels_last: bool) -> torch.Tensor:
    logits = []
    for start in range(0, len(clips), batch_size):
        x = clips[start:start + batch_size].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device, amp_dtype):
            logits.append(model(x).float().cpu())
    return torch.cat(logits)


@dataclass(frozen=True)
class _Checks:
    """Per-video checks before a video is scored."""

    videos: VideoList
    issues: DataIssues
    strict: bool = False
    check_finite: bool = False

    def keep(self, video: int, logits: torch.Tensor, report: Optional[dict], tally: _Tally) -> bool:
        item = self.videos.items[video]
        where = item.where or item.path
        if self.check_finite and not bool(torch.isfinite(logits).all()):
            bad = int((~torch.isfinite(logits)).sum())
            self.issues.report("non_finite_logits", where, f"{bad} of the {logits.numel()} logits of its "
                                                           f"{count(len(logits), 'clip')} are NaN or infinite")
            return False
        if report and (report.get("partial") or report.get("still_image")):
            if self.strict:
                kind = "partial_decode" if report.get("partial") else "still_image"
                reason = report.get("partial") or "a single picture, not a video"
                self.issues.report(kind, where, f"{reason} (strict)")
                return False
            tally.notes[video] = report
        return True


def _score_batch(tally: _Tally, batch: dict, logits: torch.Tensor, mapping: Optional[torch.Tensor],
                 checks: _Checks) -> None:
    owner = batch["clip_video"]
    labels = batch["label"] if mapping is None else mapping[batch["label"]]
    reports = batch.get("reports", {})
    for i, video in enumerate(batch["index"].tolist()):
        video_logits = logits[owner == video]
        if checks.keep(video, video_logits, reports.get(video), tally):
            tally.add(video, int(labels[i]), video_logits)


@torch.no_grad()
def predict_videos(model: nn.Module, videos: VideoList, sampling: ClipSampling, *, batch_size: int = 32,
                   num_workers: int = 0, device: Optional[torch.device] = None,
                   amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
                   info: Optional[DistInfo] = None, issues: Optional[DataIssues] = None,
                   label_map: Optional[Sequence[int]] = None, progress: bool = False,
                   desc: str = "eval", cache: Optional[Dict[int, torch.Tensor]] = None,
                   strict: bool = False, check_finite: bool = False) -> EvalResult:
    """Run ``model`` over every clip of every video (sharded over processes) and gather the results.

    ``label_map[i]`` is the model's class index of the data set's class ``i`` (default: identity).
    Undecodable videos are reported to ``issues`` and left out; so are videos with non-finite
    logits (``check_finite``) and partial decodes / still images (``strict``; otherwise they are
    scored and listed in ``notes``).  ``cache`` (a dict kept by the caller) holds decoded videos
    between calls when loading in this process (``num_workers=0``).
    """
    info = info or DistInfo()
    device = device or next(model.parameters()).device
    issues = issues or DataIssues()
    checks = _Checks(videos, issues, strict, check_finite)
    was_training = model.training
    model.eval()
    shard = list(range(info.rank, len(videos), info.world_size))
    subset = torch.utils.data.Subset(EvalVideos(videos, sampling, cache), shard)
    loader = torch.utils.data.DataLoader(subset, batch_size=max(1, batch_size // 4), shuffle=False,
                                         num_workers=num_workers, collate_fn=collate_eval,
                                         worker_init_fn=worker_init if num_workers else None)
    mapping = torch.as_tensor(label_map) if label_map is not None else None
    tally = _Tally()
    bar = _progress_bar(progress and info.is_main, len(subset), desc)
    for batch in loader:
        for where, message in batch["errors"]:
            issues.report("undecodable_video", where, message)
        if batch["clips"] is not None:
            logits = _forward(model, batch["clips"], batch_size, device, amp_dtype, channels_last)
            tally.num_classes = int(logits.shape[1])
            _score_batch(tally, batch, logits, mapping, checks)
        if bar:
            bar.update(len(batch["errors"]) + len(batch["index"]))
    if bar:
        bar.close()
    model.train(was_training)
    return _merge(all_gather_objects(tally, info))


def _progress_bar(show: bool, total: int, desc: str):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="video", leave=False, file=sys.stderr)


# -- the model --------------------------------------------------------------------------------------
def resolve_model(model: Union[nn.Module, str, Path]) -> nn.Module:
    """The one place evaluation turns its model argument into a model: NAME, NAME.TAG (that tag's
    weights, never a random model), alias, checkpoint path or hf-hub: reference."""
    if isinstance(model, nn.Module):
        return model
    from ..api import load_model

    return load_model(model)


def _prepare_model(net: nn.Module, device: torch.device, precision: str, fast: bool, compile: bool) -> nn.Module:
    net = net.to(device).eval()
    if precision == "fp32" and not fast and not compile:
        return net
    from ..inference.prepare import optimize_for_inference

    return optimize_for_inference(net, precision=precision, device=device, compile=compile)


def _model_info(model: Any, net: nn.Module, precision: str, amp: str, fast: bool, compile: bool,
                device: torch.device) -> Dict[str, Any]:
    config = net.config
    ref = str(model) if not isinstance(model, nn.Module) else type(model).__name__
    return {"ref": ref, "architecture": config.architecture, "tag": config.tag, "source": config.source,
            "num_classes": config.num_classes, "precision": precision, "amp": amp, "fast": fast,
            "compile": compile, "device": str(device)}


def _label_map(videos: VideoList, net: nn.Module):
    """``(label_map, class names)``: the data set's classes matched to the model's labels by name."""
    config = net.config
    model_labels = list(config.labels) if config.labels else None
    if model_labels is None:
        if len(videos.labels) != config.num_classes:
            raise DataError(f"the model has {config.num_classes} classes and no label names; the data set has "
                            f"{len(videos.labels)} classes")
        return None, list(videos.labels)
    missing = [c for c in videos.labels if c not in model_labels]
    if missing:
        raise DataError(f"{count(len(missing), 'class')} of the data set are not among the model's "
                        f"{len(model_labels)} labels: {missing[:10]}")
    return [model_labels.index(c) for c in videos.labels], model_labels


# -- the data ---------------------------------------------------------------------------------------
def _videos_from(data: Any, request: SplitRequest, issues: DataIssues):
    """``(videos, data description)`` of a data argument (see :func:`evaluate`)."""
    if isinstance(data, VideoList):
        return data, {"format": "VideoList", "root": None, "split": data.name, "split_files": list(data.files)}
    if hasattr(data, "format") and hasattr(data, "root"):  # a DataSection
        from .splits import read_split

        videos = read_split(data, "val", issues)
        return videos, {"format": data.format, "root": str(data.root), "split": "val",
                        "split_files": list(videos.files)}
    return read_eval_split(data, request, issues)


# -- public entry point -----------------------------------------------------------------------------
def evaluate(model: Union[nn.Module, str, Path], data: Any, *, split: Optional[str] = None,
             format: str = "folder", annotations: Union[str, Path, None] = None, fold: Optional[int] = None,
             protocol: Optional[ClipProtocol] = None, val_clips: int = 0, fps: Optional[float] = None,
             batch_size: int = 32, num_workers: int = 0, device: str = "auto", amp: str = "none",
             precision: str = "fp32", fast: bool = False, compile: bool = False, threads: int = 0,
             out_dir: Union[str, Path, None] = None, json: bool = False, progress: bool = True,
             on_error: str = "skip", strict: bool = False, topk: int = 5,
             confusion_png: bool = True) -> Dict[str, Any]:
    """Clip and video accuracy of ``model`` on a split of ``data``; returns the report (no confusion).

    Args:
        model: a model (with ``model.config``: labels and input spec) or any reference
            :func:`video3d_zoo.api.load_model` reads (``NAME``, ``NAME.TAG``, alias, path,
            ``hf-hub:``), always with its pretrained weights.
        data: the data set root (or a list file) read as ``format`` with ``annotations``,
            ``fold`` and ``split`` (see :mod:`.eval_splits`), a
            :class:`~video3d_zoo.train.videolist.VideoList` or a training config's ``DataSection``.
        protocol: the clips (default: every non-overlapping centre clip, or ``val_clips`` evenly
            spaced clips at ``fps``).
        amp: ``none`` / ``bf16`` / ``fp16`` / ``auto`` autocast of the eager model;
            ``precision`` / ``fast`` / ``compile``: :func:`video3d_zoo.inference.prepare.optimize_for_inference`.
        out_dir: write ``metrics.json``, ``predictions.csv`` (top-``topk``, at most every class) and
            ``confusion.png``.
        json: print the report (without the confusion matrix) as one JSON object on stdout.
        on_error: ``skip`` (report, count, go on) or ``fatal`` for bad rows and videos;
            ``strict``: partial decodes and still images are skipped as errors.

    Class names of the data set are matched to the model's ``config.labels`` by name; a model
    without labels must have as many classes as the data set (taken in the data set's order).
    Raises :class:`EvalFailed` (after printing and writing the report) when no video was scored.
    """
    protocol = _check_options(protocol, val_clips, fps, amp, precision)
    if threads:
        torch.set_num_threads(int(threads))
    issues = DataIssues(on_error)
    videos, data_info = _videos_from(data, SplitRequest(format, _str(annotations), fold, split), issues)
    dev = resolve_device(device)
    loaded = resolve_model(model)
    if getattr(loaded, "config", None) is None:
        raise DataError("evaluate needs a model with .config (input spec and labels); build it with "
                        "create_model / from_pretrained")
    label_map, names = _label_map(videos, loaded)
    net, spec = _prepare_model(loaded, dev, precision, fast, compile), loaded.config.input_spec
    result = _predict(net, videos, spec, protocol, dev, amp, issues, label_map, batch_size=batch_size,
                      num_workers=num_workers, progress=progress and not json, strict=strict)
    from .eval_report import build_report, prediction_header, prediction_rows

    topk = min(topk, len(names))  # no more predictions than classes
    report = build_report(result.metrics(names, with_confusion=True), videos=videos, issues=issues,
                          notes=result.notes, data_info=data_info, protocol=protocol, spec=spec,
                          model_info=_model_info(model, loaded, precision, amp, fast, compile, dev), topk=topk)
    predictions = {"header": prediction_header(topk), "rows": prediction_rows(result, videos, names, topk)}
    return _finish(report, predictions, out_dir, json, confusion_png)


def _check_options(protocol: Optional[ClipProtocol], val_clips: int, fps: Optional[float], amp: str,
                   precision: str) -> ClipProtocol:
    if amp != "none" and precision != "fp32":
        raise ConfigError(f"--amp {amp} and --precision {precision} both choose the precision; give one")
    if protocol is None:
        return ClipProtocol(fps=fps, num_clips=val_clips)
    if val_clips or fps is not None:
        raise ConfigError("give either protocol= or val_clips / fps, not both")
    return protocol


def _str(value: Union[str, Path, None]) -> Optional[str]:
    return None if value is None else str(value)


def _predict(net: nn.Module, videos: VideoList, spec, protocol: ClipProtocol, device: torch.device, amp: str,
             issues: DataIssues, label_map, **kwargs) -> EvalResult:
    resize = spec.resize if isinstance(spec.resize, int) else min(spec.resize)
    sampling = ClipSampling(spec=spec, resize=int(resize), protocol=protocol)
    return predict_videos(net, videos, sampling, device=device, amp_dtype=resolve_amp(amp, device, setting="amp"),
                          issues=issues, label_map=label_map, check_finite=True, **kwargs)


def _finish(report: Dict[str, Any], predictions: Dict[str, Any], out_dir, json: bool,
            confusion_png: bool) -> Dict[str, Any]:
    from .eval_report import dumps, public_report

    if report["num_videos"] == 0:
        counts = report["videos"]
        report["error"] = (f"no video was evaluated: {counts['listed']} listed, {counts['skipped']} skipped "
                           f"({', '.join(f'{k}: {v}' for k, v in counts['skipped_by_reason'].items()) or 'none'})")
    if out_dir is not None:
        write_eval_outputs(report, out_dir, confusion_png=confusion_png, predictions=predictions)
    public = public_report(report)
    if json:
        print(dumps(public))
        sys.stdout.flush()
    if "error" in report:
        raise EvalFailed(report["error"], public)
    return public

