"""Read a folder of ``video3d-zoo extract`` outputs back: per-video features, clip times and provenance.

    features = video3d_zoo.load_features("features/")
    for video in features:                   # VideoFeatures, sorted by name
        video.name, video.features.shape, video.timestamps, video.info["fps"]
    X, video_index, times, names = features.stack()   # clips of every video, for a linear probe

Each ``.npz`` holds ``features`` (num_clips x D), ``timestamps`` (num_clips x 2 seconds) and the
record :mod:`video3d_zoo.jobs.provenance` describes; the JSON fields of the record come back as
dicts.  A file that is not such an output (damaged, or some other program's ``.npz``) is left out
and listed in :attr:`FeatureSet.skipped` with the reason, or, with ``strict=True``, stops the load
with a :class:`~video3d_zoo.errors.DataError` naming it.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError
from ..wording import count

PathLike = Union[str, os.PathLike]
# record fields stored as JSON text (see provenance.py); the rest are plain strings or numbers
_JSON_FIELDS = ("source", "inference_options", "clip_protocol", "input_spec", "decode_report", "video_info")
_TEXT_FIELDS = ("model", "weights_digest", "layer", "video", "package_version")
_INT_FIELDS = ("format_version", "clip_len", "stride")


@dataclass(frozen=True)
class VideoFeatures:
    """One video's output: ``features`` (num_clips x D float32), ``timestamps`` (num_clips x 2, start and
    end seconds) and ``provenance`` (the record, JSON fields parsed; empty for a file written without one)."""

    name: str            # the .npz's path below the folder, without ".npz": "a/clip.mp4"
    path: Path
    features: np.ndarray
    timestamps: np.ndarray
    provenance: Dict[str, object] = field(default_factory=dict)

    @property
    def video(self) -> Optional[str]:
        """The source video's absolute path when it was extracted (``None`` if not recorded)."""
        return self.provenance.get("video")  # type: ignore[return-value]

    @property
    def info(self) -> Dict[str, object]:
        """The video's ``width``, ``height``, ``fps``, ``num_frames``, ``rotation`` ... (``{}`` if not recorded)."""
        return self.provenance.get("video_info") or {}  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.features)


class StackedFeatures(NamedTuple):
    """Every clip of a :class:`FeatureSet` in one array: row ``i`` of ``features`` is a clip of video
    ``names[video_index[i]]``, from ``timestamps[i, 0]`` to ``timestamps[i, 1]`` seconds."""

    features: np.ndarray      # N x D float32
    video_index: np.ndarray   # N int64
    timestamps: np.ndarray    # N x 2 float64
    names: Tuple[str, ...]    # one per video


class FeatureSet(Sequence[VideoFeatures]):
    """The videos of a feature folder (a sequence of :class:`VideoFeatures`) and the files left out."""

    def __init__(self, root: Path, videos: List[VideoFeatures], skipped: Dict[Path, str]) -> None:
        self.root, self.videos, self.skipped = root, tuple(videos), dict(skipped)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index):  # an int or a slice, as for a tuple
        return self.videos[index]

    def __iter__(self) -> Iterator[VideoFeatures]:
        return iter(self.videos)

    def __repr__(self) -> str:
        clips = sum(len(v) for v in self.videos)
        left_out = f", {count(len(self.skipped), 'file')} skipped" if self.skipped else ""
        return f"FeatureSet({str(self.root)!r}: {count(len(self.videos), 'video')}, {count(clips, 'clip')}{left_out})"

    def by_name(self) -> Dict[str, VideoFeatures]:
        return {v.name: v for v in self.videos}

    def stack(self) -> StackedFeatures:
        """All clips as one ``N x D`` array with the video index and clip times of each row.

        The videos must come from one model and layer (same width); a mix is a :class:`DataError`.
        """
        made_by = {(v.provenance.get("model"), v.provenance.get("layer")) for v in self.videos if v.provenance}
        if len(made_by) > 1:
            raise DataError(f"{self.root}: features from different models / layers {sorted(map(str, made_by))}; "
                            "stack the files of one run")
        widths = {v.features.shape[1] for v in self.videos if len(v)}
        if len(widths) > 1:
            raise DataError(f"{self.root}: features of different widths {sorted(widths)}; stack the files of one run")
        width = widths.pop() if widths else 0
        rows = [v.features for v in self.videos if len(v)]
        features = np.concatenate(rows) if rows else np.zeros((0, width), np.float32)
        index = np.concatenate([np.full(len(v), i, np.int64) for i, v in enumerate(self.videos)]
                               + [np.zeros(0, np.int64)])
        times = np.concatenate([v.timestamps.reshape(-1, 2) for v in self.videos] + [np.zeros((0, 2))])
        return StackedFeatures(features, index, times.astype(np.float64), tuple(v.name for v in self.videos))

    def mean(self) -> Tuple[np.ndarray, Tuple[str, ...]]:
        """One row per video with clips: the mean of its clip features (``V x D``), and the videos' names."""
        stacked = self.stack()
        keep = [i for i, v in enumerate(self.videos) if len(v)]
        rows = [stacked.features[stacked.video_index == i].mean(axis=0) for i in keep]
        width = stacked.features.shape[1]
        return (np.stack(rows) if rows else np.zeros((0, width), np.float32)), tuple(self.videos[i].name for i in keep)


