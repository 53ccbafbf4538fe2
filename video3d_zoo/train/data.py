"""Data sets for training and evaluation: annotation readers, clip datasets and batching.

Readers turn a data set's own annotation files into a :class:`VideoList` (video paths, integer
labels, class names):

* :func:`read_kinetics` - the official CSV (``label,youtube_id,time_start,time_end,split``);
  labels in order of first appearance in the *training* CSV.  Videos are found by file stem
  anywhere under the root: ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (the downloaders'
  trimmed clips) or else ``<youtube_id>.<ext>`` (a full video, decoded from time_start to
  time_end).
* :func:`read_ucf101` - ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt``.
* :func:`read_hmdb51` - the ``<class>_test_splitN.txt`` files (1 = train, 2 = test, 0 = unused);
  labels sorted.
* :func:`read_folder` - ``root/<class>/<video>`` with split lists (``train.txt``, ``test.txt``:
  one ``class/video.ext`` per line) and an optional ``classes.txt`` fixing the label order
  (otherwise the sorted class folder names).

Problems are reported through :class:`DataIssues` with file and line: a malformed annotation
row, a missing video, an undecodable video.  With ``on_error="skip"`` each one is printed,
skipped and counted (:meth:`DataIssues.summary`); with ``"fatal"`` the first one raises
:class:`DataError`.  A video that fails to decode during training is replaced in its batch by
the next decodable video of the list, so batch sizes (and DistributedDataParallel) stay in step.

Randomness (temporal crop, spatial crop, flip) is drawn from a generator seeded by
``(seed, epoch, video index)``, so an epoch's clips do not depend on worker count, process
count or where a run was resumed.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..config import InputSpec
from ..errors import Video3DZooError
from ..io.protocol import ClipProtocol

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv")


class DataError(Video3DZooError, ValueError):
    """A data problem that stops the run (``on_error="fatal"``) or leaves nothing to train on."""


# -- problem reporting -------------------------------------------------------------------------
@dataclass
class DataIssues:
    """Collects malformed rows, missing and undecodable videos; fatal or skip-and-count."""

    on_error: str = "skip"
    echo: Optional[Callable[[str], None]] = None
    counts: Dict[str, int] = field(default_factory=dict)
    messages: List[str] = field(default_factory=list)
    max_messages: int = 1000

    KINDS = ("malformed_row", "missing_video", "undecodable_video")

    def report(self, kind: str, where: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown data issue kind {kind!r}")
        text = f"{where}: {kind.replace('_', ' ')}: {message}"
        if self.on_error == "fatal":
            raise DataError(text + "  (data.on_error = \"fatal\"; use \"skip\" to skip and count such problems)")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.messages) < self.max_messages:
            self.messages.append(text)
        (self.echo or _stderr)(f"skipped: {text}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no data problems"
        parts = [f"{n} {kind.replace('_', ' ')}{'s' if n != 1 else ''}" for kind, n in sorted(self.counts.items())]
        return "skipped " + ", ".join(parts)

    def to_dict(self) -> Dict[str, object]:
        return {"counts": dict(self.counts), "messages": list(self.messages)}


def _stderr(text: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(text, file=sys.stderr)


@dataclass(frozen=True)
class VideoItem:
    """One video of a split: ``path``, integer ``label``, an id, an optional time range, origin."""

    path: str
    label: int
    video_id: str
    start_s: Optional[float] = None
    end_s: Optional[float] = None
    where: str = ""


@dataclass
class VideoList:
    items: List[VideoItem]
    labels: List[str]
    name: str = ""

    def __len__(self) -> int:
        return len(self.items)


# -- readers -----------------------------------------------------------------------------------
def _lines(path: Path) -> Iterable[Tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield number, text


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: no such {what} file")
    return path


def _check_exists(item_path: Path, where: str, issues: DataIssues, check: str) -> bool:
    if check == "none":
        return True
    if not item_path.is_file():
        issues.report("missing_video", where, f"{item_path} does not exist")
        return False
    if check == "probe":
        from ..io import probe_video

        try:
            probe_video(item_path)
        except (Video3DZooError, OSError) as exc:
            issues.report("undecodable_video", where, str(exc))
            return False
    return True


def _index_files(root: Path) -> Dict[str, str]:
    """``{file stem: path}`` of every video file under ``root`` (first found wins)."""
    index: Dict[str, str] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                index.setdefault(stem, os.path.join(folder, name))
    return index


def kinetics_labels(csv_path: Union[str, Path]) -> List[str]:
    """Class names in order of first appearance in a Kinetics CSV (the original code's order)."""
    labels: List[str] = []
    seen = set()
    path = _need_file(Path(csv_path), "Kinetics annotation CSV")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "label" not in reader.fieldnames:
            raise DataError(f"{path}:1: expected a header with a 'label' column, got {reader.fieldnames}")
        for row in reader:
            label = (row.get("label") or "").strip()
            if label and label not in seen:
                seen.add(label)
                labels.append(label)
    return labels


def read_kinetics(csv_path: Union[str, Path], root: Union[str, Path], labels: Optional[Sequence[str]] = None,
                  issues: Optional[DataIssues] = None, check: str = "exists",
                  file_index: Optional[Dict[str, str]] = None) -> VideoList:
    """Videos of a Kinetics annotation CSV; ``labels`` default to this CSV's own first-appearance order."""
    issues = issues or DataIssues()
    path = _need_file(Path(csv_path), "Kinetics annotation CSV")
    labels = list(labels) if labels is not None else kinetics_labels(path)
    label_index = {name: i for i, name in enumerate(labels)}
    index = file_index if file_index is not None else _index_files(Path(root))
    required = ("label", "youtube_id", "time_start", "time_end")
    items: List[VideoItem] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or any(col not in header for col in required):
            raise DataError(f"{path}:1: expected the header label,youtube_id,time_start,time_end,split; got {header}")
        cols = {name: header.index(name) for name in required}
        for number, row in enumerate(reader, 2):
            where = f"{path}:{number}"
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                issues.report("malformed_row", where, f"{len(row)} fields, expected {len(header)}: {row}")
                continue
            label, yid = row[cols["label"]].strip(), row[cols["youtube_id"]].strip()
            try:
                start, end = int(float(row[cols["time_start"]])), int(float(row[cols["time_end"]]))
            except ValueError:
                issues.report("malformed_row", where, f"time_start / time_end are not numbers: {row}")
                continue
            if not yid or end <= start or start < 0:
                issues.report("malformed_row", where, f"bad youtube_id or time range: {row}")
                continue
            if label not in label_index:
                issues.report("malformed_row", where, f"label {label!r} is not one of the {len(labels)} "
                                                      "training classes")
                continue
            key = f"{yid}_{start:06d}_{end:06d}"
            if key in index:
                items.append(VideoItem(index[key], label_index[label], key, where=where))
            elif yid in index:
                items.append(VideoItem(index[yid], label_index[label], key, float(start), float(end), where))
            else:
                if check != "none":
                    issues.report("missing_video", where, f"no video file {key}.* or {yid}.* under {root}")
                    continue
                items.append(VideoItem(str(Path(root) / f"{key}.mp4"), label_index[label], key, where=where))
                continue
            if check == "probe" and not _check_exists(Path(items[-1].path), where, issues, check):
                items.pop()
    return VideoList(items, labels, str(path))


def read_ucf101(annotations: Union[str, Path], root: Union[str, Path], split: int = 1, subset: str = "train",
                issues: Optional[DataIssues] = None, check: str = "exists") -> VideoList:
    """UCF-101 split ``split`` (1-3): ``subset`` ``train`` (trainlist) or ``test``/``val`` (testlist)."""
    issues = issues or DataIssues()
    folder, root = Path(annotations), Path(root)
    class_file = _need_file(folder / "classInd.txt", "UCF-101 classInd.txt")
    numbered: Dict[int, str] = {}
    for number, text in _lines(class_file):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            issues.report("malformed_row", f"{class_file}:{number}", f"expected '<index> <class>', got {text!r}")
            continue
        numbered[int(parts[0])] = parts[1]
    labels = [numbered[k] for k in sorted(numbered)]
    if not labels:
        raise DataError(f"{class_file}: no classes")
    by_name = {name: i for i, name in enumerate(labels)}
    list_name = f"{'trainlist' if subset == 'train' else 'testlist'}{split:02d}.txt"
    list_file = _need_file(folder / list_name, f"UCF-101 {list_name}")
    items = []
    for number, text in _lines(list_file):
        where = f"{list_file}:{number}"
        parts = text.split()
        rel = parts[0]
        cls = rel.split("/")[0] if "/" in rel else None
        if len(parts) > 2 or cls is None or cls not in by_name:
            issues.report("malformed_row", where, f"expected '<Class>/<video>.avi [index]' with a known class, got {text!r}")
            continue
        label = by_name[cls]
        if len(parts) == 2:
            if not parts[1].isdigit() or int(parts[1]) not in numbered or numbered[int(parts[1])] != cls:
                issues.report("malformed_row", where, f"class index {parts[1]!r} does not match folder {cls!r}")
                continue
        path = root / rel
        if _check_exists(path, where, issues, check):
            items.append(VideoItem(str(path), label, Path(rel).stem, where=where))
    return VideoList(items, labels, str(list_file))


def read_hmdb51(annotations: Union[str, Path], root: Union[str, Path], split: int = 1, subset: str = "train",
                issues: Optional[DataIssues] = None, check: str = "exists") -> VideoList:
    """HMDB-51 split ``split``: ``<class>_test_split<N>.txt`` rows ``<video> <1|2|0>``."""
    issues = issues or DataIssues()
    folder, root = Path(annotations), Path(root)
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in folder.glob(f"*{suffix}") if p.is_file())
    if not files:
        raise DataError(f"{folder}: no HMDB-51 split files *{suffix}")
    labels = sorted(p.name[: -len(suffix)] for p in files)
    by_name = {name: i for i, name in enumerate(labels)}
    wanted = "1" if subset == "train" else "2"
    items = []
    for split_file in files:
        cls = split_file.name[: -len(suffix)]
        for number, text in _lines(split_file):
            where = f"{split_file}:{number}"
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                issues.report("malformed_row", where, f"expected '<video> <0|1|2>', got {text!r}")
                continue
            if parts[1] != wanted:
                continue
            path = root / cls / parts[0]
            if _check_exists(path, where, issues, check):
                items.append(VideoItem(str(path), by_name[cls], Path(parts[0]).stem, where=where))
    return VideoList(items, labels, f"{folder}/*{suffix}")


