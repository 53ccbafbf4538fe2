"""Annotation readers: a data set's own split files -> a :class:`VideoList`.

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
* :func:`read_list` - a text file of ``<path> <class>`` lines.

The official UCF-101 and HMDB-51 lists name ``.avi`` files; a listed video that is not there is
also looked for with the same name and another video extension in the same folder (a transcoded
copy, e.g. ``v_ApplyEyeMakeup_g08_c01.mp4``); such matches are recorded in
:attr:`VideoList.matched`.

The pieces every reader shares live next door: :mod:`.videolist` (:class:`VideoItem`,
:class:`VideoList` and the problem report :class:`DataIssues`: with ``on_error="skip"`` a bad
row or video is printed, skipped and counted, with ``"fatal"`` it raises :class:`DataError`)
and :mod:`.annotations` (text and class files, finding the listed videos).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import DataError
from ..io.decode import VIDEO_EXTENSIONS
from .annotations import (VideoFinder, exists_checked, index_video_files, locate_video, need_file,
                          probe_ok, read_class_index, read_class_names, text_lines)
from .videolist import DataIssues, VideoItem, VideoList


def kinetics_labels(csv_path: Union[str, Path]) -> List[str]:
    """Class names in order of first appearance in a Kinetics CSV (the original code's order)."""
    labels: List[str] = []
    seen = set()
    path = need_file(Path(csv_path), "Kinetics annotation CSV")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "label" not in reader.fieldnames:
            raise DataError(f"{path}:1: expected a header with a 'label' column, got {reader.fieldnames}")
        for row in reader:
            label = (row.get("label") or "").strip()
            if label and label not in seen:
                seen.add(label)
                labels.append(label)
    return labels


_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def _kinetics_row(row: List[str], header: List[str], where: str, issues: DataIssues,
                  label_index: Dict[str, int]) -> Optional[Tuple[str, int, str, int, int]]:
    """``(youtube_id, label, key, start, end)`` of a CSV row, or ``None`` (reported)."""
    if len(row) != len(header):
        issues.report("malformed_row", where, f"{len(row)} fields, expected {len(header)}: {row}")
        return None
    cell = {name: row[header.index(name)].strip() for name in _KINETICS_COLUMNS}
    try:
        start, end = int(float(cell["time_start"])), int(float(cell["time_end"]))
    except ValueError:
        issues.report("malformed_row", where, f"time_start / time_end are not numbers: {row}")
        return None
    if not cell["youtube_id"] or end <= start or start < 0:
        issues.report("malformed_row", where, f"bad youtube_id or time range: {row}")
        return None
    if cell["label"] not in label_index:
        issues.report("malformed_row", where, f"label {cell['label']!r} is not one of the {len(label_index)} "
                                              "training classes")
        return None
    yid = cell["youtube_id"]
    return yid, label_index[cell["label"]], f"{yid}_{start:06d}_{end:06d}", start, end


def read_kinetics(csv_path: Union[str, Path], root: Union[str, Path], labels: Optional[Sequence[str]] = None,
                  issues: Optional[DataIssues] = None, check: str = "exists",
                  file_index: Optional[Dict[str, str]] = None) -> VideoList:
    """Videos of a Kinetics annotation CSV; ``labels`` default to this CSV's own first-appearance order."""
    issues = issues or DataIssues()
    path = need_file(Path(csv_path), "Kinetics annotation CSV")
    labels = list(labels) if labels is not None else kinetics_labels(path)
    label_index = {name: i for i, name in enumerate(labels)}
    index = file_index if file_index is not None else index_video_files(Path(root))
    items: List[VideoItem] = []
    listed = 0
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, None) or []]
        if any(col not in header for col in _KINETICS_COLUMNS):
            raise DataError(f"{path}:1: expected the header label,youtube_id,time_start,time_end,split; got {header}")
        for number, row in enumerate(reader, 2):
            where = f"{path}:{number}"
            if not row or not any(cell.strip() for cell in row):
                continue
            listed += 1
            parsed = _kinetics_row(row, header, where, issues, label_index)
            if parsed is None:
                continue
            yid, label, key, start, end = parsed
            if key in index:
                item = VideoItem(index[key], label, key, where=where)
            elif yid in index:
                item = VideoItem(index[yid], label, key, float(start), float(end), where)
            elif check == "none":
                item = VideoItem(str(Path(root) / f"{key}.mp4"), label, key, where=where)
            else:
                issues.report("missing_video", where, f"no video file {key}.* or {yid}.* under {root}")
                continue
            if check != "probe" or probe_ok(Path(item.path), where, issues):
                items.append(item)
    return VideoList(items, labels, str(path), files=[str(path)], listed=listed)


