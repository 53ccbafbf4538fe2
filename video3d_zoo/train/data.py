"""Data sets for training and evaluation: clip datasets and batching.

The annotation readers (:func:`read_kinetics`, :func:`read_ucf101`, :func:`read_hmdb51`,
:func:`read_folder`, :func:`read_list`; :func:`read_split` of :mod:`.splits`), :class:`VideoList` and
the problem reporting (:class:`DataIssues`, :class:`~video3d_zoo.errors.DataError`) live in
:mod:`.readers`, :mod:`.readers_more`, :mod:`.splits` and :mod:`.videolist`; import them from there.

A video that fails to decode during training is replaced in its batch by the next decodable video
of the list, so batch sizes (and DistributedDataParallel) stay in step.

Randomness (temporal crop, spatial crop, flip) is drawn from a generator seeded by
``(seed, epoch, video index)``, so an epoch's clips do not depend on worker count, process
count or where a run was resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..models.config import InputSpec
from ..errors import DataError, Video3DZooError
from ..io.protocol import ClipProtocol
from ..wording import count
from .videolist import VideoItem, VideoList


# -- clip datasets -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipSampling:
    """How clips are cut from decoded frames (shared by the training and evaluation datasets)."""

    spec: InputSpec
    resize: int
    train_crop: str = "corner"
    scales: Tuple[float, ...] = tuple(2.0 ** (-i / 4) for i in range(5))
    hflip: bool = True
    temporal_stride: int = 1
    fps: Optional[float] = None
    val_clips: int = 0
    decode_short_side: Optional[int] = None
    """Short side videos are decoded at (default: ``resize``)."""
    protocol: Optional[ClipProtocol] = None
    """Evaluation clips; default: from ``fps``, ``val_clips`` and ``temporal_stride``."""

    def eval_protocol(self) -> ClipProtocol:
        """The clips validation and evaluation cut (see :class:`~video3d_zoo.io.ClipProtocol`)."""
        if self.protocol is not None:
            return self.protocol
        return ClipProtocol(fps=self.fps, num_clips=self.val_clips, temporal_stride=self.temporal_stride)

    @property
    def frames(self) -> int:
        return self.spec.frames

    @property
    def crop_size(self) -> int:
        return self.spec.crop_size


def decode(item: VideoItem, sampling: ClipSampling) -> torch.Tensor:
    """All frames of ``item`` (uint8 ``T x H x W x 3``, time-strided) at the sampling's decode size."""
    from ..io import read_frames

    video = read_frames(item.path, short_side=sampling.decode_short_side or sampling.resize, fps=sampling.fps,
                        start_s=item.start_s, end_s=item.end_s)
    frames = video.frames
    if sampling.temporal_stride > 1:
        frames = frames[:: sampling.temporal_stride]
    return frames


def _cached_decode(cache: Optional[Dict[int, torch.Tensor]], key: int, item: VideoItem,
                   sampling: ClipSampling) -> torch.Tensor:
    if cache is None:
        return decode(item, sampling)
    frames = cache.get(key)
    if frames is None:
        frames = cache[key] = decode(item, sampling)
    return frames


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def train_clip(frames: torch.Tensor, sampling: ClipSampling, rng: np.random.Generator) -> torch.Tensor:
    """One augmented training clip ``C x T x H x W``: temporal random crop (loop-padded), spatial
    crop (multi-scale corner / random resized / centre), optional flip, normalisation."""
    from ..io import (center_crop, multiscale_corner_crop, normalize_clip, random_horizontal_flip,
                      random_resized_crop, resize_frames, temporal_random_crop)

    indices = temporal_random_crop(len(frames), sampling.frames, rng=rng)
    clip = frames[torch.from_numpy(indices)]
    size = sampling.crop_size
    if sampling.train_crop == "corner":
        clip = multiscale_corner_crop(clip, size, scales=list(sampling.scales), rng=rng)
    elif sampling.train_crop == "random_resized":
        clip = random_resized_crop(clip, size, rng=rng)
    else:
        clip = center_crop(resize_frames(clip, sampling.resize), size)
    if sampling.hflip:
        clip = random_horizontal_flip(clip, rng=rng)
    return normalize_clip(clip, sampling.spec)


