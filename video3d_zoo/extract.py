"""The ``video3d-zoo extract`` job: features for many videos, one ``.npz`` each.

* Inputs are video files, folders (searched recursively by extension) and text files listing
  paths (one per line; relative paths are relative to the list).  The list is sorted, so every
  process agrees on it; ``shard=(i, n)`` keeps every n-th video from the i-th, so n shards cover
  the list exactly once.  Under ``torchrun`` the shard defaults to (RANK, WORLD_SIZE).
* Each output is written to a temporary file and renamed into place: an output that exists is
  complete, so a rerun skips it (resume); ``overwrite=True`` redoes it.
* A video that cannot be decoded is reported with its path and reason, and the job goes on;
  the summary counts it and :func:`run_extraction` reports failure.
* Clips of several videos share a batch; with ``workers > 0`` decoding runs in DataLoader
  worker processes, overlapped with inference.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .config import InputSpec
from .errors import Video3DZooError
from .features import check_layer, clip_outputs, model_id

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
LIST_EXTENSIONS = (".txt", ".lst", ".list", ".csv")


@dataclass(frozen=True)
class VideoJob:
    source: Path
    output: Path


@dataclass
class ExtractionSummary:
    processed: List[Path] = field(default_factory=list)
    skipped: List[Path] = field(default_factory=list)
    failed: Dict[Path, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        lines = [f"{len(self.processed)} extracted, {len(self.skipped)} already done (skipped), "
                 f"{len(self.failed)} failed"]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed.items()]
        return "\n".join(lines)


def collect_videos(inputs: Sequence[os.PathLike]) -> List[Tuple[Path, Path]]:
    """``(video, name relative to its input root)`` for every input, sorted and de-duplicated."""
    found: Dict[Path, Path] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()):
                found.setdefault(path.resolve(), path.relative_to(item))
        elif item.suffix.lower() in LIST_EXTENSIONS and item.is_file():
            for line in item.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    path = Path(line) if Path(line).is_absolute() else item.parent / line
                    found.setdefault(path.resolve(), Path(Path(line).name))
        else:  # a video file (or a missing one: reported when it is processed)
            found.setdefault(item.resolve(), Path(item.name))
    return sorted(found.items())


def plan_jobs(inputs: Sequence[os.PathLike], out_dir: os.PathLike,
              shard: Optional[Tuple[int, int]] = None) -> List[VideoJob]:
    """Jobs of this shard; output names mirror the input layout, made unique where they clash."""
    out_dir = Path(out_dir)
    videos = collect_videos(inputs)
    taken: Dict[Path, int] = {}
    jobs = []
    for source, rel in videos:
        target = out_dir / rel.with_suffix(".npz")
        if target in taken:  # same relative name from two inputs: keep the extension and a counter
            taken[target] += 1
            target = out_dir / rel.with_name(f"{rel.name}.{taken[target]}.npz")
        taken.setdefault(target, 0)
        jobs.append(VideoJob(source, target))
    index, count = shard or shard_from_env()
    return jobs[index::count]


def parse_shard(text: str) -> Tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def shard_from_env() -> Tuple[int, int]:
    """(RANK, WORLD_SIZE) under torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# -- decoding (optionally in DataLoader workers) ----------------------------------------------------
class _ClipStream(torch.utils.data.IterableDataset):
    """Yields ("clip", job index, tensor, start, end), then ("done", job index) or ("error", index, reason)."""

    def __init__(self, jobs: List[VideoJob], spec: InputSpec, clip_len, stride, last, fps) -> None:
        super().__init__()
        self.jobs, self.spec = jobs, spec
        self.clip_args = dict(clip_len=clip_len, stride=stride, last=last, fps=fps)

    def __iter__(self):
        from .io import iter_video_clips

        info = torch.utils.data.get_worker_info()
        mine = range(len(self.jobs)) if info is None else range(info.id, len(self.jobs), info.num_workers)
        for index in mine:
            try:
                for clip in iter_video_clips(self.jobs[index].source, self.spec, **self.clip_args):
                    yield ("clip", index, clip.tensor, clip.start_s, clip.end_s)
            except (Video3DZooError, OSError, RuntimeError, ValueError) as exc:
                yield ("error", index, str(exc))
                continue
            yield ("done", index)


