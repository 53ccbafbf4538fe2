"""What a training run reports and leaves behind: validation, logs, the final evaluation and the export.

Validation metrics, ``log.csv`` and TensorBoard scalars every epoch; at the end the finish step:
the final evaluation (``eval/``), the exported zoo folder with ``metrics.json``,
``data_issues.json`` and the curves.

:class:`TrainerFinish` is the last part of :class:`~video3d_zoo.train.loop.Trainer`; it uses
what :class:`~video3d_zoo.train.trainer_setup.TrainerSetup` built and the loop's ``history``,
``global_step`` and ``best``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any, Dict

from ..fileio import write_json_atomic, write_text_atomic
from .data import ClipSampling
from .distributed import barrier, broadcast_object
from .eval_report import write_eval_outputs
from .evaluate import EvalResult, predict_videos
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


class TrainerFinish:
    """Validation, logs and the export of a run (see the module docstring)."""

    def _predict(self, sampling: ClipSampling, desc: str) -> EvalResult:
        cfg = self.cfg
        batch_size = cfg.train.val_batch_size or max(1, cfg.train.batch_size // cfg.train.accumulate)
        return predict_videos(self.bare, self.val_videos, sampling, batch_size=batch_size,
                              num_workers=cfg.data.num_workers, device=self.device, amp_dtype=self.amp_dtype,
                              channels_last=cfg.model.channels_last_3d, info=self.info, issues=self.rank_issues(),
                              progress=cfg.train.progress, desc=desc, cache=self._val_cache)

    def _validate(self) -> Dict[str, Any]:
        return self._predict(self.eval_sampling, "validate").metrics(self.labels)

    def _write_csv(self) -> None:
        write_text_atomic(self.run / "log.csv", log_csv_text(self.history))

    def _tensorboard(self):
        if not (self.cfg.train.tensorboard and self.info.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.echo("TensorBoard scalars off: tensorboard is not installed (pip install tensorboard, or the "
                      "video3d-zoo[train] extra); log.csv has the same numbers")
            return None
        return SummaryWriter(str(self.run / "tensorboard"), purge_step=self.global_step or None)

    # the finish step -------------------------------------------------------------------------------
    def _finish(self) -> None:
        """Load the exported weights (``output.export``), check them, evaluate, export; rank 0 writes."""
        cfg, info = self.cfg, self.info
        export_dir = self.run / "export"
        if cfg.output.export == "best" and self.ckpt.best.is_file():
            weights = self.ckpt.load_best_weights() if info.is_main else None
            self.bare.load_state_dict(broadcast_object(weights, info))
        self.guard.require_finite(self.bare, f"export non-finite weights to {export_dir}",
                                  keeps=f"{export_dir} was left as it was")  # collective
        metrics = self._final_eval() if cfg.output.final_eval else {}
        if info.is_main:
            self._export(metrics)
        barrier(info)

    def _final_eval(self) -> Dict[str, Any]:
        """Every non-overlapping clip of every validation video; writes ``eval/`` (rank 0)."""
        result = self._predict(dataclasses.replace(self.eval_sampling, val_clips=0), "final eval")
        full = result.metrics(self.labels, with_confusion=True)
        full["skipped"] = dict(self.issues.counts)
        if self.info.is_main:
            write_eval_outputs(full, self.run / "eval")
        return {k: v for k, v in full.items() if k not in ("confusion", "labels")}

    def _export(self, metrics: Dict[str, Any]) -> None:
        from ..weights.loading import save_pretrained

        cfg = self.cfg
        export_dir = self.run / "export"
        save_pretrained(self.bare, export_dir, self.bare.config)
        write_json_atomic(export_dir / "metrics.json", self._summary(metrics))
        write_json_atomic(self.run / "data_issues.json", self.issues.to_dict())
        if cfg.output.plot:
            from .plots import plot_curves

            plot_curves(self.history, self.run / "curves.png", title=self.run.name)
        msg = (f"done: video top-1 {metrics['video_top1']:.4f}, top-5 {metrics['video_top5']:.4f}, "
               f"clip top-1 {metrics['clip_top1']:.4f} on {count(metrics['num_videos'], 'video')}; "
               if metrics else "done: ")
        self.echo(msg + f"{self.elapsed():.0f} s; {self.issues.summary()}; exported {export_dir}")

    def _summary(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
        """``export/metrics.json``."""
        cfg = self.cfg
        return {
            "evaluated_on": f"{self.val_videos.name} ({count(len(self.val_videos), 'video')}, every non-overlapping "
                            f"{self.spec.frames}-frame clip, centre crop {self.spec.crop_size})",
            **{k: metrics[k] for k in _SUMMARY_METRICS if k in metrics},
            "epochs": len(self.history), "global_steps": self.global_step,
            "weights": cfg.output.export, "best": self.best,
            "train_time_s": round(self.elapsed(), 1), "processes": self.info.world_size,
            "train_videos": len(self.train_videos), "data_issues": dict(self.issues.counts),
            "config": cfg.to_dict(),
        }

