"""The training configuration's schema: one dataclass per section, every field with its default.

A config file has one table per section (``[model]``, ``[data]``, ``[optim]``, ``[schedule]``,
``[train]``, ``[finetune]``, ``[output]``); the field docstrings here are the reference of every
key.  The key sets below (:data:`CHOICES`, :data:`POSITIVE`, ...) drive validation in
:mod:`.config`, and :data:`RESUME_SAFE` the resume check in :mod:`.config_changes`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..cli.argtypes import TRAIN_FORMATS
from ..fileio import write_text_atomic


@dataclass
class ModelSection:
    name: str = "resnet3d_18"
    """Registered model name (``video3d-zoo list``), optionally ``name.tag`` for pretrained weights."""
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    """Architecture arguments, e.g. ``{widen_factor = 0.5, shortcut_type = "A"}``."""
    pretrained: Optional[str] = None
    """Weights to start from: a manifest tag / alias, ``"default"``, or a checkpoint path."""
    num_classes: Optional[int] = None
    """Classifier size; default: the number of classes in the training data."""
    in_chans: int = 3
    input_preset: Optional[str] = None
    """Input convention (``kenshohara2017``, ``kenshohara2020``, ``torchvision``); default: the model's."""
    frames: Optional[int] = None
    """Clip length T; default: the input preset's (16)."""
    crop_size: Optional[int] = None
    """Spatial crop side; default: the input preset's (112)."""
    resize: Optional[int] = None
    """Short side frames are scaled to before cropping; default: ``crop_size``."""
    channels_last_3d: bool = False
    sync_bn: bool = False
    """Convert BatchNorm to SyncBatchNorm under DistributedDataParallel."""


@dataclass
class SyntheticSection:
    videos_per_class: int = 100
    seed: int = 0
    size: int = 64
    frames: int = 32
    test_fraction: float = 0.25


@dataclass
class DataSection:
    format: str = "folder"
    """One of :data:`~video3d_zoo.cli.argtypes.TRAIN_FORMATS`: ``kinetics`` | ``ucf101`` | ``hmdb51`` |
    ``activitynet`` | ``moments`` | ``stair`` | ``merged`` (see ``merge``) | ``folder`` | ``synthetic``
    (generated into ``root``)."""
    root: str = ""
    """Folder holding the videos."""
    annotations: str = ""
    """Kinetics: the train CSV; UCF-101: the folder with classInd.txt / trainlist0N.txt;
    HMDB-51: the folder with the ``*_test_splitN.txt`` files; folder: the folder with the split lists
    (default: ``root``)."""
    val_annotations: str = ""
    """Kinetics: the validation CSV (default: ``validate.csv`` next to ``annotations``)."""
    split: int = 1
    """UCF-101 / HMDB-51 split number (1, 2 or 3)."""
    train_list: str = "train"
    """Folder format: split list name (``train`` -> ``train.txt``) for training."""
    val_list: str = "test"
    """Folder format: split list for validation / evaluation."""
    on_error: str = "skip"
    """``skip``: report malformed rows, missing and undecodable videos with file and line, skip and
    count them; ``fatal``: stop at the first one."""
    check_videos: str = "exists"
    """Before training: ``exists`` (stat every file), ``probe`` (open every file) or ``none``."""
    decode_short_side: int = 0
    """Decode training videos at this short side before cropping (0 = ``model.resize``); e.g. 240,
    the originals' frame height, so multi-scale crops are cut from full-resolution frames.
    Evaluation always decodes at ``model.resize``."""
    train_crop: str = "corner"
    """``corner`` (the paper's multi-scale corner crop), ``random_resized`` (2020 default) or ``center``."""
    n_scales: int = 5
    scale_step: float = 0.840896415253714
    """Multi-scale corner crop: scales 1, step, step^2, ... (2^-1/4 as in the original)."""
    hflip: bool = True
    """Random horizontal flip (turn off when left/right is part of the label)."""
    temporal_stride: int = 1
    """Take every k-th frame before cropping T frames (2020 ``sample_t_stride``)."""
    fps: Optional[float] = None
    """Resample videos to this frame rate when decoding (default: native)."""
    val_clips: int = 0
    """Validation clips per video: 0 = every non-overlapping clip, N = N evenly spaced clips."""
    num_workers: int = 0
    cache: bool = False
    """Keep decoded videos in memory after their first use (small data sets; per loader worker)."""
    limit_train: int = 0
    """Use only the first N training videos (0 = all); for smoke tests."""
    limit_val: int = 0
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)
    merge: List[str] = field(default_factory=list)
    """``merged`` format: the data sets to concatenate, in class order (e.g. ``["kinetics", "moments"]``:
    Kinetics' classes first, then Moments in Time's, as the KM heads are numbered)."""
    parts: Dict[str, Dict[str, str]] = field(default_factory=dict)
    """``merged`` format: where each set of ``merge`` lives, ``{format: {root, annotations,
    val_annotations}}``, e.g. ``--set data.parts.moments.root=/data/mit``."""


@dataclass
class OptimSection:
    lr: float = 0.1
    momentum: float = 0.9
    dampening: float = 0.0
    weight_decay: float = 1e-3
    nesterov: bool = False
    clip_grad_norm: float = 0.0
    """Clip the global gradient norm to this value (0 = off)."""


@dataclass
class ScheduleSection:
    name: str = "multistep"
    """``multistep`` | ``plateau`` | ``cosine`` | ``constant``."""
    milestones: List[int] = field(default_factory=lambda: [50, 100, 150])
    gamma: float = 0.1
    patience: int = 10
    """Plateau: epochs without improvement of the validation loss before the lr is multiplied by gamma."""
    threshold: float = 1e-4
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    """Linear warmup from ``warmup_start_factor * lr`` over this many epochs (per step)."""
    warmup_start_factor: float = 0.1


