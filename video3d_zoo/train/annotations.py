"""What every annotation reader shares: text and class files, and finding the listed videos on disk.

Text files may start with a UTF-8 byte-order mark and use Windows line endings.  A class file
(``classInd.txt``, ``classes.txt``) naming a class twice, or holding a malformed line, is an
error (:class:`~video3d_zoo.errors.DataError` naming the lines): label indices depend on it.
A listed video that is not there is also looked for with the same name and another video
extension in the same folder (a transcoded copy): :class:`VideoFinder`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from ..errors import DataError, Video3DZooError
from ..io.decode import VIDEO_EXTENSIONS
from .videolist import DataIssues


def text_lines(path: Path) -> Iterable[Tuple[int, str]]:
    """Non-empty, non-comment lines with their 1-based numbers (BOM and CR/LF tolerated)."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield number, text


def need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: no such {what} file")
    return path


def unique_classes(rows: Iterable[Tuple[int, str]], path: Path) -> List[str]:
    """Class names in file order; a name given twice is an error naming both lines."""
    first: Dict[str, int] = {}
    for number, name in rows:
        if name in first:
            raise DataError(f"{path}:{number}: class {name!r} is listed twice (also on line {first[name]}); "
                            "each class must appear once, since label indices depend on the order")
        first[name] = number
    return list(first)


def read_class_names(path: Union[str, Path]) -> List[str]:
    """A ``classes.txt``: one class name per line, in label order."""
    path = need_file(Path(path), "class list")
    rows = list(text_lines(path))
    for number, text in rows:
        if len(text.split()) != 1:
            raise DataError(f"{path}:{number}: expected one class name per line, got {text!r}")
    names = unique_classes(rows, path)
    if not names:
        raise DataError(f"{path}: no classes")
    return names


def read_class_index(path: Union[str, Path]) -> Dict[int, str]:
    """UCF-101 ``classInd.txt``: ``{index: class}`` from ``<index> <class>`` lines."""
    path = need_file(Path(path), "UCF-101 classInd.txt")
    numbered: Dict[int, Tuple[str, int]] = {}
    rows = []
    for number, text in text_lines(path):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{number}: expected '<index> <class>', got {text!r}")
        index = int(parts[0])
        if index in numbered:
            raise DataError(f"{path}:{number}: class index {index} is used twice (also on line {numbered[index][1]})")
        numbered[index] = (parts[1], number)
        rows.append((number, parts[1]))
    unique_classes(rows, path)
    if not numbered:
        raise DataError(f"{path}: no classes")
    return {k: v[0] for k, v in sorted(numbered.items())}


class VideoFinder:
    """Finds a listed video file, or else a transcoded copy: same folder and stem, another video
    extension (the first in :data:`VIDEO_EXTENSIONS` order).  ``matches`` records the latter."""

    def __init__(self, transcoded: bool = True) -> None:
        self.transcoded = transcoded
        self.matches: List[Tuple[str, str]] = []
        self._folders: Dict[Path, Dict[str, List[str]]] = {}

    def _stems(self, folder: Path) -> Dict[str, List[str]]:
        if folder not in self._folders:
            stems: Dict[str, List[str]] = {}
            names = os.listdir(folder) if folder.is_dir() else []
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS:
                    stems.setdefault(stem, []).append(name)
            self._folders[folder] = stems
        return self._folders[folder]

    def find(self, path: Path) -> Optional[Path]:
        if path.is_file():
            return path
        if not self.transcoded:
            return None
        names = self._stems(path.parent).get(path.stem, [])
        names = sorted(names, key=lambda n: VIDEO_EXTENSIONS.index(os.path.splitext(n)[1].lower()))
        for name in names:
            found = path.parent / name
            if found.is_file():
                self.matches.append((str(path), str(found)))
                return found
        return None


def locate_video(path: Path, where: str, issues: DataIssues, check: str,
            finder: Optional[VideoFinder] = None) -> Optional[Path]:
    """The file to read for a listed ``path`` (``None``, reported, when there is none)."""
    if check == "none":
        return path
    found = finder.find(path) if finder is not None else (path if path.is_file() else None)
    if found is None:
        extra = " (nor a copy with another video extension)" if finder is not None and finder.transcoded else ""
        issues.report("missing_video", where, f"{path} does not exist{extra}")
        return None
    if check == "probe" and not probe_ok(found, where, issues):
        return None
    return found


def probe_ok(path: Path, where: str, issues: DataIssues) -> bool:
    from ..io import probe_video

    try:
        probe_video(path)
    except (Video3DZooError, OSError) as exc:
        issues.report("undecodable_video", where, str(exc))
        return False
    return True


def exists_checked(item_path: Path, where: str, issues: DataIssues, check: str) -> bool:
    return locate_video(item_path, where, issues, check) is not None


def index_video_files(root: Path) -> Dict[str, str]:
    """``{file stem: path}`` of every video file under ``root`` (first found wins)."""
    index: Dict[str, str] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                index.setdefault(stem, os.path.join(folder, name))
    return index