def folder_classes(root: Union[str, Path], annotations: Union[str, Path, None] = None) -> List[str]:
    """Class order of a folder-per-class data set: ``classes.txt`` if present, else sorted folders."""
    for folder in filter(None, (annotations, root)):
        class_file = Path(folder) / "classes.txt"
        if class_file.is_file():
            return [text for _n, text in _lines(class_file)]
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{root}: no class folders (expected root/<class>/<video>)")
    return names


def read_folder(root: Union[str, Path], list_name: str = "train", annotations: Union[str, Path, None] = None,
                issues: Optional[DataIssues] = None, check: str = "exists",
                labels: Optional[Sequence[str]] = None) -> VideoList:
    """Folder-per-class videos listed in ``<annotations or root>/<list_name>.txt``.

    Each list line is ``<class>/<video>`` (relative to ``root``), optionally followed by the class
    name.  ``list_name="all"`` takes every video file under the class folders (no list needed).
    """
    issues = issues or DataIssues()
    root = Path(root)
    labels = list(labels) if labels is not None else folder_classes(root, annotations)
    by_name = {name: i for i, name in enumerate(labels)}
    items: List[VideoItem] = []
    if list_name == "all":
        for label, cls in enumerate(labels):
            for path in sorted((root / cls).glob("*")):
                if path.suffix.lower() in VIDEO_EXTENSIONS:
                    rel = f"{cls}/{path.name}"
                    if _check_exists(path, str(path), issues, "probe" if check == "probe" else "none"):
                        items.append(VideoItem(str(path), label, rel, where=str(path)))
        return VideoList(items, labels, f"{root}/*/*")
    list_file = Path(list_name)
    if not list_file.suffix:
        list_file = Path(annotations or root) / f"{list_name}.txt"
    _need_file(list_file, "split list")
    for number, text in _lines(list_file):
        where = f"{list_file}:{number}"
        parts = text.split()
        rel = parts[0]
        cls = parts[1] if len(parts) == 2 else (rel.replace("\\", "/").split("/")[0] if "/" in rel else None)
        if len(parts) > 2 or cls is None:
            issues.report("malformed_row", where, f"expected '<class>/<video> [class]', got {text!r}")
            continue
        if cls not in by_name:
            issues.report("malformed_row", where, f"unknown class {cls!r} (known: {len(labels)} classes)")
            continue
        path = root / rel
        if _check_exists(path, where, issues, check):
            items.append(VideoItem(str(path), by_name[cls], rel, where=where))
    return VideoList(items, labels, str(list_file))


