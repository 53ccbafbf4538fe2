"""Which videos ``video3d-zoo eval`` scores: a data set's split, found exactly or refused.

Formats (``--format``), read by the same readers as training (:mod:`.readers`):

* ``ucf101`` - ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt`` in ``--annotations``
  (default: the data folder); ``--fold N`` (1-3, default 1); ``--split train|test``.
* ``hmdb51`` - the ``<class>_test_splitN.txt`` files in ``--annotations``; ``--fold``; ``--split
  train|test``.
* ``kinetics`` - ``--annotations`` is a folder holding ``train.csv`` / ``validate.csv`` (or
  ``val.csv``) / ``test.csv`` (``--split train|val|test``), or one CSV file (which is then the
  split: no ``--split``).  Labels in first-appearance order of ``train.csv`` when it is there.
* ``folder`` - ``root/<class>/<video>`` with ``<split>.txt`` lists (in ``--annotations`` or the
  root; default split ``test``); ``--split all`` scores every video of the class folders.  DATA
  may also be a split list ``.txt`` of such a tree.
* ``activitynet`` - ``--annotations`` is the ActivityNet v1.3 JSON (required); ``--split train|val``
  (default ``val``: the test subset has no labels); one item per annotated segment.
* ``moments`` - ``--annotations`` is the folder with ``moments_categories.txt`` and
  ``trainingSet.csv`` / ``validationSet.csv`` (default: DATA); ``--split train|val`` (default val).
* ``stair`` - ``--annotations`` is the folder with ``actionlist.csv`` and
  ``videolist_train.txt`` / ``videolist_val.txt`` (default: DATA); ``--split train|val`` (default val).
* ``list`` - DATA is a text file of ``<path> <class>`` lines (the split itself: no ``--split``);
  ``--annotations`` may name a ``classes.txt`` fixing the label order.

A split file that is not there is a :class:`DataError` naming it, never a fallback to other
videos.  A video listed twice is counted once (the repeat is reported as ``duplicate_video``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..cli.argtypes import EVAL_FORMATS
from ..errors import DataError
from .readers import (class_file_of, kinetics_labels, read_folder, read_hmdb51, read_kinetics, read_list,
                      read_ucf101)
from .readers_more import read_activitynet, read_moments, read_stair
from .videolist import DataIssues, VideoList

KINETICS_CSVS = {"train": ("train.csv",), "val": ("validate.csv", "val.csv"), "test": ("test.csv",)}
PathLike = Union[str, Path]


@dataclass(frozen=True)
class SplitRequest:
    """What to evaluate: ``format``, ``annotations``, ``fold`` (UCF-101/HMDB-51) and ``split``
    (``None``: the format's default, ``test``)."""

    format: str = "folder"
    annotations: Optional[str] = None
    fold: Optional[int] = None
    split: Optional[str] = None

    def check(self, data: Path) -> None:
        fmt, split = self.format, self.split
        if fmt not in EVAL_FORMATS:
            raise DataError(f"--format must be one of {', '.join(EVAL_FORMATS)}, got {fmt!r}")
        if self.fold is not None and (fmt not in ("ucf101", "hmdb51") or self.fold not in (1, 2, 3)):
            raise DataError(f"--fold {self.fold}: folds are 1, 2 or 3, and only for --format ucf101 / hmdb51")
        if fmt in ("ucf101", "hmdb51") and split not in (None, "train", "test"):
            raise DataError(f"{fmt} has train and test lists only (the original code calls the test list "
                            f"'validation'); got --split {split!r}: use --split test")
        if fmt in ("activitynet", "moments", "stair") and split not in (None, "train", "val"):
            raise DataError(f"{fmt}: --split must be train or val (the test labels are not published), got {split!r}")
        if fmt == "activitynet" and not (self.annotations and Path(self.annotations).is_file()):
            raise DataError("activitynet: --annotations must name the ActivityNet JSON file "
                            f"(got {self.annotations!r})")
        if fmt == "kinetics" and split not in (None, *KINETICS_CSVS):
            raise DataError(f"kinetics: --split must be train, val or test, got {split!r}")
        kinetics_file = fmt == "kinetics" and self.annotations and Path(self.annotations).is_file()
        single = fmt == "list" or kinetics_file or (fmt == "folder" and data.is_file())
        if single and split is not None:
            raise DataError(f"{self.annotations if kinetics_file else data} is itself the split: give no --split")


def read_eval_split(data: PathLike, request: SplitRequest, issues: DataIssues,
                    check: str = "exists") -> Tuple[VideoList, Dict[str, Any]]:
    """The videos of the requested split and a JSON description of where they came from."""
    data = Path(data)
    request.check(data)
    reader = {"ucf101": _ucf_hmdb, "hmdb51": _ucf_hmdb, "kinetics": _kinetics, "folder": _folder,
              "list": _list, "activitynet": _published, "moments": _published, "stair": _published}[request.format]
    videos, split, labels_source = reader(data, request, issues, check)
    drop_duplicates(videos, issues)
    info = {"format": request.format, "root": str(data), "annotations": request.annotations,
            "fold": (request.fold or 1) if request.format in ("ucf101", "hmdb51") else None, "split": split, "split_files": list(videos.files),
            "labels_source": labels_source}
    return videos, info


def _ucf_hmdb(data: Path, request: SplitRequest, issues: DataIssues, check: str):
    fold, split = request.fold or 1, request.split or "test"
    ann = request.annotations or str(data)
    if not Path(ann).is_dir():
        raise DataError(f"{ann}: no such annotation folder (--annotations)")
    if request.format == "ucf101":
        videos = read_ucf101(ann, data, fold, split, issues, check)
        source = f"{Path(ann) / 'classInd.txt'} (file order)"
    else:
        videos = read_hmdb51(ann, data, fold, split, issues, check)
        source = "sorted class names of the *_test_split files"
    return videos, split, source


def _kinetics(data: Path, request: SplitRequest, issues: DataIssues, check: str):
    ann = Path(request.annotations or data)
    if ann.is_file():
        csv_file, split = ann, ann.name
    else:
        split = request.split or "test"
        tried = [ann / name for name in KINETICS_CSVS[split]]
        found = [p for p in tried if p.is_file()]
        if not found:
            raise DataError(f"no Kinetics {split} CSV: {' or '.join(str(p) for p in tried)} not found "
                            "(--annotations: the folder with the CSVs, or one CSV)")
        csv_file = found[0]
    train_csv = csv_file.parent / "train.csv"
    labels = kinetics_labels(train_csv) if train_csv.is_file() else None
    videos = read_kinetics(csv_file, data, labels, issues, check)
    if labels is not None and csv_file != train_csv:
        videos.files.insert(0, str(train_csv))
    source = f"first appearance in {train_csv if labels is not None else csv_file}"
    return videos, split, source


def _folder(data: Path, request: SplitRequest, issues: DataIssues, check: str):
    if data.is_file():
        videos = read_folder(data.parent, str(data), request.annotations, issues, check)
        split, root = data.name, data.parent
    else:
        if not data.is_dir():
            raise DataError(f"{data}: no such data folder or split list")
        split, root = request.split or "test", data
        videos = read_folder(data, split, request.annotations, issues, check)
    class_file = class_file_of(root, request.annotations)
    source = f"{class_file} (file order)" if class_file is not None else "sorted class folder names"
    return videos, split, source


def _published(data: Path, request: SplitRequest, issues: DataIssues, check: str):
    """ActivityNet, Moments in Time and STAIR Actions: label order from the set's own class file."""
    split = request.split or "val"
    ann = request.annotations or str(data)
    reader = {"activitynet": read_activitynet, "moments": read_moments, "stair": read_stair}[request.format]
    videos = reader(ann, data, split, issues, check)
    source = {"activitynet": "leaves of the JSON's taxonomy (taxonomy order)",
              "moments": "moments_categories.txt (file order)",
              "stair": "actionlist.csv (file order)"}[request.format]
    return videos, split, source


def _list(data: Path, request: SplitRequest, issues: DataIssues, check: str):
    videos = read_list(data, classes=request.annotations, issues=issues, check=check)
    source = f"{request.annotations} (file order)" if request.annotations else "sorted class names of the list"
    return videos, data.name, source


def drop_duplicates(videos: VideoList, issues: DataIssues) -> None:
    """Keep the first of several entries naming the same file (and time range); report the rest."""
    first: Dict[tuple, str] = {}
    kept = []
    for item in videos.items:
        key = (os.path.normcase(os.path.abspath(item.path)), item.start_s, item.end_s)
        if key in first:
            issues.report("duplicate_video", item.where or item.path, f"{item.path} is already listed at {first[key]}")
            continue
        first[key] = item.where or item.path
        kept.append(item)
    videos.items = kept