def read_ucf101(annotations: Union[str, Path], root: Union[str, Path], split: int = 1, subset: str = "train",
                issues: Optional[DataIssues] = None, check: str = "exists") -> VideoList:
    """UCF-101 split ``split`` (1-3): ``subset`` ``train`` (trainlist) or ``test``/``val`` (testlist).

    Rows are ``<Class>/<video>.avi`` with an optional class index that must match ``classInd.txt``;
    a video missing as ``.avi`` is also found transcoded (same stem, another extension).
    """
    issues = issues or DataIssues()
    folder, root = Path(annotations), Path(root)
    class_file = folder / "classInd.txt"
    numbered = read_class_index(class_file)
    labels = list(numbered.values())
    by_name = {name: i for i, name in enumerate(labels)}
    list_name = f"{'trainlist' if subset == 'train' else 'testlist'}{split:02d}.txt"
    list_file = need_file(folder / list_name, f"UCF-101 {list_name}")
    finder = VideoFinder()
    items, listed = [], 0
    for number, text in text_lines(list_file):
        where = f"{list_file}:{number}"
        listed += 1
        parts = text.split()
        rel = parts[0].replace("\\", "/")
        cls = rel.split("/")[0] if "/" in rel else None
        if len(parts) > 2 or cls is None or cls not in by_name:
            issues.report("malformed_row", where, f"expected '<Class>/<video>.avi [index]' with a known class, got {text!r}")
            continue
        if len(parts) == 2 and (not parts[1].isdigit() or numbered.get(int(parts[1])) != cls):
            issues.report("malformed_row", where, f"class index {parts[1]!r} does not match folder {cls!r}")
            continue
        path = locate_video(root / rel, where, issues, check, finder)
        if path is not None:
            items.append(VideoItem(str(path), by_name[cls], rel, where=where))
    return VideoList(items, labels, str(list_file), files=[str(class_file), str(list_file)], listed=listed,
                     matched=finder.matches)


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
    finder = VideoFinder()
    items, listed = [], 0
    for split_file in files:
        cls = split_file.name[: -len(suffix)]
        for number, text in text_lines(split_file):
            where = f"{split_file}:{number}"
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                listed += 1
                issues.report("malformed_row", where, f"expected '<video> <0|1|2>', got {text!r}")
                continue
            if parts[1] != wanted:
                continue
            listed += 1
            path = locate_video(root / cls / parts[0], where, issues, check, finder)
            if path is not None:
                items.append(VideoItem(str(path), by_name[cls], f"{cls}/{parts[0]}", where=where))
    return VideoList(items, labels, f"{folder}/*{suffix}", files=[str(f) for f in files], listed=listed,
                     matched=finder.matches)


def class_file_of(root: Union[str, Path], annotations: Union[str, Path, None] = None) -> Optional[Path]:
    """The ``classes.txt`` fixing a folder data set's label order, if there is one."""
    for folder in filter(None, (annotations, root)):
        class_file = Path(folder) / "classes.txt"
        if class_file.is_file():
            return class_file
    return None


