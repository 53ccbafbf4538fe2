"""Setting up a training run: the run folder, the data, the model and its optimiser.

Plain functions the :class:`~video3d_zoo.train.loop.Trainer` calls once, in its ``setup``; each
takes what it needs and returns what it built.  The optimiser's parameter groups come from
the model (:mod:`.param_groups`): the parameters its ``no_weight_decay()`` names (norm weights and
biases, for the zoo's models) get no weight decay.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import CheckpointError, TrainConfigError, Video3DZooError
from ..models.config import InputSpec, input_preset
from .checkpoint import CheckpointDir, check_resumable
from .config_changes import describe_changes
from .config_schema import TrainConfig
from .data import ClipSampling, describe_counts, make_sampling, prepare_synthetic
from .distributed import DistInfo, barrier
from .param_groups import param_groups_weight_decay
from .prepare import freeze_before
from .splits import read_split
from .videolist import DataIssues
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


def run_dir(cfg: TrainConfig) -> Path:
    name = cfg.output.name or (Path(cfg.source).stem if cfg.source else "run")
    return Path(cfg.output.dir) / name


# -- the run folder ----------------------------------------------------------------------------------
def prepare_run_folder(cfg: TrainConfig, run: Path, ckpt: CheckpointDir, resume: bool, accept_config_changes: bool,
                       echo) -> Tuple[Optional[Video3DZooError], Optional[Dict[str, Any]]]:
    """Rank 0, before anything is written: refuse to clobber a run, check what ``resume`` would
    continue from, then write ``train_config.json``.  Returns ``(the error for every rank to raise,
    the checkpoint state to resume from)``."""
    state = None
    try:
        if ckpt.exists() and not resume and not cfg.output.overwrite:
            raise TrainConfigError(f"{run} already holds a run (checkpoints/last.pt): resume it with "
                                   "--resume, or set output.name to another name, or output.overwrite=true "
                                   "to start afresh")
        if resume and ckpt.exists():
            state = ckpt.load_last()
            changes = check_resumable(state, cfg, ckpt.last, accept_config_changes)
            if changes:
                echo(f"resuming with config changes (accepted): {describe_changes(changes)}")
        try:
            run.mkdir(parents=True, exist_ok=True)
            cfg.save(run / "train_config.json")
        except OSError as exc:
            raise TrainConfigError(f"output.dir / output.name: cannot write the run folder {run} ({exc})") from exc
    except Video3DZooError as exc:
        return exc, None
    return None, state


# -- data ------------------------------------------------------------------------------------------------
def read_data(cfg: TrainConfig, info: DistInfo, issues: DataIssues, echo):
    """``(train videos, validation videos, labels)``; synthetic data is generated first (rank 0)."""
    if cfg.data.format == "synthetic":
        if info.is_main:
            prepare_synthetic(cfg.data, echo=echo, progress=cfg.train.progress)
        barrier(info)
    train_videos = read_split(cfg.data, "train", issues)
    labels = list(train_videos.labels)
    val_videos = read_split(cfg.data, "val", issues, labels=labels)
    return train_videos, val_videos, labels


def describe_data(train_videos, val_videos, issues: DataIssues) -> str:
    return (f"train: {describe_counts(train_videos)}; val: {describe_counts(val_videos)}"
            + (f"; {issues.summary()}" if issues.total else ""))


# -- model -----------------------------------------------------------------------------------------------
@dataclass
class BuiltModel:
    """The model of a run (on its device, labels and input spec in its config) and how it is fed."""

    model: nn.Module
    spec: InputSpec
    sampling: ClipSampling
    eval_sampling: ClipSampling
    frozen: List[str]


def _create_model(cfg: TrainConfig, pretrained: Any, num_classes: int) -> nn.Module:
    from ..api import create_model

    mc = cfg.model
    try:
        return create_model(mc.name, pretrained=pretrained or None, num_classes=num_classes,
                            in_chans=mc.in_chans, **mc.arch_kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        if not mc.arch_kwargs or isinstance(exc, CheckpointError):  # not about the arguments
            raise
        raise TrainConfigError(f"model.arch_kwargs = {mc.arch_kwargs!r}: {mc.name} cannot be built with "
                               f"them ({exc})") from exc


def input_spec(cfg: TrainConfig, model: nn.Module) -> InputSpec:
    """The model's input spec with the config's preset, frames, crop size and resize applied."""
    mc = cfg.model
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


def build_model(cfg: TrainConfig, labels: List[str], device: torch.device, echo) -> BuiltModel:
    """The model for ``labels``: pretrained as the config says, stages frozen for fine-tuning."""
    mc = cfg.model
    num_classes = mc.num_classes or len(labels)
    if num_classes != len(labels):
        raise TrainConfigError(f"model.num_classes = {num_classes} but the training data has "
                               f"{len(labels)} classes")
    pretrained: Any = True if mc.pretrained in ("default", "true") else mc.pretrained
    model = _create_model(cfg, pretrained, num_classes)
    spec = input_spec(cfg, model)
    source = f"video3d_zoo.train {Path(cfg.source).name if cfg.source else ''}".strip()
    model.config = model.config.replace(num_classes=num_classes, labels=tuple(labels), input_spec=spec,
                                        source=source, tag=None)
    frozen: List[str] = []
    if pretrained and cfg.finetune.from_stage != "all":
        frozen = freeze_before(model, cfg.finetune.from_stage)
        echo(f"fine-tuning from {cfg.finetune.from_stage}: frozen {', '.join(frozen) or 'nothing'}")
    model.to(device)
    if mc.channels_last_3d:
        model = model.to(memory_format=torch.channels_last_3d)
    return BuiltModel(model, spec, make_sampling(cfg.data, spec), make_sampling(cfg.data, spec, train=False), frozen)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD over the trainable parameters in the model's groups: ``optim.weight_decay`` for the
    weights, none for what ``model.no_weight_decay()`` names (``group_name`` says which group is which)."""
    o = cfg.optim
    groups = [g for g in param_groups_weight_decay(model, o.weight_decay) if g["params"]]
    if not groups:
        raise TrainConfigError("nothing to train: every parameter is frozen")
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, dampening=o.dampening, nesterov=o.nesterov)


def group_weight_decay(group: Dict[str, Any], weight_decay: float) -> float:
    """The weight decay of an optimiser group built by :func:`build_optimizer`."""
    return 0.0 if str(group.get("group_name", "")).endswith("no_decay") else weight_decay


def describe_model(cfg: TrainConfig, model: nn.Module, built: BuiltModel, info: DistInfo,
                   amp_dtype: Optional[torch.dtype]) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    spec = built.spec
    return (f"model {cfg.model.name} {cfg.model.arch_kwargs or ''}: {n_params / 1e6:.3f} M parameters "
            f"({n_train / 1e6:.3f} M trained); input {spec.frames}x{spec.crop_size}x{spec.crop_size} "
            f"(resize {built.sampling.resize}); {count(info.world_size, 'process')} on {info.device}; "
            f"amp {amp_dtype or 'off'}")
