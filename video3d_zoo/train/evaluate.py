"""Clip- and video-level evaluation (the paper's protocol), metrics JSON and a confusion-matrix PNG.

Every video is cut into non-overlapping ``T``-frame clips (the last one loop-padded) after a
short-side resize and centre crop (or ``val_clips`` evenly spaced clips).  *Clip accuracy* scores
each clip on its own; *video accuracy* averages the clips' softmax over the whole video, as the
paper reports (its ``val.log`` numbers are clip accuracy).  Top-1 and top-5 of both, per-class
top-1 (video level), mean class accuracy, the confusion matrix and the mean clip cross-entropy.
"""

from __future__ import annotations

import json as jsonlib
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import (ClipSampling, DataError, DataIssues, EvalVideos, VideoList, collate_eval, make_sampling,
                   read_folder, worker_init)
from .distributed import DistInfo, all_gather_objects


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


def amp_context(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_videos(model: nn.Module, videos: VideoList, sampling: ClipSampling, *, batch_size: int = 32,
                   num_workers: int = 0, device: Optional[torch.device] = None,
                   amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
                   info: Optional[DistInfo] = None, issues: Optional[DataIssues] = None,
                   label_map: Optional[Sequence[int]] = None, progress: bool = False,
                   desc: str = "eval", cache: Optional[Dict[int, torch.Tensor]] = None) -> EvalResult:
    """Run ``model`` over every clip of every video (sharded over processes) and gather the results.

    ``label_map[i]`` is the model's class index of the data set's class ``i`` (default: identity).
    Undecodable videos are reported to ``issues`` and left out.  ``cache`` (a dict kept by the
    caller) holds decoded videos between calls when loading in this process (``num_workers=0``).
    """
    info = info or DistInfo()
    device = device or next(model.parameters()).device
    issues = issues or DataIssues()
    was_training = model.training
    model.eval()
    shard = list(range(info.rank, len(videos), info.world_size))
    subset = torch.utils.data.Subset(EvalVideos(videos, sampling, cache), shard)
    videos_per_batch = max(1, batch_size // 4)
    loader = torch.utils.data.DataLoader(subset, batch_size=videos_per_batch, shuffle=False,
                                         num_workers=num_workers, collate_fn=collate_eval,
                                         worker_init_fn=worker_init if num_workers else None)
    mapping = torch.as_tensor(label_map) if label_map is not None else None
    rows_index: List[int] = []
    rows_label: List[int] = []
    rows_probs: List[np.ndarray] = []
    clip_count = clip_top1 = clip_top5 = 0
    loss_sum = 0.0
    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=len(subset), desc=desc, unit="video", leave=False, file=sys.stderr)
    for batch in loader:
        for where, message in batch["errors"]:
            issues.report("undecodable_video", where, message)
        if batch["clips"] is None:
            if bar:
                bar.update(videos_per_batch)
            continue
        clips, owner = batch["clips"], batch["clip_video"]
        logits = []
        for start in range(0, len(clips), batch_size):
            x = clips[start:start + batch_size].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with amp_context(device, amp_dtype):
                logits.append(model(x).float().cpu())
        logits = torch.cat(logits)
        vid_labels = batch["label"] if mapping is None else mapping[batch["label"]]
        index_of = {int(v): i for i, v in enumerate(batch["index"])}
        clip_labels = vid_labels[torch.tensor([index_of[int(o)] for o in owner])]
        loss_sum += float(F.cross_entropy(logits, clip_labels, reduction="sum"))
        clip_count += len(logits)
        clip_top1 += int(_topk_hits(logits, clip_labels, 1).sum())
        clip_top5 += int(_topk_hits(logits, clip_labels, 5).sum())
        probs = logits.softmax(1)
        for i, vid in enumerate(batch["index"].tolist()):
            rows_index.append(vid)
            rows_label.append(int(vid_labels[i]))
            rows_probs.append(probs[owner == vid].mean(0).numpy())
        if bar:
            bar.update(len(batch["errors"]) + len(batch["index"]))
    if bar:
        bar.close()
    model.train(was_training)
    num_classes = int(logits.shape[1]) if clip_count else 0
    local = (rows_index, rows_label, rows_probs, clip_count, clip_top1, clip_top5, loss_sum, num_classes)
    parts = all_gather_objects(local, info)
    index = [i for p in parts for i in p[0]]
    order = np.argsort(index, kind="stable")
    num_classes = max(p[7] for p in parts)
    probs_all = [pr for p in parts for pr in p[2]]
    return EvalResult(
        video_index=np.asarray(index, dtype=np.int64)[order],
        labels=np.asarray([lab for p in parts for lab in p[1]], dtype=np.int64)[order],
        video_probs=(np.stack(probs_all)[order] if probs_all else np.zeros((0, num_classes), np.float32)),
        clip_count=sum(p[3] for p in parts), clip_top1=sum(p[4] for p in parts),
        clip_top5=sum(p[5] for p in parts), loss_sum=sum(p[6] for p in parts), num_classes=num_classes)


def save_confusion_png(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Union[str, Path],
                       title: str = "") -> Optional[Path]:
    """Row-normalised confusion matrix as a PNG; ``None`` (with a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no confusion-matrix PNG (pip install matplotlib)", file=sys.stderr)
        return None

    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(labels)
    side = min(24.0, max(5.0, 0.35 * n + 2))
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= 60:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (video level, row-normalised)")
    from .plots import save_png

    return save_png(fig, path)


# -- public entry point -----------------------------------------------------------------------------
def _load_model(model: Union[nn.Module, str, Path]) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    from ..resolve import load_model

    return load_model(model)


def _videos_from(data: Any, split: str, labels: Optional[Sequence[str]], issues: DataIssues,
                 check: str) -> VideoList:
    if isinstance(data, VideoList):
        return data
    if hasattr(data, "format") and hasattr(data, "root"):  # a DataSection
        from .data import read_split

        return read_split(data, "val", issues, labels)
    path = Path(data)
    if path.is_file() and path.suffix == ".txt":
        return read_folder(path.parent, str(path), None, issues, check, labels)
    if not path.is_dir():
        raise DataError(f"{path}: no such data folder or split list")
    list_name = split if (path / f"{split}.txt").is_file() else "all"
    return read_folder(path, list_name, None, issues, check, labels)


def evaluate(model: Union[nn.Module, str, Path], data: Any, *, split: str = "test",
             batch_size: int = 32, num_workers: int = 0, val_clips: int = 0, device: str = "auto",
             amp: str = "none", threads: int = 0, out_dir: Union[str, Path, None] = None,
             json: bool = False, progress: bool = True, on_error: str = "skip",
             fps: Optional[float] = None, confusion_png: bool = True) -> Dict[str, Any]:
    """Clip and video accuracy of ``model`` on ``data``; returns the metrics dict.

    Args:
        model: a model (with ``model.config``: labels and input spec), a zoo checkpoint path
            (file or folder), or a registered name ``NAME[.TAG]`` (pretrained weights).
        data: a folder-per-class data set (``root/<class>/<video>``; the ``split`` list,
            ``root/<split>.txt``, when it exists, else every video), a split-list ``.txt`` file,
            a :class:`~video3d_zoo.train.data.VideoList` or a training config's ``DataSection``.
        split: split list name inside a data folder (``test``, ``val``, ``train``).
        val_clips: 0 = every non-overlapping clip (the paper's protocol), N = N evenly spaced clips.
        amp: ``none`` / ``bf16`` / ``fp16`` / ``auto`` autocast for the forward passes.
        out_dir: write ``metrics.json`` (with the confusion matrix) and ``confusion.png`` there.
        json: print the metrics (without the confusion matrix) as one JSON object on stdout.
        on_error: ``skip`` (report, count, go on) or ``fatal`` for undecodable / missing videos.

    Class names of the data set are matched to the model's ``config.labels`` by name; a model
    without labels must have as many classes as the data set (taken in the data set's order).
    Keys of the result: ``clip_top1``, ``clip_top5``, ``video_top1``, ``video_top5``,
    ``mean_class_top1``, ``loss``, ``num_videos``, ``num_clips``, ``per_class``, ``skipped``.
    """
    from .distributed import pick_device
    from .loop import resolve_amp

    if threads:
        torch.set_num_threads(int(threads))
    net = _load_model(model)
    config = getattr(net, "config", None)
    if config is None:
        raise DataError("evaluate needs a model with .config (input spec and labels); build it with "
                        "create_model / from_pretrained")
    issues = DataIssues(on_error)
    model_labels = list(config.labels) if config.labels else None
    videos = _videos_from(data, split, None, issues, "exists")
    if model_labels is not None:
        missing = [c for c in videos.labels if c not in model_labels]
        if missing:
            raise DataError(f"{len(missing)} class(es) of the data set are not among the model's "
                            f"{len(model_labels)} labels: {missing[:10]}")
        label_map = [model_labels.index(c) for c in videos.labels]
        names = model_labels
    else:
        if len(videos.labels) != net.num_classes:
            raise DataError(f"the model has {net.num_classes} classes and no label names; the data set has "
                            f"{len(videos.labels)} classes")
        label_map, names = None, list(videos.labels)
    spec = config.input_spec
    sampling = make_sampling(_EvalData(fps, val_clips), spec)
    dev = pick_device(device)
    net = net.to(dev)
    result = predict_videos(net, videos, sampling, batch_size=batch_size, num_workers=num_workers, device=dev,
                            amp_dtype=resolve_amp(amp, dev), issues=issues, label_map=label_map,
                            progress=progress and not json)
    metrics = result.metrics(names, with_confusion=True)
    metrics["skipped"] = dict(issues.counts)
    if out_dir is not None:
        write_eval_outputs(metrics, out_dir, confusion_png=confusion_png)
    public = {k: v for k, v in metrics.items() if k not in ("confusion", "labels")}
    if json:
        print(jsonlib.dumps(public))
        sys.stdout.flush()
    return public


@dataclass(frozen=True)
class _EvalData:
    """The DataSection fields :func:`make_sampling` reads, for evaluation."""

    fps: Optional[float] = None
    val_clips: int = 0
    train_crop: str = "center"
    scale_step: float = 1.0
    n_scales: int = 1
    hflip: bool = False
    temporal_stride: int = 1


def write_eval_outputs(metrics: Dict[str, Any], out_dir: Union[str, Path], confusion_png: bool = True,
                       prefix: str = "") -> Path:
    from ..weights import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{prefix}metrics.json") as tmp:
        tmp.write_text(jsonlib.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if confusion_png and "confusion" in metrics:
        save_confusion_png(metrics["confusion"], metrics["labels"], out / f"{prefix}confusion.png")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``video3d-zoo eval (--model NAME[.TAG] | --weights PATH) DATA [--split S] [--json] ...``."""
    import argparse

    from ..errors import Video3DZooError

    p = argparse.ArgumentParser(prog="video3d-zoo eval", description="clip and video accuracy on a data set")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="registered model NAME[.TAG] (pretrained weights)")
    who.add_argument("--weights", help="zoo checkpoint folder or file")
    p.add_argument("data", help="folder-per-class data set or split-list .txt")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--clips", type=int, default=0, help="clips per video (0 = every non-overlapping clip)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16", "auto"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", help="folder for metrics.json and confusion.png")
    p.add_argument("--fatal", action="store_true", help="stop at the first missing or undecodable video")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    args = p.parse_args(argv)
    try:
        metrics = evaluate(args.model or args.weights, args.data, split=args.split, batch_size=args.batch_size,
                           num_workers=args.workers, val_clips=args.clips, device=args.device, amp=args.amp,
                           threads=args.threads, out_dir=args.out, json=args.json,
                           on_error="fatal" if args.fatal else "skip")
    except Video3DZooError as exc:
        print(f"video3d-zoo eval: error: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{metrics['num_videos']} videos, {metrics['num_clips']} clips: "
              f"clip top-1 {metrics['clip_top1']:.4f}, top-5 {metrics['clip_top5']:.4f}; "
              f"video top-1 {metrics['video_top1']:.4f}, top-5 {metrics['video_top5']:.4f}; "
              f"mean class {metrics['mean_class_top1']:.4f}")
        if metrics["skipped"]:
            print(f"skipped: {metrics['skipped']}")
    return 0
