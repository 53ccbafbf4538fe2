"""The ``train`` / ``val`` split a config's ``[data]`` section describes, whatever its format.

Dispatches on ``data.format`` to the readers of :mod:`.readers` (Kinetics, UCF-101, HMDB-51,
folder lists) and :mod:`.readers_more` (ActivityNet, Moments in Time, STAIR Actions), and builds
``merged`` sets (K+M, K+M+S, ...) from the sets named in ``data.merge``, each read from its
``data.parts`` entry, with the classes concatenated in ``data.merge`` order.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence

from ..errors import DataError
from .readers import kinetics_labels, read_folder, read_hmdb51, read_kinetics, read_ucf101
from .readers_more import merge_lists, read_activitynet, read_moments, read_stair
from .videolist import DataIssues, VideoList


def _kinetics_split(data, subset: str, issues: DataIssues, labels, check: str) -> VideoList:
    train_csv = Path(data.annotations) if data.annotations else None
    if subset == "train":
        if train_csv is None:
            raise DataError("data.annotations: give the Kinetics training CSV (e.g. .../train.csv)")
        return read_kinetics(train_csv, data.root, labels, issues, check)
    val_csv = Path(data.val_annotations) if data.val_annotations else (
        train_csv.with_name("validate.csv") if train_csv else None)
    if val_csv is None:
        raise DataError("data.val_annotations: give the Kinetics validation CSV")
    if labels is None and train_csv is not None:
        labels = kinetics_labels(train_csv)
    return read_kinetics(val_csv, data.root, labels, issues, check)


def _read(data, subset: str, issues: DataIssues, labels: Optional[Sequence[str]]) -> VideoList:
    fmt, check = data.format, data.check_videos
    if fmt == "kinetics":
        return _kinetics_split(data, subset, issues, labels, check)
    if fmt in ("ucf101", "hmdb51"):
        reader = read_ucf101 if fmt == "ucf101" else read_hmdb51
        return reader(data.annotations or data.root, data.root, data.split, subset, issues, check)
    if fmt == "activitynet":
        if not data.annotations:
            raise DataError("data.annotations: give the ActivityNet JSON (e.g. activity_net.v1-3.min.json)")
        return read_activitynet(data.annotations, data.root, subset, issues, check)
    if fmt in ("moments", "stair"):
        reader = read_moments if fmt == "moments" else read_stair
        return reader(data.annotations or data.root, data.root, subset, issues, check)
    if fmt == "merged":
        return merge_lists([(name, _read(_part(data, name), subset, issues, None)) for name in data.merge])
    name = data.train_list if subset == "train" else data.val_list
    return read_folder(data.root, name, data.annotations or None, issues, check, labels)


def _part(data, name: str):
    """The data section of one set of a merged one (its ``parts`` entry over the shared options)."""
    part = data.parts.get(name) or {}
    return SimpleNamespace(format=name, root=part.get("root", ""), annotations=part.get("annotations", ""),
                           val_annotations=part.get("val_annotations", ""), split=data.split,
                           check_videos=data.check_videos, train_list=data.train_list, val_list=data.val_list)


def read_split(data, subset: str, issues: DataIssues, labels: Optional[Sequence[str]] = None) -> VideoList:
    """The ``train`` or ``val`` split described by a :class:`~video3d_zoo.train.config_schema.DataSection`."""
    out = _read(data, subset, issues, labels)
    if labels is not None and data.format != "folder" and data.format != "kinetics" and list(labels) != out.labels:
        raise DataError(f"the {subset} split of {out.name} has other classes than the training split")
    limit = data.limit_train if subset == "train" else data.limit_val
    if limit:
        out.items = out.items[:limit]
    if not out.items:
        raise DataError(f"the {subset} split of {out.name} has no usable video ({issues.summary()})")
    return out
