"""What a training run reports and leaves behind: logs, the final evaluation and the export.

Plain functions the :class:`~video3d_zoo.train.loop.Trainer` calls: ``log.csv`` and TensorBoard
scalars every epoch; at the end the final evaluation (``eval/``), the exported zoo folder with
``metrics.json``, ``data_issues.json`` and the curves.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Optional

from torch import nn

from ..fileio import write_json_atomic, write_text_atomic
from .videolist import DataIssues
from .eval_report import write_eval_outputs
from ..wording import count

CSV_FIELDS = ("epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_clip_top1",
              "val_video_top1", "val_video_top5", "epoch_time_s", "elapsed_s")
_SUMMARY_METRICS = ("clip_top1", "clip_top5", "video_top1", "video_top5", "mean_class_top1", "loss", "num_videos",
                    "num_clips")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def log_csv_text(history) -> str:
    """``log.csv``: one row per epoch, :data:`CSV_FIELDS` in order."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def open_tensorboard(run: Path, global_step: int, echo):
    """A SummaryWriter in ``run/tensorboard``, or None (with a message) when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        echo("TensorBoard scalars off: tensorboard is not installed (pip install tensorboard, or the "
             "video3d-zoo[train] extra); log.csv has the same numbers")
        return None
    return SummaryWriter(str(run / "tensorboard"), purge_step=global_step or None)


def is_better(best: Dict[str, Any], key: str, value: Optional[float]) -> bool:
    """Whether ``value`` of ``key`` beats the best so far (lower loss, higher accuracy)."""
    if value is None:
        return False
    previous = best["value"]
    return previous is None or (value < previous if key == "val_loss" else value > previous)


def report_epoch(run: Path, history: List[Dict[str, Any]], writer, epochs: int, validate: bool,
                 is_best: bool) -> str:
    """Rank 0: ``log.csv`` and TensorBoard scalars of the last epoch; returns the epoch's line."""
    row = history[-1]
    epoch = row["epoch"]
    write_text_atomic(run / "log.csv", log_csv_text(history))
    if writer is not None:
        for k, v in row.items():
            if k not in ("epoch", "step") and v is not None:
                writer.add_scalar(("val/" if k.startswith("val_") else "train/") + k, v, epoch)
        writer.flush()
    val = (f"; val loss {row['val_loss']:.4f}, clip top-1 {row['val_clip_top1']:.4f}, "
           f"video top-1 {row['val_video_top1']:.4f}" if validate else "")
    return (f"epoch {epoch}/{epochs}: lr {row['lr']:.4g}, train loss {row['train_loss']:.4f}, "
            f"top-1 {row['train_top1']:.4f}{val} ({row['epoch_time_s']:.1f} s){' *' if is_best else ''}")


def final_metrics(result, labels: List[str], issues: DataIssues, run: Path, is_main: bool) -> Dict[str, Any]:
    """The final evaluation's metrics; rank 0 writes ``eval/`` (metrics.json, confusion.png)."""
    full = result.metrics(labels, with_confusion=True)
    full["skipped"] = dict(issues.counts)
    if is_main:
        write_eval_outputs(full, run / "eval")
    return {k: v for k, v in full.items() if k not in ("confusion", "labels")}


def export_run(model: nn.Module, run: Path, summary: Dict[str, Any], issues: DataIssues,
               history: List[Dict[str, Any]], plot: bool) -> Path:
    """Rank 0: the zoo folder ``run/export`` with ``metrics.json``, ``data_issues.json``, the curves."""
    from ..weights.loading import save_pretrained

    export_dir = run / "export"
    save_pretrained(model, export_dir, model.config)
    write_json_atomic(export_dir / "metrics.json", summary)
    write_json_atomic(run / "data_issues.json", issues.to_dict())
    if plot:
        from .plots import plot_curves

        plot_curves(history, run / "curves.png", title=run.name)
    return export_dir


def done_line(metrics: Dict[str, Any], elapsed_s: float, issues: DataIssues, export_dir: Path) -> str:
    msg = (f"done: video top-1 {metrics['video_top1']:.4f}, top-5 {metrics['video_top5']:.4f}, "
           f"clip top-1 {metrics['clip_top1']:.4f} on {count(metrics['num_videos'], 'video')}; "
           if metrics else "done: ")
    return msg + f"{elapsed_s:.0f} s; {issues.summary()}; exported {export_dir}"


def run_summary(metrics: Dict[str, Any], cfg, val_videos, spec, history: List[Dict[str, Any]], global_step: int,
                best: Dict[str, Any], elapsed_s: float, world_size: int, train_videos: int,
                issues: DataIssues) -> Dict[str, Any]:
    """``export/metrics.json``."""
    return {
        "evaluated_on": f"{val_videos.name} ({count(len(val_videos), 'video')}, every non-overlapping "
                        f"{spec.frames}-frame clip, centre crop {spec.crop_size})",
        **{k: metrics[k] for k in _SUMMARY_METRICS if k in metrics},
        "epochs": len(history), "global_steps": global_step,
        "weights": cfg.output.export, "best": best,
        "train_time_s": round(elapsed_s, 1), "processes": world_size,
        "train_videos": train_videos, "data_issues": dict(issues.counts),
        "config": cfg.to_dict(),
    }
