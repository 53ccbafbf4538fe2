"""The trainer: :func:`train` runs one config from data to an exported zoo checkpoint folder.

Run folder (``output.dir/output.name``)::

    train_config.json        the resolved config (re-runnable: train(RUN/train_config.json))
    log.csv                  one row per epoch (lr, train loss/top-1, validation metrics, times)
    curves.png               loss and accuracy curves (needs matplotlib; skipped with a message)
    tensorboard/             scalars, when torch.utils.tensorboard imports (optional extra)
    checkpoints/last.pt      atomic, every epoch and every train.checkpoint_every_steps steps
    checkpoints/best.pt      the best epoch by train.best_metric
    export/                  model.safetensors + config.json (labels, input spec) + metrics.json
    eval/                    final video-level evaluation: metrics.json, confusion.png
    data_issues.json         skipped rows / videos with file and line

``resume=True`` continues from ``checkpoints/last.pt`` exactly: model, optimizer, schedule,
gradient scaler, RNG states, epoch and step inside it; the data order and the augmentation of
every clip are functions of (seed, epoch, video), so the resumed run takes the same steps as an
uninterrupted one.  A config that differs from the checkpoint's is refused, the differences listed,
unless accepted (``accept_config_changes``; :data:`.config.RESUME_SAFE` lists the keys that may change).

A non-finite loss, gradient or weight stops the run with :class:`~video3d_zoo.errors.TrainingDivergedError`
before anything is saved (:mod:`.guard`): ``last.pt``, ``best.pt`` and an earlier export stay good.

The :class:`Trainer` is one class holding the run's state; what it builds once (run folder, data,
model, optimiser from the model's parameter groups) are plain functions in :mod:`.trainer_setup`,
and what it leaves behind (logs, the final evaluation, the export) plain functions in
:mod:`.trainer_finish`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..inference.precision import autocast, resolve_amp
from .checkpoint import CheckpointDir, gather_rng, set_rng_state
from .config import load_config
from .config_schema import TrainConfig
from .data import ClipSampling, ShardedBatchSampler, TrainClips, collate_train, worker_init
from .distributed import (DistInfo, all_reduce_sum, barrier, broadcast_object, cleanup, init_distributed, unwrap,
                          wrap_model)
from .evaluate import EvalResult, predict_videos
from .guard import DivergenceGuard
from .prepare import seed_everything, set_train_mode
from .schedule import LRSchedule
from .trainer_finish import (done_line, export_run, final_metrics, is_better, open_tensorboard, report_epoch,
                             run_summary)
from .trainer_setup import (Echo, build_model, build_optimizer, describe_data, describe_model, group_weight_decay,
                            prepare_run_folder, read_data, run_dir)
from .videolist import DataIssues

# Fault injection for the resume tests: SIGKILL this process after that many optimizer steps.
KILL_ENV = "VIDEO3D_ZOO_TEST_KILL_AFTER_STEP"


class Trainer:
    """One training run: :meth:`setup` builds it (run folder, data, model, optimiser), :meth:`run_training`
    runs the epochs, keeps the resumable state and leaves the logs and the export behind."""

    def __init__(self, config: TrainConfig, resume: bool = False, accept_config_changes: bool = False) -> None:
        self.cfg = config
        self.resume = resume
        self.accept_config_changes = accept_config_changes
        self.info = DistInfo()
        self.echo = Echo(self.info)
        self._resume_state: Optional[Dict[str, Any]] = None
        self._loader = None

    def setup(self) -> None:
        cfg = self.cfg
        self.info = info = init_distributed(cfg.train.device)
        self.echo = Echo(info)
        self.device = info.device
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed, cfg.train.deterministic, self.device)
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        self.guard = DivergenceGuard(cfg, info, self.amp_dtype)
        self.run = run_dir(cfg)
        self.ckpt = CheckpointDir(self.run)
        problem, self._resume_state = (prepare_run_folder(cfg, self.run, self.ckpt, self.resume,
                                                          self.accept_config_changes, self.echo)
                                       if info.is_main else (None, None))
        problem = broadcast_object(problem, info)
        if problem is not None:
            raise problem
        self.issues = DataIssues(cfg.data.on_error, echo=self.echo)
        self._val_cache = {} if cfg.data.cache else None
        self.train_videos, self.val_videos, self.labels = read_data(cfg, info, self.rank_issues(), self.echo)
        self.echo(describe_data(self.train_videos, self.val_videos, self.issues))
        built = build_model(cfg, self.labels, self.device, self.echo)
        self.spec, self.sampling, self.eval_sampling, self.frozen = (built.spec, built.sampling,
                                                                     built.eval_sampling, built.frozen)
        self.net = wrap_model(built.model, info, sync_bn=cfg.model.sync_bn)
        self.bare = unwrap(self.net)
        self.optimizer = build_optimizer(self.bare, cfg)
        self.sampler = ShardedBatchSampler(len(self.train_videos), cfg.train.batch_size, info.rank, info.world_size,
                                           cfg.train.accumulate, cfg.train.seed)
        self.schedule = LRSchedule(self.optimizer, cfg.schedule, cfg.train.epochs, self.sampler.steps_per_epoch)
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler) if use_scaler else None
        self.echo(describe_model(cfg, self.bare, built, info, self.amp_dtype))

    def rank_issues(self) -> DataIssues:
        """Where this process reports data problems: the run's report on rank 0, a silent one elsewhere."""
        return self.issues if self.info.is_main else DataIssues(self.cfg.data.on_error, echo=lambda _t: None)

    # state -------------------------------------------------------------------------------------------
    def state(self, epoch: int, step: int) -> Dict[str, Any]:
        return {
            "epoch": epoch, "step_in_epoch": step, "global_step": self.global_step,
            "model": {k: v.detach().cpu() for k, v in self.bare.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": self.rng_states,
            "history": self.history,
            "epoch_stats": self.epoch_stats.tolist(),
            "best": dict(self.best),
            "elapsed_s": self.elapsed(),
            "config": self.cfg.to_json(),
            "data_issues": dict(self.issues.counts),
        }

    def save(self, epoch: int, step: int, best: bool = False) -> None:
        self.guard.require_finite(self.bare, "write a checkpoint with non-finite weights")  # collective
        self.rng_states = gather_rng(self.info)  # collective: every rank calls it
        if self.info.is_main:
            self.ckpt.save(self.state(epoch, step), best=best)
        self.guard.saved_at(epoch, step, self.global_step)

    def load(self, state: Dict[str, Any]) -> Tuple[int, int]:
        self.bare.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        o = self.cfg.optim  # the checkpoint's hyperparameters give way to the config's (equal unless changed)
        for group, base_lr in zip(self.optimizer.param_groups, self.schedule.base_lrs):
            group.update(momentum=o.momentum, dampening=o.dampening, nesterov=o.nesterov, initial_lr=base_lr,
                         weight_decay=group_weight_decay(group, o.weight_decay))
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        set_rng_state(rngs[self.info.rank] if self.info.rank < len(rngs) else rngs[0])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.epoch_stats = torch.tensor(state["epoch_stats"], dtype=torch.float64)
        self.best = dict(state["best"])
        self._elapsed_before = float(state["elapsed_s"])
        self.guard.saved_at(int(state["epoch"]), int(state["step_in_epoch"]), self.global_step)
        for kind, n in state.get("data_issues", {}).items():
            self.issues.counts[kind] = max(self.issues.counts.get(kind, 0), int(n))
        return int(state["epoch"]), int(state["step_in_epoch"])

    def elapsed(self) -> float:
        return self._elapsed_before + (time.time() - self._t0)

    # the epochs --------------------------------------------------------------------------------------
    def run_training(self) -> Path:
        cfg = self.cfg
        start_epoch, start_step = self._start()
        writer = (open_tensorboard(self.run, self.global_step, self.echo)
                  if cfg.train.tensorboard and self.info.is_main else None)
        kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
        stop = False
        for epoch in range(start_epoch, cfg.train.epochs):
            epoch_t0 = time.time()
            first_step = start_step if epoch == start_epoch else 0
            if first_step == 0:
                self.epoch_stats.zero_()
            stop = self._train_epoch(epoch, first_step, writer, kill_after)
            if stop and not self._epoch_complete:
                break
            self._end_epoch(epoch, time.time() - epoch_t0, writer)
            if stop:
                break
        if writer is not None:
            writer.close()
        self._finish()
        return self.run

    def _start(self) -> Tuple[int, int]:
        """A fresh state, or the checkpoint's with ``resume``; returns the (epoch, step) to start from."""
        self._t0 = time.time()
        self._elapsed_before = 0.0
        self.global_step = 0
        self.history: List[Dict[str, Any]] = []
        self.epoch_stats = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, samples
        self.best = {"metric": self.cfg.train.best_metric, "value": None, "epoch": None}
        self.rng_states: List[Any] = []
        if self.resume and self.ckpt.exists():
            state, self._resume_state = self._resume_state or self.ckpt.load_last(), None
            start_epoch, start_step = self.load(state)
            self.echo(f"resumed {self.run} at epoch {start_epoch + 1}, step {start_step} "
                      f"(global step {self.global_step})")
            return start_epoch, start_step
        if self.resume:
            self.echo(f"nothing to resume in {self.run}: starting afresh")
        return 0, 0

    def _train_epoch(self, epoch: int, first_step: int, writer, kill_after: int) -> bool:
        """One epoch from optimizer step ``first_step``; True when ``train.max_steps`` ends the run."""
        accumulate = self.cfg.train.accumulate
        self.sampler.set_epoch(epoch, first_step)
        loader = self._train_loader()
        steps = self.sampler.steps_per_epoch
        set_train_mode(self.net, self.frozen)
        bar = self._progress_bar(epoch, first_step, steps)
        step, micro = first_step, 0
        self._epoch_complete = False
        lr = self.schedule.apply(epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            for batch in loader:
                loss_value = self._forward_backward(batch, last_micro=micro == accumulate - 1)
                micro += 1
                if micro < accumulate:
                    continue
                micro, step = 0, step + 1
                self.global_step += 1
                self._optimizer_step(epoch, step)
                self._log_step(bar, writer, loss_value, lr)
                if kill_after and self.global_step >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection (tests): no cleanup, like kill -9
                if self._checkpoint_or_stop(epoch, step, steps):
                    return True
                lr = self.schedule.apply(epoch, step)
        finally:
            if bar is not None:
                bar.close()
        self._epoch_complete = True
        return False

    def _forward_backward(self, batch: Dict[str, Any], last_micro: bool) -> float:
        """Loss and gradients of one micro-batch (gradients sync across processes on the last one)."""
        for where, message in batch["errors"]:
            self.issues.report("undecodable_video", where, message)
        x = batch["clip"].to(self.device, non_blocking=True)
        y = batch["label"].to(self.device, non_blocking=True)
        if self.cfg.model.channels_last_3d:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        sync = nullcontext() if (last_micro or not self.info.distributed) else self.net.no_sync()
        with sync:
            with autocast(self.device, self.amp_dtype):
                logits = self.net(x)
                loss = F.cross_entropy(logits.float(), y)
            scaled = loss / self.cfg.train.accumulate
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        with torch.no_grad():
            loss_value = float(loss)
            self.guard.note_loss(loss_value)
            self.epoch_stats += torch.tensor([loss_value * len(y), float((logits.argmax(1) == y).sum()),
                                              float(len(y))], dtype=torch.float64)
        return loss_value

    def _progress_bar(self, epoch: int, first_step: int, steps: int):
        if not (self.cfg.train.progress and self.info.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=steps, initial=first_step, desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
                    unit="step", file=sys.stderr, leave=False, dynamic_ncols=True)

    def _log_step(self, bar, writer, loss_value: float, lr: float) -> None:
        if bar is not None:
            seen = max(1.0, float(self.epoch_stats[2]))
            bar.set_postfix(loss=f"{float(self.epoch_stats[0]) / seen:.3f}",
                            top1=f"{float(self.epoch_stats[1]) / seen:.3f}", lr=f"{lr:.3g}")
            bar.update(1)
        if writer is not None and self.global_step % self.cfg.train.log_every == 0:
            writer.add_scalar("train/loss_step", loss_value, self.global_step)
            writer.add_scalar("train/lr", lr, self.global_step)

    def _checkpoint_or_stop(self, epoch: int, step: int, steps: int) -> bool:
        """The in-epoch checkpoint (``train.checkpoint_every_steps``); True at ``train.max_steps``."""
        cfg = self.cfg
        every = cfg.train.checkpoint_every_steps
        if every and step % every == 0 and step < steps:
            self.save(epoch, step)
        if cfg.train.max_steps and self.global_step >= cfg.train.max_steps:
            self._epoch_complete = step >= steps
            if not self._epoch_complete:
                self.save(epoch, step)
            return True
        return False

    def _train_loader(self):
        """One DataLoader for the whole run (persistent workers keep their decode caches); the
        batch sampler runs in this process, so ``set_epoch`` before each epoch takes effect."""
        if self._loader is None:
            cfg = self.cfg
            workers = cfg.data.num_workers
            dataset = TrainClips(self.train_videos, self.sampling, seed=cfg.train.seed, cache=cfg.data.cache)
            self._loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=self.sampler, num_workers=workers, collate_fn=collate_train,
                worker_init_fn=worker_init if workers else None, pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
        return self._loader

    def _optimizer_step(self, epoch: int, step: int) -> None:
        """One optimizer step (``step``: 1-based in the epoch), then the divergence guard (collective)."""
        clip = self.cfg.optim.clip_grad_norm
        params = [p for p in self.bare.parameters() if p.requires_grad]
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(params, clip)
            self.scaler.step(self.optimizer)  # skips a step with non-finite gradients by itself
            self.scaler.update()
        elif self.guard.grads_finite(params):  # a step with non-finite gradients is never applied
            if clip:
                nn.utils.clip_grad_norm_(params, clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.guard.after_step(self.bare, epoch, step, self.sampler.steps_per_epoch, self.global_step)

    def _end_epoch(self, epoch: int, epoch_time: float, writer) -> Dict[str, Any]:
        """Validate (every ``train.val_every`` epochs and at the end), log, checkpoint."""
        cfg = self.cfg
        stats = all_reduce_sum(self.epoch_stats.clone(), self.info)
        seen = max(1.0, float(stats[2]))
        row: Dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step,
                               "lr": self.optimizer.param_groups[0]["lr"],
                               "train_loss": float(stats[0]) / seen, "train_top1": float(stats[1]) / seen}
        validate = (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs
        if validate:
            m = self._validate()
            row.update(val_loss=m["loss"], val_clip_top1=m["clip_top1"], val_video_top1=m["video_top1"],
                       val_video_top5=m["video_top5"])
        self.schedule.epoch_end(row.get("val_loss"))
        row["epoch_time_s"] = epoch_time
        row["elapsed_s"] = self.elapsed()
        self.history.append(row)
        is_best = is_better(self.best, cfg.train.best_metric, row.get(cfg.train.best_metric))
        if is_best:
            self.best.update(value=row[cfg.train.best_metric], epoch=epoch + 1)
        self.save(epoch + 1, 0, best=is_best)
        if self.info.is_main:
            self.echo(report_epoch(self.run, self.history, writer, cfg.train.epochs, validate, is_best))
        return row

    # validation and the finish step ------------------------------------------------------------------
    def _predict(self, sampling: ClipSampling, desc: str) -> EvalResult:
        cfg = self.cfg
        batch_size = cfg.train.val_batch_size or max(1, cfg.train.batch_size // cfg.train.accumulate)
        return predict_videos(self.bare, self.val_videos, sampling, batch_size=batch_size,
                              num_workers=cfg.data.num_workers, device=self.device, amp_dtype=self.amp_dtype,
                              channels_last=cfg.model.channels_last_3d, info=self.info, issues=self.rank_issues(),
                              progress=cfg.train.progress, desc=desc, cache=self._val_cache)

    def _validate(self) -> Dict[str, Any]:
        return self._predict(self.eval_sampling, "validate").metrics(self.labels)

    def _finish(self) -> None:
        """Load the exported weights (``output.export``), check them, evaluate every non-overlapping
        clip of every validation video, export; rank 0 writes."""
        cfg, info = self.cfg, self.info
        export_dir = self.run / "export"
        if cfg.output.export == "best" and self.ckpt.best.is_file():
            weights = self.ckpt.load_best_weights() if info.is_main else None
            self.bare.load_state_dict(broadcast_object(weights, info))
        self.guard.require_finite(self.bare, f"export non-finite weights to {export_dir}",
                                  keeps=f"{export_dir} was left as it was")  # collective
        metrics = {}
        if cfg.output.final_eval:
            result = self._predict(dataclasses.replace(self.eval_sampling, val_clips=0), "final eval")
            metrics = final_metrics(result, self.labels, self.issues, self.run, info.is_main)
        if info.is_main:
            summary = run_summary(metrics, cfg, self.val_videos, self.spec, self.history, self.global_step, self.best,
                                  self.elapsed(), info.world_size, len(self.train_videos), self.issues)
            export_run(self.bare, self.run, summary, self.issues, self.history, cfg.output.plot)
            self.echo(done_line(metrics, self.elapsed(), self.issues, export_dir))
        barrier(info)


def train(config_path: Union[str, Path, TrainConfig, None] = None, overrides: Sequence[str] = (), *,
          resume: bool = False, accept_config_changes: bool = False) -> Path:
    """Train from a TOML/JSON config (``--set``-style ``overrides``); returns the run folder.

    ``resume=True`` continues the run in the config's run folder from ``checkpoints/last.pt``
    (starting afresh if there is none); a config that differs from the checkpoint's (other than
    the keys in :data:`~video3d_zoo.train.config_schema.RESUME_SAFE`) raises :class:`TrainConfigError`
    listing the changes, unless ``accept_config_changes=True``.  A non-finite loss, gradient or
    weight raises :class:`~video3d_zoo.errors.TrainingDivergedError` before anything non-finite is
    saved.  Under ``torchrun`` every process calls this; rank 0 writes the files.
    """
    config = load_config(config_path, overrides)
    trainer = Trainer(config, resume=resume, accept_config_changes=accept_config_changes)
    # process-wide settings the run changes, restored afterwards for library callers
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    try:
        trainer.setup()
        return trainer.run_training()
    finally:
        cleanup()
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[3], saved[4]