def read_split(data, subset: str, issues: DataIssues, labels: Optional[Sequence[str]] = None) -> VideoList:
    """The ``train`` or ``val`` split described by a :class:`~video3d_zoo.train.config.DataSection`."""
    fmt, check = data.format, data.check_videos
    if fmt == "kinetics":
        train_csv = Path(data.annotations) if data.annotations else None
        if subset == "train":
            if train_csv is None:
                raise DataError("data.annotations: give the Kinetics training CSV (e.g. .../train.csv)")
            out = read_kinetics(train_csv, data.root, labels, issues, check)
        else:
            val_csv = Path(data.val_annotations) if data.val_annotations else (
                train_csv.with_name("validate.csv") if train_csv else None)
            if val_csv is None:
                raise DataError("data.val_annotations: give the Kinetics validation CSV")
            if labels is None and train_csv is not None:
                labels = kinetics_labels(train_csv)
            out = read_kinetics(val_csv, data.root, labels, issues, check)
    elif fmt in ("ucf101", "hmdb51"):
        reader = read_ucf101 if fmt == "ucf101" else read_hmdb51
        out = reader(data.annotations or data.root, data.root, data.split, subset, issues, check)
    else:
        name = data.train_list if subset == "train" else data.val_list
        out = read_folder(data.root, name, data.annotations or None, issues, check, labels)
    limit = data.limit_train if subset == "train" else data.limit_val
    if limit:
        out.items = out.items[:limit]
    if not out.items:
        raise DataError(f"the {subset} split of {out.name} has no usable video ({issues.summary()})")
    return out


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

    from ..synthetic import make_synthetic

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
    echo(f"writing the synthetic motion data set to {root} ({syn.videos_per_class} videos per class, seed {syn.seed})")
    make_synthetic(root, syn.videos_per_class, syn.seed, size=syn.size, frames=syn.frames,
                   test_fraction=syn.test_fraction, progress=progress)
    return root


def describe_counts(videos: VideoList) -> str:
    counts = np.bincount([it.label for it in videos.items], minlength=len(videos.labels))
    return f"{len(videos)} videos, {len(videos.labels)} classes ({counts.min()}-{counts.max()} per class)"


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