@dataclass
class TrainSection:
    epochs: int = 200
    batch_size: int = 128
    """Global batch per optimizer step (over all processes and accumulation steps)."""
    accumulate: int = 1
    """Gradient accumulation steps per optimizer step."""
    val_batch_size: int = 0
    """Clips per evaluation forward pass (0 = batch_size // accumulate)."""
    amp: str = "none"
    """``none`` | ``bf16`` | ``fp16`` | ``auto`` (bf16 where the device runs it natively, fp16 on CUDA
    without bf16, else none).  fp16 uses a gradient scaler."""
    seed: int = 1
    deterministic: bool = True
    threads: int = 0
    """torch intra-op threads per process (0 = leave torch's default)."""
    device: str = "auto"
    """``auto`` | ``cpu`` | ``cuda``."""
    val_every: int = 1
    checkpoint_every_steps: int = 0
    """Also write ``last.pt`` every N optimizer steps inside an epoch (0 = at epoch ends only)."""
    best_metric: str = "val_video_top1"
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True
    """TensorBoard scalars when ``torch.utils.tensorboard`` imports (optional extra)."""
    max_steps: int = 0
    """Stop after this many optimizer steps in all (0 = run every epoch); for tests."""


@dataclass
class FinetuneSection:
    from_stage: str = "layer4"
    """With ``model.pretrained``: train this top-level module and everything after it (``layer4``
    trains layer4 + fc, ``fc`` only the head); earlier ones are frozen, BatchNorm statistics
    included.  ``all`` trains everything.  Ignored without pretrained weights."""


@dataclass
class OutputSection:
    dir: str = "runs"
    name: str = ""
    """Run folder name under ``dir``; default: the config file's stem."""
    overwrite: bool = False
    """Start afresh in an existing run folder (otherwise that needs ``--resume`` or a new name)."""
    export: str = "last"
    """Weights exported to ``RUN/export``: ``last`` or ``best`` (by ``train.best_metric``)."""
    plot: bool = True
    final_eval: bool = True
    """Evaluate the exported model on the validation split (every clip) and write metrics.json."""


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    output: OutputSection = field(default_factory=OutputSection)
    source: str = ""
    """The file the config came from (informational)."""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the config as JSON (``train_config.json``), atomically."""
        return write_text_atomic(path, self.to_json() + "\n")


CHOICES = {
    "data.format": TRAIN_FORMATS,
    "data.on_error": ("skip", "fatal"),
    "data.check_videos": ("exists", "probe", "none"),
    "data.train_crop": ("corner", "random_resized", "center"),
    "schedule.name": ("multistep", "plateau", "cosine", "constant"),
    "train.amp": ("none", "bf16", "fp16", "auto"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.best_metric": ("val_video_top1", "val_clip_top1", "val_video_top5", "val_loss"),
    "output.export": ("last", "best"),
}
POSITIVE = {"optim.lr", "data.fps", "data.n_scales", "data.temporal_stride", "train.epochs", "train.batch_size",
            "train.accumulate", "train.val_every", "train.log_every", "model.in_chans",
            "data.synthetic.videos_per_class", "data.synthetic.size", "data.synthetic.frames",
            "model.frames", "model.crop_size", "model.resize", "model.num_classes"}
NON_NEGATIVE = {"optim.momentum", "optim.dampening", "optim.weight_decay",
                "optim.clip_grad_norm", "schedule.min_lr", "schedule.warmup_epochs",
                "schedule.threshold", "schedule.patience", "train.threads", "train.val_batch_size",
                "train.checkpoint_every_steps", "train.max_steps", "data.num_workers",
                "data.val_clips", "data.limit_train", "data.limit_val", "data.decode_short_side"}
UNIT_INTERVAL = {"optim.momentum", "optim.dampening", "data.synthetic.test_fraction"}


def upper_bounds() -> Dict[str, float]:
    """Key -> the largest value it may take (:mod:`video3d_zoo.limits`)."""
    from .. import limits

    return {"model.frames": limits.MAX_FRAMES, "data.synthetic.frames": limits.MAX_FRAMES,
            **dict.fromkeys(("model.crop_size", "model.resize", "data.synthetic.size", "data.decode_short_side"),
                            limits.MAX_SIDE),
            "model.num_classes": limits.MAX_CLASSES, "model.in_chans": limits.MAX_CHANNELS,
            "data.fps": limits.MAX_FPS, "data.temporal_stride": limits.MAX_STRIDE,
            "data.val_clips": limits.MAX_CLIPS_PER_VIDEO, "data.synthetic.videos_per_class": 100_000,
            "train.batch_size": limits.MAX_BATCH, "train.val_batch_size": limits.MAX_BATCH,
            "train.accumulate": limits.MAX_BATCH, "data.num_workers": limits.MAX_CONFIG_WORKERS,
            "train.threads": limits.MAX_CONFIG_WORKERS, "train.epochs": limits.MAX_EPOCHS}


RESUME_SAFE = frozenset({
    "source", "output.dir", "output.name", "output.overwrite", "output.plot", "train.progress",
    "train.tensorboard", "train.log_every", "train.checkpoint_every_steps", "data.num_workers", "data.cache",
})
"""Keys that may differ from the checkpoint's config on ``--resume`` without
``--accept-config-changes``: they only locate the run folder (which held the checkpoint),
change what is shown, logged or cached, or when checkpoints are written, never the numbers.
(The data order and every clip's augmentation are functions of (seed, epoch, video), not of the
loader workers.)  Everything else, ``train.device``, ``train.threads`` and ``train.amp``
included, can change the results and has to be accepted."""
