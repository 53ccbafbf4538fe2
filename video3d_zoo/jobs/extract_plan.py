"""Which videos an extraction run handles, where each result goes, and the checks made first.

Output names are stable and unique per input, whatever else is on the command line:

* a video found under a folder input mirrors its path relative to that folder, extension kept
  (``ROOT/a/clip.mp4`` -> ``OUT/a/clip.mp4.npz``), so ``clip.avi`` next to ``clip.mp4`` gives
  two files;
* a video named in a list file mirrors the listed relative path when it has no ``..``
  (else, and for absolute paths, its file name);
* a video given on the command line keeps its file name.

Two different videos that would still share an output name (two roots holding the same
relative file) are refused before any work, with the clash listed.  A folder is searched for
:data:`~video3d_zoo.io.decode.VIDEO_EXTENSIONS`; the other files found are returned too, so a
run can name what it left out.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigError
from ..io.decode import VIDEO_EXTENSIONS

LIST_EXTENSIONS = (".txt", ".lst", ".list", ".csv")
STALE_SUFFIX = ".stale"  # a failed video's earlier output: NAME.npz -> NAME.npz.stale
_SHOWN = 5
# atomic_path's temporaries: ".<target name>.<mkstemp's random letters>.tmp"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


@dataclass(frozen=True)
class VideoJob:
    source: Path
    output: Path


def _listed(listing: Path) -> List[Tuple[Path, Path]]:
    found = []
    for line in listing.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            given = Path(line)
            path = given if given.is_absolute() else listing.parent / given
            mirrored = not given.is_absolute() and ".." not in given.parts
            found.append((path, given if mirrored else Path(given.name)))
    return found


def _found_in(item: Path, ignored: List[Path]) -> List[Tuple[Path, Path]]:
    """``(video, name relative to its input root)`` for one input; a folder's other files go to ``ignored``."""
    if item.is_dir():
        files = [p for p in sorted(item.rglob("*")) if p.is_file()]
        ignored.extend(p for p in files if p.suffix.lower() not in VIDEO_EXTENSIONS)
        return [(p, p.relative_to(item)) for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    if item.suffix.lower() in LIST_EXTENSIONS and item.is_file():
        return _listed(item)
    return [(item, Path(item.name))]  # a video file (or a missing one: reported when processed)


def collect_videos(inputs: Sequence[os.PathLike], ignored: Optional[List[Path]] = None) -> List[Tuple[Path, Path]]:
    """``(video, name relative to its input root)`` for every input, sorted and de-duplicated.

    A video reached through several inputs keeps the name from the first of them.  Files under
    folder inputs that are not videos by extension are appended to ``ignored`` when given.
    """
    found: Dict[Path, Path] = {}
    skipped: List[Path] = []
    for item in map(Path, inputs):
        for path, rel in _found_in(item, skipped):
            found.setdefault(path.resolve(), rel)
    if ignored is not None:
        ignored.extend(sorted(set(skipped)))
    return sorted(found.items())


def check_inputs_exist(inputs: Sequence[os.PathLike]) -> None:
    """Refuse command-line inputs that name nothing (a typo), before any work.  A missing video
    named inside a list file stays a failure of that video, reported in the run's summary."""
    missing = [os.fspath(item) for item in inputs if not os.path.lexists(item)]
    if missing:
        raise ConfigError(f"no such file or folder: {', '.join(missing)}")


def ignored_line(ignored: Sequence[Path]) -> str:
    """One summary line naming the files a folder search left out."""
    suffixes = sorted({p.suffix.lower() or "no extension" for p in ignored})
    names = ", ".join(str(p) for p in ignored[:_SHOWN]) + (f", ... ({len(ignored)} in all)"
                                                          if len(ignored) > _SHOWN else "")
    return (f"skipped {len(ignored)} file(s) under the input folders, not videos by extension "
            f"({', '.join(suffixes[:_SHOWN])}): {names}")


def output_path(out_dir: Path, rel: Path) -> Path:
    return out_dir / rel.with_name(rel.name + ".npz")


def plan_jobs(inputs: Sequence[os.PathLike], out_dir: os.PathLike,
              shard: Union[Tuple[int, int], str, None] = None, ignored: Optional[List[Path]] = None) -> List[VideoJob]:
    """Jobs of this shard (see the module docstring for the names); refuses clashing names.
    ``ignored``: see :func:`collect_videos`."""
    index, count = parse_shard(shard) if isinstance(shard, str) else (shard or shard_from_env())
    check_shard(index, count)
    out_dir = Path(out_dir)
    others: List[Path] = []
    jobs = [VideoJob(source, output_path(out_dir, rel)) for source, rel in collect_videos(inputs, others)]
    if ignored is not None:  # our own outputs, when the output folder is inside an input folder, are no news
        ignored.extend(p for p in others if not _inside(p, out_dir))
    claims: Dict[Path, List[Path]] = {}
    for job in jobs:
        claims.setdefault(job.output, []).append(job.source)
    clashes = {out: sources for out, sources in claims.items() if len(sources) > 1}
    if clashes:
        listed = "; ".join(f"{out} <- {', '.join(map(str, sources))}" for out, sources in sorted(clashes.items()))
        raise ConfigError(f"{len(clashes)} output name(s) would be shared by different videos: {listed}. "
                          "Extract those inputs into separate output folders.")
    return jobs[index::count]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def parse_shard(text: str) -> Tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    check_shard(index, count, text)
    return index, count


def check_shard(index: int, count: int, text: Optional[str] = None) -> None:
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text or f'{index}/{count}'}: need 0 <= i < n")


def shard_from_env() -> Tuple[int, int]:
    """(RANK, WORLD_SIZE) under torchrun, else (0, 1)."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError("RANK and WORLD_SIZE must be integers") from None


def check_writable(out_dir: os.PathLike) -> Path:
    """Create ``out_dir`` and prove a file can be written there (a temp file, removed again)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-probe.", suffix=".probe", dir=out)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"output folder {out} is not writable ({exc.strerror or exc})") from None
    return out


def remove_stale_temporaries(jobs: Sequence[VideoJob], started_ns: int) -> List[Path]:
    """Delete atomic-write leftovers of these jobs' outputs older than ``started_ns``."""
    names: Dict[Path, set] = {}
    for job in jobs:
        names.setdefault(job.output.parent, set()).add(job.output.name)
    removed = []
    for folder, mine in names.items():
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _TEMPORARY.match(path.name)
            if match and match["name"] in mine and _older(path, started_ns):
                path.unlink(missing_ok=True)
                removed.append(path)
    return sorted(removed)


def _older(path: Path, started_ns: int) -> bool:
    try:
        return path.is_file() and path.stat().st_mtime_ns < started_ns
    except OSError:
        return False