def _record(data) -> Dict[str, object]:
    record: Dict[str, object] = {}
    for key in _JSON_FIELDS:
        if key in data.files:
            record[key] = json.loads(str(data[key]))
    record.update({k: str(data[k]) for k in _TEXT_FIELDS if k in data.files})
    record.update({k: int(data[k]) for k in _INT_FIELDS if k in data.files})
    return record


def read_feature_file(path: PathLike, name: Optional[str] = None) -> VideoFeatures:
    """One ``.npz`` written by ``video3d-zoo extract``; a file that is not one is a :class:`DataError`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("features", "timestamps") if k not in data.files]
            if missing:
                raise DataError(f"{path}: not a video3d_zoo feature file (no {' / '.join(missing)}; "
                                f"it holds {', '.join(sorted(data.files)) or 'nothing'})")
            features, timestamps = np.asarray(data["features"]), np.asarray(data["timestamps"], np.float64)
            record = _record(data)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: unreadable feature file ({type(exc).__name__}: {exc})") from None
    if features.ndim != 2 or (len(features) and timestamps.shape != (len(features), 2)):
        raise DataError(f"{path}: features {features.shape} / timestamps {timestamps.shape}; expected "
                        "num_clips x D and num_clips x 2")
    name = name or (path.name[:-len(".npz")] if path.name.endswith(".npz") else path.name)
    return VideoFeatures(name, path, features, timestamps.reshape(-1, 2), record)


def load_features(folder: PathLike, *, strict: bool = False) -> FeatureSet:
    """Every ``.npz`` under ``folder`` (recursive, sorted by name) as a :class:`FeatureSet`.

    ``folder`` may also be a single ``.npz`` (read strictly).  Files that are not extraction outputs are
    listed in ``skipped`` (``strict=True``: a :class:`DataError` for the first).  A missing folder, or one with
    no ``.npz`` at all, is a :class:`DataError`.
    """
    if not str(folder).strip():  # Path("") is the working directory: never what an empty setting meant
        raise DataError("load_features: the folder is an empty string")
    root = Path(folder)
    if root.is_file():  # one file named: its problem is the answer, not an empty set
        if root.suffix.lower() != ".npz":
            raise DataError(f"{root}: not a feature file (.npz); pass the folder `video3d-zoo extract` wrote")
        files, root, strict = [root], root.parent, True
    elif root.is_dir():
        files = sorted(root.rglob("*.npz"))
        if not files:
            raise DataError(f"{root}: no .npz feature files (write them with `video3d-zoo extract VIDEOS -o {root}`)")
    else:
        raise DataError(f"{root}: no such folder or .npz file")
    videos, skipped = [], {}
    for path in files:
        try:
            videos.append(read_feature_file(path, path.relative_to(root).as_posix()[:-len(".npz")]))
        except DataError as exc:
            if strict:
                raise
            skipped[path] = str(exc)
    return FeatureSet(root, videos, skipped)