def _stream(jobs, spec, clip_args, workers: int) -> Iterator[tuple]:
    dataset = _ClipStream(jobs, spec, **clip_args)
    if workers <= 0:
        return iter(dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=4)
    return iter(loader)


# -- writing ---------------------------------------------------------------------------------------
def write_npz(path: Path, features: np.ndarray, timestamps: np.ndarray, meta: dict) -> None:
    """Atomically write one video's result (``features``, ``timestamps`` and metadata strings)."""
    from .weights import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, features=features.astype(np.float32), timestamps=timestamps.astype(np.float64),
                 **{k: np.asarray(v) for k, v in meta.items()})


class _Collector:
    """Gathers the clip outputs of each video until its "done" marker, then writes it."""

    def __init__(self, jobs: List[VideoJob], meta: dict, summary: ExtractionSummary, progress) -> None:
        self.jobs, self.meta, self.summary, self.progress = jobs, meta, summary, progress
        self.parts: Dict[int, list] = {}
        self.finished: set = set()

    def add(self, index: int, vectors: torch.Tensor, spans: List[Tuple[float, float]]) -> None:
        self.parts.setdefault(index, []).append((vectors.numpy(), spans))

    def done(self, index: int) -> None:
        parts = self.parts.pop(index, [])
        job = self.jobs[index]
        features = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 0), np.float32)
        spans = np.asarray([s for p in parts for s in p[1]], dtype=np.float64).reshape(-1, 2)
        write_npz(job.output, features, spans, {**self.meta, "video": str(job.source)})
        self.summary.processed.append(job.source)
        self.progress.update(1)

    def error(self, index: int, reason: str) -> None:
        self.parts.pop(index, None)
        self.summary.failed[self.jobs[index].source] = reason
        self.progress.write(f"skipping {self.jobs[index].source}: {reason}", file=sys.stderr)
        self.progress.update(1)


def run_extraction(model, inputs: Sequence[os.PathLike], out_dir: os.PathLike, *, layer: str = "pooled",
                   clip_len: Optional[int] = None, stride: Optional[int] = None, last: str = "pad",
                   fps: Optional[float] = None, batch_size: int = 8, workers: int = 0,
                   shard: Optional[Tuple[int, int]] = None, overwrite: bool = False,
                   spec: Optional[InputSpec] = None, progress: bool = True) -> ExtractionSummary:
    """Extract features of every input video into ``out_dir`` (see the module docstring)."""
    from tqdm.auto import tqdm

    from .features import _model_device, model_input_spec

    check_layer(model, layer)
    spec = model_input_spec(model, spec)
    summary = ExtractionSummary()
    todo = []
    for job in plan_jobs(inputs, out_dir, shard):
        if job.output.exists() and not overwrite:
            summary.skipped.append(job.source)
        else:
            todo.append(job)
    meta = {"model": model_id(model), "layer": layer, "input_spec": json.dumps(spec.to_dict()),
            "clip_len": clip_len or spec.frames, "stride": stride or clip_len or spec.frames}
    bar = tqdm(total=len(todo), unit="video", disable=not progress, desc="extract")
    collector = _Collector(todo, meta, summary, bar)
    device = _model_device(model)
    pending: list = []
    waiting: List[int] = []  # videos fully decoded whose last clips are still in ``pending``

    def flush() -> None:
        if pending:
            batch = torch.stack([p[2] for p in pending]).to(device)
            vectors = clip_outputs(model, batch, layer).cpu()
            for (_, index, _, start, end), row in zip(pending, vectors):
                collector.add(index, row[None], [(start, end)])
            pending.clear()
        while waiting:
            collector.done(waiting.pop(0))

    clip_args = dict(clip_len=clip_len, stride=stride, last=last, fps=fps)
    for item in _stream(todo, spec, clip_args, workers):
        kind, index = item[0], item[1]
        if kind == "clip":
            pending.append(item)
            if len(pending) == batch_size:
                flush()
        elif kind == "done":
            waiting.append(index)  # written after the batch holding its last clip
            if not any(p[1] == index for p in pending):
                collector.done(waiting.pop())
        else:
            pending[:] = [p for p in pending if p[1] != index]
            collector.error(index, item[2])
    flush()
    bar.close()
    return summary
