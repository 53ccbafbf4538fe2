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

The :class:`Trainer` comes in three parts: :mod:`.trainer_setup` (run folder, data, model,
optimizer), this module (the epochs and the resumable state) and :mod:`.trainer_finish`
(validation, logs, the final evaluation and the export).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..inference.precision import autocast
from .checkpoint import gather_rng, set_rng_state
from .config import TrainConfig, load_config
from .data import TrainClips, collate_train, worker_init
from .distributed import all_reduce_sum, cleanup
# re-exported: these lived here before prepare.py / precision.py / trainer_finish.py
from .prepare import freeze_before, resolve_amp, seed_everything, set_train_mode  # noqa: F401
from .trainer_finish import CSV_FIELDS, TrainerFinish  # noqa: F401
from .trainer_setup import TrainerSetup

# Fault injection for the resume tests: SIGKILL this process after that many optimizer steps.
KILL_ENV = "VIDEO3D_ZOO_TEST_KILL_AFTER_STEP"


class Trainer(TrainerSetup, TrainerFinish):
    """One training run: :class:`.trainer_setup.TrainerSetup` builds it, this class runs the epochs
    and keeps the resumable state, :class:`.trainer_finish.TrainerFinish` logs and exports."""

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
            group.update(momentum=o.momentum, dampening=o.dampening, weight_decay=o.weight_decay,
                         nesterov=o.nesterov, initial_lr=base_lr)
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
        writer = self._tensorboard()
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
        if getattr(self, "_loader", None) is None:
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
        is_best = self._update_best(row, epoch)
        self.save(epoch + 1, 0, best=is_best)
        if self.info.is_main:
            self._report_epoch(row, writer, validate, is_best)
        return row

    def _update_best(self, row: Dict[str, Any], epoch: int) -> bool:
        """Whether this epoch is the best so far by ``train.best_metric`` (recorded if so)."""
        key = self.cfg.train.best_metric
        value = row.get(key)
        if value is None:
            return False
        best = self.best["value"]
        if best is not None and not (value < best if key == "val_loss" else value > best):
            return False
        self.best.update(value=value, epoch=epoch + 1)
        return True

    def _report_epoch(self, row: Dict[str, Any], writer, validate: bool, is_best: bool) -> None:
        """Rank 0: ``log.csv``, TensorBoard scalars and the epoch's line."""
        epoch = row["epoch"]
        self._write_csv()
        if writer is not None:
            for k, v in row.items():
                if k not in ("epoch", "step") and v is not None:
                    writer.add_scalar(("val/" if k.startswith("val_") else "train/") + k, v, epoch)
            writer.flush()
        val = (f"; val loss {row['val_loss']:.4f}, clip top-1 {row['val_clip_top1']:.4f}, "
               f"video top-1 {row['val_video_top1']:.4f}" if validate else "")
        self.echo(f"epoch {epoch}/{self.cfg.train.epochs}: lr {row['lr']:.4g}, train loss {row['train_loss']:.4f}, "
                  f"top-1 {row['train_top1']:.4f}{val} ({row['epoch_time_s']:.1f} s){' *' if is_best else ''}")

def train(config_path: Union[str, Path, TrainConfig, None] = None, overrides: Sequence[str] = (), *,
          resume: bool = False, accept_config_changes: bool = False) -> Path:
    """Train from a TOML/JSON config (``--set``-style ``overrides``); returns the run folder.

    ``resume=True`` continues the run in the config's run folder from ``checkpoints/last.pt``
    (starting afresh if there is none); a config that differs from the checkpoint's (other than
    the keys in :data:`~video3d_zoo.train.config.RESUME_SAFE`) raises :class:`TrainConfigError`
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