class TrainClips(torch.utils.data.Dataset):
    """Training dataset indexed by ``(video index, epoch)`` pairs (see :class:`ShardedBatchSampler`).

    Returns ``{"clip", "label", "index", "errors"}``; a video that does not decode is replaced by
    the next one in the list that does, and its error travels with the batch.
    """

    def __init__(self, videos: VideoList, sampling: ClipSampling, seed: int = 0, max_retries: int = 16,
                 cache: bool = False) -> None:
        self.videos, self.sampling, self.seed, self.max_retries = videos, sampling, seed, max_retries
        self.cache: Optional[Dict[int, torch.Tensor]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        errors = []
        for attempt in range(self.max_retries):
            position = (index + attempt) % len(self.videos)
            item = self.videos.items[position]
            try:
                frames = _cached_decode(self.cache, position, item, self.sampling)
            except (Video3DZooError, OSError, RuntimeError) as exc:
                errors.append((item.where or item.path, str(exc)))
                continue
            rng = sample_rng(self.seed, epoch, index)
            return {"clip": train_clip(frames, self.sampling, rng), "label": item.label,
                    "index": index, "errors": errors}
        raise DataError(f"{self.max_retries} videos in a row failed to decode, the last: "
                        f"{errors[-1][0]}: {errors[-1][1]}")


class EvalVideos(torch.utils.data.Dataset):
    """Evaluation dataset: every item is one video's clips, cut by the one clip path
    (:func:`video3d_zoo.io.video_clips`) with the sampling's spec and evaluation protocol, so
    evaluation sees exactly the tensors extraction and classification compute on.
    Undecodable videos come back as errors; each item carries its decode report."""

    def __init__(self, videos: VideoList, sampling: ClipSampling, cache: Optional[Dict[Any, torch.Tensor]] = None) -> None:
        self.videos, self.sampling, self.cache = videos, sampling, cache
        self.protocol = sampling.eval_protocol()

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        from ..io import video_clips

        item = self.videos.items[index]
        key = (index, self.protocol)
        report = None
        try:
            clips = self.cache.get(key) if self.cache is not None else None
            if clips is None:
                clips, _, report = video_clips(item.path, self.sampling.spec, self.protocol,
                                               start_s=item.start_s, end_s=item.end_s)
                if self.cache is not None:
                    self.cache[key] = clips
        except (Video3DZooError, OSError, RuntimeError) as exc:
            return {"clips": None, "label": item.label, "index": index, "report": None,
                    "errors": [(item.where or item.path, str(exc))]}
        return {"clips": clips, "label": item.label, "index": index, "errors": [],
                "report": report.to_dict() if report is not None else None}


def collate_train(samples: List[dict]) -> dict:
    return {"clip": torch.stack([s["clip"] for s in samples]),
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
            "errors": [e for s in samples for e in s["errors"]]}


def collate_eval(samples: List[dict]) -> dict:
    good = [s for s in samples if s["clips"] is not None]
    clips = torch.cat([s["clips"] for s in good]) if good else None
    owner = torch.cat([torch.full((len(s["clips"]),), s["index"], dtype=torch.long) for s in good]) if good else None
    return {"clips": clips, "clip_video": owner,
            "index": torch.tensor([s["index"] for s in good], dtype=torch.long),
            "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
            "reports": {s["index"]: s["report"] for s in good},
            "errors": [e for s in samples for e in s["errors"]]}


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Deterministic, resumable, sharded batches of ``(video index, epoch)`` keys.

    Epoch ``e`` shuffles the videos with a generator seeded by ``(seed, e)``; global batch ``s``
    is ``perm[s*B:(s+1)*B]`` (the last partial batch is dropped).  Each global batch is cut into
    ``accumulate`` micro-steps and each micro-step into ``world_size`` equal shards, this
    process taking shard ``rank``.  :meth:`set_epoch` picks the epoch and the optimizer step to
    start from (for resuming mid-epoch).  Every process yields the same number of batches.
    """

    def __init__(self, num_items: int, global_batch: int, rank: int = 0, world_size: int = 1,
                 accumulate: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        micro, rem = divmod(global_batch, world_size * accumulate)
        if rem or micro < 1:
            raise DataError(f"train.batch_size = {global_batch} must be a multiple of processes x "
                            f"accumulation steps = {world_size} x {accumulate}")
        if num_items < global_batch:
            raise DataError(f"only {num_items} training videos for a batch of {global_batch}; "
                            "lower train.batch_size")
        self.num_items, self.global_batch, self.micro = num_items, global_batch, micro
        self.rank, self.world_size, self.accumulate = rank, world_size, accumulate
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = int(epoch), int(start_step)

    def permutation(self, epoch: int) -> List[int]:
        if not self.shuffle:
            return list(range(self.num_items))
        gen = torch.Generator().manual_seed((int(self.seed) * 1_000_003 + int(epoch)) & 0x7FFFFFFFFFFFFFFF)
        return torch.randperm(self.num_items, generator=gen).tolist()

    def __iter__(self):
        perm = self.permutation(self.epoch)
        for step in range(self.start_step, self.steps_per_epoch):
            batch = perm[step * self.global_batch:(step + 1) * self.global_batch]
            for a in range(self.accumulate):
                chunk = batch[a * self.micro * self.world_size:(a + 1) * self.micro * self.world_size]
                shard = chunk[self.rank * self.micro:(self.rank + 1) * self.micro]
                yield [(i, self.epoch) for i in shard]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulate


def worker_init(worker_id: int) -> None:
    """DataLoader workers: one intra-op thread each (decoding and cropping are per-sample)."""
    torch.set_num_threads(1)


def make_sampling(data, spec: InputSpec, resize: Optional[int] = None, train: bool = True) -> ClipSampling:
    """:class:`ClipSampling` from a DataSection and the model's input spec (``train=False``: the
    evaluation sampling, decoded at ``resize``)."""
    if resize is None:
        resize = spec.resize if isinstance(spec.resize, int) else min(spec.resize)
    scales = tuple(data.scale_step ** i for i in range(data.n_scales))
    return ClipSampling(spec=spec, resize=int(resize), train_crop=data.train_crop, scales=scales,
                        hflip=data.hflip, temporal_stride=data.temporal_stride, fps=data.fps,
                        val_clips=data.val_clips,
                        decode_short_side=(getattr(data, "decode_short_side", 0) or None) if train else None)


def prepare_synthetic(data, echo: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Generate the synthetic data set of a ``format = "synthetic"`` config unless it is there."""
    import json

    from ..jobs.synthetic import make_synthetic

    syn = data.synthetic
    root = Path(data.root)
    meta_file = root / "synthetic.json"
    want = {"seed": syn.seed, "videos_per_class": syn.videos_per_class, "size": syn.size,
            "frames": syn.frames, "test_fraction": syn.test_fraction}
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            meta = {}
        if all(meta.get(k) == v for k, v in want.items()):
            return root
        echo(f"{root}: holds another synthetic data set ({ {k: meta.get(k) for k in want} }); regenerating")
    echo(f"writing the synthetic motion data set to {root} ({count(syn.videos_per_class, 'video')} per class, "
         f"seed {syn.seed})")
    make_synthetic(root, syn.videos_per_class, syn.seed, size=syn.size, frames=syn.frames,
                   test_fraction=syn.test_fraction, progress=progress)
    return root


def describe_counts(videos: VideoList) -> str:
    counts = np.bincount([it.label for it in videos.items], minlength=len(videos.labels))
    return (f"{count(len(videos), 'video')}, {count(len(videos.labels), 'class')} "
            f"({counts.min()}-{counts.max()} per class)")