def folder_classes(root: Union[str, Path], annotations: Union[str, Path, None] = None) -> List[str]:
    """Class order of a folder-per-class data set: ``classes.txt`` if present, else sorted folders."""
    class_file = class_file_of(root, annotations)
    if class_file is not None:
        return read_class_names(class_file)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{root}: no class folders (expected root/<class>/<video>)")
    return names


def _every_video(root: Path, labels: Sequence[str], issues: DataIssues, check: str) -> VideoList:
    items: List[VideoItem] = []
    for label, cls in enumerate(labels):
        for path in sorted((root / cls).glob("*")):
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                if exists_checked(path, str(path), issues, "probe" if check == "probe" else "none"):
                    items.append(VideoItem(str(path), label, f"{cls}/{path.name}", where=str(path)))
    return VideoList(items, list(labels), f"{root}/*/*", listed=len(items))


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
    if list_name == "all":
        return _every_video(root, labels, issues, check)
    list_file = Path(list_name)
    if not list_file.suffix:
        list_file = Path(annotations or root) / f"{list_name}.txt"
    need_file(list_file, "split list")
    items: List[VideoItem] = []
    listed = 0
    for number, text in text_lines(list_file):
        where = f"{list_file}:{number}"
        listed += 1
        parts = text.split()
        rel = parts[0].replace("\\", "/")
        cls = parts[1] if len(parts) == 2 else (rel.split("/")[0] if "/" in rel else None)
        if len(parts) > 2 or cls is None:
            issues.report("malformed_row", where, f"expected '<class>/<video> [class]', got {text!r}")
            continue
        if cls not in by_name:
            issues.report("malformed_row", where, f"unknown class {cls!r} (known: {len(labels)} classes)")
            continue
        path = root / rel
        if exists_checked(path, where, issues, check):
            items.append(VideoItem(str(path), by_name[cls], rel, where=where))
    class_file = class_file_of(root, annotations)
    files = ([str(class_file)] if class_file is not None else []) + [str(list_file)]
    return VideoList(items, labels, str(list_file), files=files, listed=listed)


def _list_labels(names: Iterable[str]) -> List[str]:
    """Sorted class names; numerically when every name is an integer (``2`` before ``10``)."""
    unique = set(names)
    if unique and all(n.isdigit() for n in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def read_list(list_file: Union[str, Path], root: Union[str, Path, None] = None,
              classes: Union[str, Path, None] = None, issues: Optional[DataIssues] = None,
              check: str = "exists") -> VideoList:
    """Videos of a text file of ``<path> <class>`` lines (the last field is the class name).

    Paths are relative to ``root`` (default: the list's folder) unless absolute, and may hold
    spaces.  Class order: the ``classes`` file (one name per line) when given, else the sorted
    class names of the list (numerically when all are integers).
    """
    issues = issues or DataIssues()
    path = need_file(Path(list_file), "video list")
    base = Path(root) if root is not None else path.parent
    rows, listed = [], 0
    for number, text in text_lines(path):
        listed += 1
        parts = text.rsplit(None, 1)
        if len(parts) != 2:
            issues.report("malformed_row", f"{path}:{number}", f"expected '<path> <class>', got {text!r}")
            continue
        rows.append((f"{path}:{number}", parts[0].replace("\\", "/"), parts[1]))
    labels = read_class_names(classes) if classes else _list_labels(cls for _w, _p, cls in rows)
    by_name = {name: i for i, name in enumerate(labels)}
    items: List[VideoItem] = []
    for where, rel, cls in rows:
        if cls not in by_name:
            issues.report("malformed_row", where, f"class {cls!r} is not in {classes}")
            continue
        video = base / rel
        if exists_checked(video, where, issues, check):
            items.append(VideoItem(str(video), by_name[cls], rel, where=where))
    files = [str(path)] + ([str(classes)] if classes else [])
    return VideoList(items, labels, str(path), files=files, listed=listed)
