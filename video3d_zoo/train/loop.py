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
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
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

from ..config import InputSpec, input_preset
from ..errors import CheckpointError, Video3DZooError
from .checkpoint import CheckpointDir, check_resumable, gather_rng, set_rng_state
from .config import TrainConfig, TrainConfigError, describe_changes, load_config
from .data import (DataError, DataIssues, ShardedBatchSampler, TrainClips, collate_train, describe_counts,
                   make_sampling, prepare_synthetic, read_split, worker_init)
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_object, cleanup, init_distributed, unwrap, wrap_model
from .evaluate import amp_context, predict_videos, write_eval_outputs
from .guard import DivergenceGuard
# re-exported: these lived here before prepare.py
from .prepare import cpu_native_bf16, freeze_before, resolve_amp, seed_everything, set_train_mode  # noqa: F401
from .schedule import LRSchedule

CSV_FIELDS = ("epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_clip_top1",
              "val_video_top1", "val_video_top5", "epoch_time_s", "elapsed_s")
# Fault injection for the resume tests: SIGKILL this process after that many optimizer steps.
KILL_ENV = "VIDEO3D_ZOO_TEST_KILL_AFTER_STEP"


# -- helpers ----------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class _Echo:
    def __init__(self, info: DistInfo):
        self.info = info

    def __call__(self, text: str) -> None:
        if self.info.is_main:
            try:
                from tqdm import tqdm

                tqdm.write(text, file=sys.stderr)
            except ImportError:  # pragma: no cover
                print(text, file=sys.stderr)


