"""Readers of the 2020 releases' data sets, in their published formats -> a :class:`VideoList`.

* :func:`read_activitynet` - the ActivityNet v1.3 JSON (``{"taxonomy": [...], "database": {id:
  {"subset", "duration", "annotations": [{"segment": [start_s, end_s], "label"}], "fps"?}}}``).
  Classes are the taxonomy's leaf nodes, in taxonomy order (the original code's order); every
  annotated segment is one item, trimmed in seconds (untrimmed videos, so a video gives one item
  per segment).  The optional per-video ``fps`` (added by the 2020 code's
  ``add_fps_into_activitynet_json.py``) must be positive; a segment may overrun ``duration`` by
  at most one frame and is clipped to it.  Videos are ``v_<id>.*`` (the downloader's names) or
  ``<id>.*`` anywhere under the root.
* :func:`read_moments` - Moments in Time: ``moments_categories.txt`` (``name,index`` lines, label
  order) and ``trainingSet.csv`` / ``validationSet.csv`` rows ``<label>/<file>.mp4,<label>,...``
  (no header); videos under ``root/training`` / ``root/validation`` (or ``root`` itself).
* :func:`read_stair` - STAIR Actions (v1.1, github STAIR-Lab-CIT/STAIR-actions): ``actionlist.csv``
  (header, then ``number,action,...``; label order) and ``data/videolist_train.txt`` /
  ``videolist_val.txt`` rows ``<action>/<a###-####X>.mp4 <k>``, ``k`` = the action's 1-based
  position in actionlist.csv (99,478 and 10,000 rows); videos under ``root/<action>/``.

Bad rows and missing videos are reported through :class:`DataIssues` with file and line, as the
readers of :mod:`.readers` do; a broken class file is a :class:`DataError`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import DataError
from .annotations import index_video_files, locate_video, need_file, text_lines, unique_classes
from .videolist import DataIssues, VideoItem, VideoList

PathLike = Union[str, Path]
ACTIVITYNET_SUBSETS = {"train": "training", "val": "validation", "test": "testing"}


# -- ActivityNet ------------------------------------------------------------------------------------
def activitynet_labels(taxonomy: Any, path: Path) -> List[str]:
    """Leaf node names of the taxonomy, in taxonomy order."""
    if not isinstance(taxonomy, list) or not taxonomy:
        raise DataError(f"{path}: expected a non-empty 'taxonomy' list (ActivityNet v1.3 JSON)")
    try:
        parents = {node["parentId"] for node in taxonomy}
        leaves = [(i, node["nodeName"]) for i, node in enumerate(taxonomy) if node["nodeId"] not in parents]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: taxonomy nodes need nodeId, nodeName and parentId ({exc!r})") from None
    return unique_classes(leaves, path)


def _key_lines(text: str) -> Dict[str, int]:
    """Line of each ``"key": {`` in a JSON text, so a bad entry is reported with its line."""
    lines: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        for key in re.findall(r'"((?:[^"\\]|\\.)*)"\s*:\s*\{', line):
            lines.setdefault(key, number)
    return lines


def _segment(ann: Any, info: Dict[str, Any]) -> Tuple[Optional[Tuple[float, float, str]], str]:
    """``(start, end, label)`` of one annotation or ``None`` with the reason."""
    try:
        start, end = (float(v) for v in ann["segment"])
        label = str(ann["label"])
    except (KeyError, TypeError, ValueError):
        return None, f"expected {{'segment': [start_s, end_s], 'label': name}}, got {ann!r}"
    fps, duration = info.get("fps"), info.get("duration")
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0):
        return None, f"fps = {fps!r}: expected a positive number"
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0:
        if end > duration + 1.0 / (fps or 30.0):
            return None, f"segment {[start, end]} ends after the video ({duration} s)"
        end = min(end, float(duration))
    if not 0 <= start < end:
        return None, f"segment {[start, end]}: expected 0 <= start < end (seconds)"
    return (start, end, label), ""


def read_activitynet(json_path: PathLike, root: PathLike, subset: str = "train",
                     issues: Optional[DataIssues] = None, check: str = "exists") -> VideoList:
    """Annotated segments of ``subset`` (``train`` / ``val``, the JSON's training / validation)."""
    issues = issues or DataIssues()
    path = need_file(Path(json_path), "ActivityNet JSON")
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataError(f"{path}: expected an object with 'taxonomy' and 'database' (ActivityNet v1.3 JSON)")
    labels = activitynet_labels(data.get("taxonomy"), path)
    by_name = {name: i for i, name in enumerate(labels)}
    wanted = ACTIVITYNET_SUBSETS.get(subset, subset)
    lines, index = _key_lines(text), index_video_files(Path(root)) if check != "none" else {}
    items: List[VideoItem] = []
    listed = 0
    for key, info in data["database"].items():
        where = f"{path}:{lines.get(key, 1)}"
        if not isinstance(info, dict) or info.get("subset") != wanted:
            continue
        file = index.get(f"v_{key}") or index.get(key) or (str(Path(root) / f"v_{key}.mp4") if check == "none" else None)
        for n, ann in enumerate(info.get("annotations") or []):
            listed += 1
            seg, reason = _segment(ann, info)
            if seg is not None and seg[2] not in by_name:
                seg, reason = None, f"label {seg[2]!r} is not a leaf of the taxonomy"
            if seg is None:
                issues.report("malformed_row", where, f"{key} annotation {n}: {reason}")
            elif file is None:
                issues.report("missing_video", where, f"no video file v_{key}.* or {key}.* under {root}")
                break
            else:
                items.append(VideoItem(file, by_name[seg[2]], f"{key}#{n}", seg[0], seg[1], where))
    return VideoList(items, labels, f"{path} ({wanted})", files=[str(path)], listed=listed)


# -- Moments in Time --------------------------------------------------------------------------------
MOMENTS_FILES = {"train": ("trainingSet.csv", "training"), "val": ("validationSet.csv", "validation")}


def moments_labels(path: PathLike) -> List[str]:
    """``moments_categories.txt``: ``name,index`` lines, index = line order from 0."""
    path = need_file(Path(path), "Moments in Time moments_categories.txt")
    rows = []
    for number, text in text_lines(path):
        name, _, index = text.rpartition(",")
        if not name or not index.strip().isdigit() or int(index) != len(rows):
            raise DataError(f"{path}:{number}: expected '<name>,{len(rows)}', got {text!r}")
        rows.append((number, name.strip()))
    return unique_classes(rows, path)


def read_moments(annotations: PathLike, root: PathLike, subset: str = "train",
                 issues: Optional[DataIssues] = None, check: str = "exists") -> VideoList:
    """Moments in Time ``subset`` (``train`` / ``val``) from the folder holding its CSVs."""
    issues = issues or DataIssues()
    folder, root = Path(annotations), Path(root)
    class_file = folder / "moments_categories.txt"
    labels = moments_labels(class_file)
    by_name = {name: i for i, name in enumerate(labels)}
    csv_name, video_dir = MOMENTS_FILES["train" if subset == "train" else "val"]
    csv_file = need_file(folder / csv_name, f"Moments in Time {csv_name}")
    base = root / video_dir if (root / video_dir).is_dir() else root
    items: List[VideoItem] = []
    listed = 0
    with open(csv_file, encoding="utf-8-sig", newline="") as fh:
        for number, row in enumerate(csv.reader(fh), 1):
            if not row or not any(c.strip() for c in row):
                continue
            listed += 1
            where = f"{csv_file}:{number}"
            rel, label = (row[0].strip().replace("\\", "/"), row[1].strip()) if len(row) >= 2 else ("", "")
            if not rel or label not in by_name:
                issues.report("malformed_row", where, f"expected '<label>/<file>,<label>,...' with a label of "
                                                      f"{class_file.name}, got {row}")
                continue
            video = locate_video(base / rel, where, issues, check)
            if video is not None:
                items.append(VideoItem(str(video), by_name[label], rel, where=where))
    return VideoList(items, labels, str(csv_file), files=[str(class_file), str(csv_file)], listed=listed)


# -- STAIR Actions ----------------------------------------------------------------------------------
def stair_classes(path: PathLike) -> List[str]:
    """``actionlist.csv`` (header, then ``number,action,...``): the action names in file order."""
    path = need_file(Path(path), "STAIR Actions actionlist.csv")
    rows: List[Tuple[int, str]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for number, row in enumerate(csv.reader(fh), 1):
            if number == 1 or not row or not any(c.strip() for c in row):
                continue  # the header
            if len(row) < 2 or not row[0].strip().isdigit() or not row[1].strip():
                raise DataError(f"{path}:{number}: expected '<number>,<action>,...', got {row}")
            rows.append((number, row[1].strip()))
    if not rows:
        raise DataError(f"{path}: no actions")
    return unique_classes(rows, path)


def read_stair(annotations: PathLike, root: PathLike, subset: str = "train",
               issues: Optional[DataIssues] = None, check: str = "exists") -> VideoList:
    """STAIR Actions ``subset`` (``train`` / ``val``): ``videolist_<subset>.txt`` in ``annotations``,
    rows ``<action>/<video>.mp4 <k>`` where ``k`` is the action's 1-based position in actionlist.csv."""
    issues = issues or DataIssues()
    folder, root = Path(annotations), Path(root)
    class_file = folder / "actionlist.csv"
    labels = stair_classes(class_file)
    by_name = {name: i for i, name in enumerate(labels)}
    list_file = need_file(folder / f"videolist_{'train' if subset == 'train' else 'val'}.txt", "STAIR Actions list")
    items: List[VideoItem] = []
    listed = 0
    for number, text in text_lines(list_file):
        listed += 1
        where = f"{list_file}:{number}"
        parts = text.split()
        rel = parts[0].replace("\\", "/") if parts else ""
        name = rel.split("/")[0] if "/" in rel else None
        if len(parts) != 2 or name not in by_name or parts[1] != str(by_name[name] + 1):
            issues.report("malformed_row", where, f"expected '<action>/<video>.mp4 <k>' with <action> the k-th "
                                                  f"action of {class_file.name}, got {text!r}")
            continue
        video = locate_video(root / rel, where, issues, check)
        if video is not None:
            items.append(VideoItem(str(video), by_name[name], rel, where=where))
    return VideoList(items, labels, str(list_file), files=[str(class_file), str(list_file)], listed=listed)


def merge_lists(parts: Sequence[Tuple[str, VideoList]]) -> VideoList:
    """One list from several sets: labels concatenated in ``parts`` order (a name two sets share is
    kept apart as ``set:name``), each set's label indices offset by the classes before it."""
    shared = set()
    seen: set = set()
    for _name, videos in parts:
        shared |= seen & set(videos.labels)
        seen |= set(videos.labels)
    labels: List[str] = []
    items: List[VideoItem] = []
    for name, videos in parts:
        offset = len(labels)
        labels += [f"{name}:{c}" if c in shared else c for c in videos.labels]
        items += [VideoItem(i.path, i.label + offset, f"{name}/{i.video_id}", i.start_s, i.end_s, i.where)
                  for i in videos.items]
    return VideoList(items, labels, " + ".join(v.name for _n, v in parts),
                     files=[f for _n, v in parts for f in v.files],
                     listed=sum(v.listed or 0 for _n, v in parts),
                     matched=[m for _n, v in parts for m in v.matched])
