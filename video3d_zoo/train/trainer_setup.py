"""Setting up a training run: the run folder, the data, the model and its optimizer.

:class:`TrainerSetup` is the first part of :class:`~video3d_zoo.train.loop.Trainer`: after
:meth:`~TrainerSetup.setup` the trainer holds ``run`` (the run folder), ``ckpt``, ``issues``,
``train_videos`` / ``val_videos`` / ``labels``, the input ``spec`` and samplings, ``model``
(``net`` wrapped for DistributedDataParallel, ``bare`` unwrapped), ``frozen``, ``optimizer``,
``sampler``, ``schedule``, ``scaler``, ``amp_dtype`` and the divergence ``guard``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..models.config import InputSpec, input_preset
from ..errors import CheckpointError, TrainConfigError, Video3DZooError
from ..inference.precision import resolve_amp
from .checkpoint import CheckpointDir, check_resumable
from .config import TrainConfig, describe_changes
from .data import DataIssues, ShardedBatchSampler, describe_counts, make_sampling, prepare_synthetic, read_split
from .distributed import DistInfo, barrier, broadcast_object, init_distributed, unwrap, wrap_model
from .guard import DivergenceGuard
from .prepare import freeze_before, seed_everything
from .schedule import LRSchedule
from ..wording import count


class Echo:
    """Progress messages on stderr from the main process only (through tqdm, so bars stay intact)."""

    def __init__(self, info: DistInfo):
        self.info = info

    def __call__(self, text: str) -> None:
        if self.info.is_main:
            try:
                from tqdm import tqdm

                tqdm.write(text, file=sys.stderr)
            except ImportError:  # pragma: no cover
                print(text, file=sys.stderr)


class TrainerSetup:
    """The run folder, data, model, optimizer and schedule of one config (see the module docstring)."""

    def __init__(self, config: TrainConfig, resume: bool = False, accept_config_changes: bool = False) -> None:
        self.cfg = config
        self.resume = resume
        self.accept_config_changes = accept_config_changes
        self.info = DistInfo()
        self.echo = Echo(self.info)
        self._resume_state: Optional[Dict[str, Any]] = None

    def run_dir(self) -> Path:
        name = self.cfg.output.name or (Path(self.cfg.source).stem if self.cfg.source else "run")
        return Path(self.cfg.output.dir) / name

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
        self.run = self.run_dir()
        self.ckpt = CheckpointDir(self.run)
        problem = broadcast_object(self._prepare_run_folder() if info.is_main else None, info)
        if problem is not None:
            raise problem
        self.issues = DataIssues(cfg.data.on_error, echo=self.echo)
        self._val_cache = {} if cfg.data.cache else None
        self._setup_data()
        self._setup_model()

    def rank_issues(self) -> DataIssues:
        """Where this process reports data problems: the run's report on rank 0, a silent one elsewhere."""
        return self.issues if self.info.is_main else DataIssues(self.cfg.data.on_error, echo=lambda _t: None)

    # the run folder --------------------------------------------------------------------------------
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

    # data ------------------------------------------------------------------------------------------
    def _setup_data(self) -> None:
        cfg, info = self.cfg, self.info
        if cfg.data.format == "synthetic":
            if info.is_main:
                prepare_synthetic(cfg.data, echo=self.echo, progress=cfg.train.progress)
            barrier(info)
        issues = self.rank_issues()
        self.train_videos = read_split(cfg.data, "train", issues)
        self.labels = list(self.train_videos.labels)
        self.val_videos = read_split(cfg.data, "val", issues, labels=self.labels)
        self.echo(f"train: {describe_counts(self.train_videos)}; val: {describe_counts(self.val_videos)}"
                  + (f"; {self.issues.summary()}" if self.issues.total else ""))

    # model -----------------------------------------------------------------------------------------
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

    def _input_spec(self, model: nn.Module) -> InputSpec:
        """The model's input spec with the config's preset, frames, crop size and resize applied."""
        mc = self.cfg.model
        spec = input_preset(mc.input_preset) if mc.input_preset else model.config.input_spec
        changes: Dict[str, Any] = {}
        if mc.frames:
            changes["frames"] = mc.frames
        if mc.crop_size:
            changes["crop_size"] = mc.crop_size
        if mc.resize:
            changes["resize"] = mc.resize
        elif mc.crop_size:
            changes["resize"] = mc.crop_size
        return spec.replace(**changes)

    def _setup_model(self) -> None:
        cfg = self.cfg
        mc = cfg.model
        num_classes = mc.num_classes or len(self.labels)
        if num_classes != len(self.labels):
            raise TrainConfigError(f"model.num_classes = {num_classes} but the training data has "
                                   f"{len(self.labels)} classes")
        pretrained: Any = True if mc.pretrained in ("default", "true") else mc.pretrained
        model = self._create_model(pretrained, num_classes)
        self.spec: InputSpec = self._input_spec(model)
        self.sampling = make_sampling(cfg.data, self.spec)
        self.eval_sampling = make_sampling(cfg.data, self.spec, train=False)
        source = f"video3d_zoo.train {Path(cfg.source).name if cfg.source else ''}".strip()
        model.config = model.config.replace(num_classes=num_classes, labels=tuple(self.labels),
                                            input_spec=self.spec, source=source, tag=None)
        self.frozen: List[str] = []
        if pretrained and cfg.finetune.from_stage != "all":
            self.frozen = freeze_before(model, cfg.finetune.from_stage)
            self.echo(f"fine-tuning from {cfg.finetune.from_stage}: frozen {', '.join(self.frozen) or 'nothing'}")
        model.to(self.device)
        if mc.channels_last_3d:
            model = model.to(memory_format=torch.channels_last_3d)
        self.model = model
        self.net = wrap_model(model, self.info, sync_bn=mc.sync_bn)
        self.bare = unwrap(self.net)
        self._setup_optimization()

    def _setup_optimization(self) -> None:
        cfg, info = self.cfg, self.info
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
        spec = self.spec
        self.echo(f"model {cfg.model.name} {cfg.model.arch_kwargs or ''}: {n_params / 1e6:.3f} M parameters "
                  f"({n_train / 1e6:.3f} M trained); input {spec.frames}x{spec.crop_size}x{spec.crop_size} "
                  f"(resize {self.sampling.resize}); {count(info.world_size, 'process')} on {self.device}; "
                  f"amp {self.amp_dtype or 'off'}")