# -- the trainer --------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False, accept_config_changes: bool = False) -> None:
        self.cfg = config
        self.resume = resume
        self.accept_config_changes = accept_config_changes
        self.info = DistInfo()
        self.echo = _Echo(self.info)
        self._resume_state: Optional[Dict[str, Any]] = None

    # setup -------------------------------------------------------------------------------------------
    def run_dir(self) -> Path:
        name = self.cfg.output.name or (Path(self.cfg.source).stem if self.cfg.source else "run")
        return Path(self.cfg.output.dir) / name

    def setup(self) -> None:
        cfg = self.cfg
        self.info = info = init_distributed(cfg.train.device)
        self.echo = _Echo(info)
        self.device = info.device
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed, cfg.train.deterministic, self.device)
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        self.guard = DivergenceGuard(cfg, info, self.amp_dtype)
        self.run = self.run_dir()
        self.ckpt = CheckpointDir(self.run)
        problem = broadcast_object(self._prepare_run_folder() if info.is_main else None, info)
        if problem is not None:
            raise problem
        self.issues = DataIssues(cfg.data.on_error, echo=self.echo)
        self._val_cache = {} if cfg.data.cache else None
        self._setup_data()
        self._setup_model()

    def _prepare_run_folder(self) -> Optional[Video3DZooError]:
        """Rank 0, before anything is written: refuse to clobber a run, check what --resume would
        continue from, then write train_config.json.  Returns the error for every rank to raise."""
        cfg = self.cfg
        try:
            if self.ckpt.exists() and not self.resume and not cfg.output.overwrite:
                raise TrainConfigError(f"{self.run} already holds a run (checkpoints/last.pt): resume it with "
                                       "--resume, or set output.name to another name, or output.overwrite=true "
                                       "to start afresh")
            if self.resume and self.ckpt.exists():
                self._resume_state = self._check_resume(self.ckpt.load_last())
            try:
                self.run.mkdir(parents=True, exist_ok=True)
                cfg.save(self.run / "train_config.json")
            except OSError as exc:
                raise TrainConfigError(f"output.dir / output.name: cannot write the run folder {self.run} "
                                       f"({exc})") from exc
        except Video3DZooError as exc:
            return exc
        return None

    def _check_resume(self, state: Dict[str, Any]) -> Dict[str, Any]:
        changes = check_resumable(state, self.cfg, self.ckpt.last, self.accept_config_changes)
        if changes:
            self.echo(f"resuming with config changes (accepted): {describe_changes(changes)}")
        return state

    def _setup_data(self) -> None:
        cfg, info = self.cfg, self.info
        if cfg.data.format == "synthetic":
            if info.is_main:
                prepare_synthetic(cfg.data, echo=self.echo, progress=cfg.train.progress)
            barrier(info)
        issues = self.issues if info.is_main else DataIssues(cfg.data.on_error, echo=lambda _t: None)
        self.train_videos = read_split(cfg.data, "train", issues)
        self.labels = list(self.train_videos.labels)
        self.val_videos = read_split(cfg.data, "val", issues, labels=self.labels)
        self.echo(f"train: {describe_counts(self.train_videos)}; val: {describe_counts(self.val_videos)}"
                  + (f"; {self.issues.summary()}" if self.issues.total else ""))

    def _create_model(self, pretrained: Any, num_classes: int) -> nn.Module:
        from ..api import create_model

        mc = self.cfg.model
        try:
            return create_model(mc.name, pretrained=pretrained or None, num_classes=num_classes,
                                in_chans=mc.in_chans, **mc.arch_kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            if not mc.arch_kwargs or isinstance(exc, CheckpointError):  # not about the arguments
                raise
            raise TrainConfigError(f"model.arch_kwargs = {mc.arch_kwargs!r}: {mc.name} cannot be built with "
                                   f"them ({exc})") from exc

    def _setup_model(self) -> None:
        cfg, info = self.cfg, self.info
        mc = cfg.model
        num_classes = mc.num_classes or len(self.labels)
        if num_classes != len(self.labels):
            raise TrainConfigError(f"model.num_classes = {num_classes} but the training data has "
                                   f"{len(self.labels)} classes")
        pretrained: Any = mc.pretrained
        if pretrained in ("default", "true"):
            pretrained = True
        model = self._create_model(pretrained, num_classes)
        spec = model.config.input_spec
        if mc.input_preset:
            spec = input_preset(mc.input_preset)
        changes: Dict[str, Any] = {}
        if mc.frames:
            changes["frames"] = mc.frames
        if mc.crop_size:
            changes["crop_size"] = mc.crop_size
        if mc.resize:
            changes["resize"] = mc.resize
        elif mc.crop_size:
            changes["resize"] = mc.crop_size
        spec = spec.replace(**changes)
        self.spec: InputSpec = spec
        self.sampling = make_sampling(cfg.data, spec)
        self.eval_sampling = make_sampling(cfg.data, spec, train=False)
        model.config = model.config.replace(num_classes=num_classes, labels=tuple(self.labels), input_spec=spec,
                                            source=f"video3d_zoo.train {Path(cfg.source).name if cfg.source else ''}".strip(),
                                            tag=None)
        self.frozen: List[str] = []
        if pretrained and cfg.finetune.from_stage != "all":
            self.frozen = freeze_before(model, cfg.finetune.from_stage)
            self.echo(f"fine-tuning from {cfg.finetune.from_stage}: frozen {', '.join(self.frozen) or 'nothing'}")
        model.to(self.device)
        if mc.channels_last_3d:
            model = model.to(memory_format=torch.channels_last_3d)
        self.model = model
        self.net = wrap_model(model, info, sync_bn=mc.sync_bn)
        self.bare = unwrap(self.net)
        params = [p for p in self.bare.parameters() if p.requires_grad]
        if not params:
            raise TrainConfigError("nothing to train: every parameter is frozen")
        o = cfg.optim
        self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, dampening=o.dampening,
                                         weight_decay=o.weight_decay, nesterov=o.nesterov)
        self.sampler = ShardedBatchSampler(len(self.train_videos), cfg.train.batch_size, info.rank, info.world_size,
                                           cfg.train.accumulate, cfg.train.seed)
        self.schedule = LRSchedule(self.optimizer, cfg.schedule, cfg.train.epochs, self.sampler.steps_per_epoch)
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler) if use_scaler else None
        n_params = sum(p.numel() for p in self.bare.parameters())
        n_train = sum(p.numel() for p in params)
        self.echo(f"model {mc.name} {mc.arch_kwargs or ''}: {n_params / 1e6:.3f} M parameters "
                  f"({n_train / 1e6:.3f} M trained); input {spec.frames}x{spec.crop_size}x{spec.crop_size} "
                  f"(resize {self.sampling.resize}); {info.world_size} process(es) on {self.device}; "
                  f"amp {self.amp_dtype or 'off'}")

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

    # loop --------------------------------------------------------------------------------------------
    def run_training(self) -> Path:
        cfg = self.cfg
        self._t0 = time.time()
        self._elapsed_before = 0.0
        self.global_step = 0
        self.history: List[Dict[str, Any]] = []
        self.epoch_stats = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, samples
        self.best = {"metric": cfg.train.best_metric, "value": None, "epoch": None}
        self.rng_states: List[Any] = []
        start_epoch, start_step = 0, 0
        if self.resume and self.ckpt.exists():
            state, self._resume_state = self._resume_state or self.ckpt.load_last(), None
            start_epoch, start_step = self.load(state)
            self.echo(f"resumed {self.run} at epoch {start_epoch + 1}, step {start_step} "
                      f"(global step {self.global_step})")
        elif self.resume:
            self.echo(f"nothing to resume in {self.run}: starting afresh")
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

    def _train_epoch(self, epoch: int, first_step: int, writer, kill_after: int) -> bool:
        cfg, info = self.cfg, self.info
        self.sampler.set_epoch(epoch, first_step)
        loader = self._train_loader()
        steps = self.sampler.steps_per_epoch
        accumulate = cfg.train.accumulate
        set_train_mode(self.net, self.frozen)
        bar = None
        if cfg.train.progress and info.is_main:
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=first_step, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       unit="step", file=sys.stderr, leave=False, dynamic_ncols=True)
        step = first_step
        micro = 0
        self._epoch_complete = False
        lr = self.schedule.apply(epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        for batch in loader:
            for where, message in batch["errors"]:
                self.issues.report("undecodable_video", where, message)
            x = batch["clip"].to(self.device, non_blocking=True)
            y = batch["label"].to(self.device, non_blocking=True)
            if cfg.model.channels_last_3d:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            last_micro = micro == accumulate - 1
            sync = nullcontext() if (last_micro or not info.distributed) else self.net.no_sync()
            with sync:
                with amp_context(self.device, self.amp_dtype):
                    logits = self.net(x)
                    loss = F.cross_entropy(logits.float(), y)
                scaled = loss / accumulate
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            with torch.no_grad():
                loss_value = float(loss)
                self.guard.note_loss(loss_value)
                self.epoch_stats += torch.tensor([loss_value * len(y), float((logits.argmax(1) == y).sum()),
                                                  float(len(y))], dtype=torch.float64)
            micro += 1
            if not last_micro:
                continue
            micro = 0
            step += 1
            self.global_step += 1
            self._optimizer_step(epoch, step)
            if bar is not None:
                seen = max(1.0, float(self.epoch_stats[2]))
                bar.set_postfix(loss=f"{float(self.epoch_stats[0]) / seen:.3f}",
                                top1=f"{float(self.epoch_stats[1]) / seen:.3f}", lr=f"{lr:.3g}")
                bar.update(1)
            if writer is not None and self.global_step % cfg.train.log_every == 0:
                writer.add_scalar("train/loss_step", loss_value, self.global_step)
                writer.add_scalar("train/lr", lr, self.global_step)
            if kill_after and self.global_step >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # fault injection (tests): no cleanup, like kill -9
            every = cfg.train.checkpoint_every_steps
            if every and step % every == 0 and step < steps:
                self.save(epoch, step)
            if cfg.train.max_steps and self.global_step >= cfg.train.max_steps:
                if bar is not None:
                    bar.close()
                self._epoch_complete = step >= steps
                if not self._epoch_complete:
                    self.save(epoch, step)
                return True
            lr = self.schedule.apply(epoch, step)
        if bar is not None:
            bar.close()
        self._epoch_complete = True
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

    def _validate(self) -> Dict[str, Any]:
        cfg = self.cfg
        result = predict_videos(self.bare, self.val_videos, self.eval_sampling,
                                batch_size=cfg.train.val_batch_size or max(1, cfg.train.batch_size // cfg.train.accumulate),
                                num_workers=cfg.data.num_workers, device=self.device, amp_dtype=self.amp_dtype,
                                channels_last=cfg.model.channels_last_3d, info=self.info,
                                issues=self.issues if self.info.is_main else DataIssues(cfg.data.on_error, echo=lambda _t: None),
                                progress=cfg.train.progress, desc="validate", cache=self._val_cache)
        return result.metrics(self.labels)

    def _end_epoch(self, epoch: int, epoch_time: float, writer) -> Dict[str, Any]:
        cfg, info = self.cfg, self.info
        stats = all_reduce_sum(self.epoch_stats.clone(), info)
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
        is_best = False
        key = cfg.train.best_metric
        if row.get(key) is not None:
            value = row[key]
            better = (self.best["value"] is None or
                      (value < self.best["value"] if key == "val_loss" else value > self.best["value"]))
            if better:
                self.best.update(value=value, epoch=epoch + 1)
                is_best = True
        self.save(epoch + 1, 0, best=is_best)
        if info.is_main:
            self._write_csv()
            if writer is not None:
                for k, v in row.items():
                    if k not in ("epoch", "step") and v is not None:
                        writer.add_scalar(("val/" if k.startswith("val_") else "train/") + k, v, epoch + 1)
                writer.flush()
            val = (f"; val loss {row['val_loss']:.4f}, clip top-1 {row['val_clip_top1']:.4f}, "
                   f"video top-1 {row['val_video_top1']:.4f}" if validate else "")
            self.echo(f"epoch {epoch + 1}/{cfg.train.epochs}: lr {row['lr']:.4g}, train loss {row['train_loss']:.4f}, "
                      f"top-1 {row['train_top1']:.4f}{val} ({epoch_time:.1f} s){' *' if is_best else ''}")
        return row

    def _write_csv(self) -> None:
        from ..weights import atomic_path

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in self.history:
            w.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
        with atomic_path(self.run / "log.csv") as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")

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

    def _finish(self) -> None:
        cfg, info = self.cfg, self.info
        export_dir = self.run / "export"
        if cfg.output.export == "best" and self.ckpt.best.is_file():
            weights = self.ckpt.load_best_weights() if info.is_main else None
            weights = broadcast_object(weights, info)
            self.bare.load_state_dict(weights)
        self.guard.require_finite(self.bare, f"export non-finite weights to {export_dir}",
                                  keeps=f"{export_dir} was left as it was")  # collective
        metrics: Dict[str, Any] = {}
        if cfg.output.final_eval:
            result = predict_videos(self.bare, self.val_videos, dataclasses.replace(self.eval_sampling, val_clips=0),
                                    batch_size=cfg.train.val_batch_size or max(1, cfg.train.batch_size // cfg.train.accumulate),
                                    num_workers=cfg.data.num_workers, device=self.device, amp_dtype=self.amp_dtype,
                                    channels_last=cfg.model.channels_last_3d, info=info,
                                    issues=self.issues if info.is_main else DataIssues(cfg.data.on_error, echo=lambda _t: None),
                                    progress=cfg.train.progress, desc="final eval", cache=self._val_cache)
            full = result.metrics(self.labels, with_confusion=True)
            full["skipped"] = dict(self.issues.counts)
            metrics = {k: v for k, v in full.items() if k not in ("confusion", "labels")}
            if info.is_main:
                write_eval_outputs(full, self.run / "eval")
        if info.is_main:
            from ..weights import atomic_path, save_pretrained

            model = self.bare
            config = model.config
            save_pretrained(model, export_dir, config)
            summary = {
                "evaluated_on": f"{self.val_videos.name} ({len(self.val_videos)} videos, every non-overlapping "
                                f"{self.spec.frames}-frame clip, centre crop {self.spec.crop_size})",
                **{k: metrics[k] for k in ("clip_top1", "clip_top5", "video_top1", "video_top5",
                                           "mean_class_top1", "loss", "num_videos", "num_clips") if k in metrics},
                "epochs": len(self.history), "global_steps": self.global_step,
                "weights": cfg.output.export, "best": self.best,
                "train_time_s": round(self.elapsed(), 1), "processes": info.world_size,
                "train_videos": len(self.train_videos), "data_issues": dict(self.issues.counts),
                "config": cfg.to_dict(),
            }
            with atomic_path(export_dir / "metrics.json") as tmp:
                tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            with atomic_path(self.run / "data_issues.json") as tmp:
                tmp.write_text(json.dumps(self.issues.to_dict(), indent=2) + "\n", encoding="utf-8")
            if cfg.output.plot:
                from .plots import plot_curves

                plot_curves(self.history, self.run / "curves.png", title=self.run.name)
            msg = (f"done: video top-1 {metrics['video_top1']:.4f}, top-5 {metrics['video_top5']:.4f}, "
                   f"clip top-1 {metrics['clip_top1']:.4f} on {metrics['num_videos']} videos; "
                   if metrics else "done: ")
            self.echo(msg + f"{self.elapsed():.0f} s; {self.issues.summary()}; exported {export_dir}")
        barrier(info)


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m video3d_zoo.train CONFIG [--set key=value ...] [--resume [--accept-config-changes]]``.

    A user error (bad config, bad value, unreadable data, a diverged run) ends as one line on stderr
    and exit status 2."""
    import argparse

    p = argparse.ArgumentParser(prog="video3d-zoo train",
                                description="train a model from a TOML / JSON config (see configs/)")
    p.add_argument("config", help="config file (.toml or .json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoints/last.pt")
    p.add_argument("--accept-config-changes", action="store_true",
                   help="with --resume: continue even though the config differs from the checkpoint's "
                        "(the differences are listed either way)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    if args.accept_config_changes and not args.resume:
        p.error("--accept-config-changes only applies with --resume")
    try:
        if args.print_config:
            print(load_config(args.config, args.overrides).to_json())
            return 0
        run_dir = train(args.config, args.overrides, resume=args.resume,
                        accept_config_changes=args.accept_config_changes)
    except (Video3DZooError, DataError) as exc:
        print(f"video3d-zoo train: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(run_dir)
    return 0
