"""The local weights cache: converted originals installed by ``video3d-zoo import``.

Where: ``$VIDEO3D_ZOO_HOME/weights`` when ``VIDEO3D_ZOO_HOME`` is set, else
``<huggingface assets cache>/video3d_zoo/weights`` (``$HF_HOME/assets/...``, by default
``~/.cache/huggingface/assets/video3d_zoo/weights``).  One folder per manifest entry::

    resnet3d_50.k700_16f/
        weights-<first 16 hex digits of its sha256>.safetensors   (config embedded in the metadata)
        installed.json    (the record: that file, its sha256 and size, the original it came from)

Writing is atomic and safe with several processes: under a lock file
(``.locks/<model.tag>.lock``) the new weights go to a temporary file in the same folder and are
renamed into place; ``installed.json`` is then replaced in one rename, which is the moment the
new copy becomes the installed one.  A reader that follows the record always finds a complete
file, and checks it against the recorded sha256 (once: see the verified-hash marker of
:mod:`video3d_zoo.weights.hub`).

This module also answers "where can each entry come from right now"
(:func:`weights_sources`, ``list_pretrained(sources=True)``, ``video3d-zoo list-pretrained
--verbose``), in the order :func:`video3d_zoo.weights.loading.fetch_converted` tries them:
embedded in the package, installed here, cached from the Hub, downloadable from the Hub, downloadable
from the original's public URL.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

from ..errors import IntegrityError, Video3DZooError
from ..fileio import write_text_atomic

HOME_ENV = "VIDEO3D_ZOO_HOME"
RECORD_NAME = "installed.json"
LOCK_TIMEOUT_ENV = "VIDEO3D_ZOO_LOCK_TIMEOUT"
RECORD_VERSION = 1


# -- where -----------------------------------------------------------------------------------------
def weights_home() -> Path:
    """The folder holding installed weights (see the module docstring); read from the environment now."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(os.path.expandvars(os.path.expanduser(env))) / "weights"
    from .hub import assets_dir

    return assets_dir() / "video3d_zoo" / "weights"


def entry_folder(name: str) -> Path:
    """The folder of one installed entry (``model.tag``)."""
    return weights_home() / name


# -- the record ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstalledCopy:
    """One installed entry, as its ``installed.json`` describes it."""

    name: str
    path: Path
    sha256: str
    size: int
    original: Mapping[str, Any] = field(default_factory=dict)  # file, path, sha256, size, release, layout
    installed_at: Optional[str] = None
    version: Optional[str] = None

    @property
    def original_file(self) -> Optional[str]:
        return self.original.get("path") or self.original.get("file")

    def to_dict(self) -> dict:
        return {"record_version": RECORD_VERSION, "name": self.name, "weights": self.path.name,
                "sha256": self.sha256, "size": self.size, "original": dict(self.original),
                "installed_at": self.installed_at, "video3d_zoo_version": self.version}


def _record_path(name: str) -> Path:
    return entry_folder(name) / RECORD_NAME


def read_record(name: str) -> Optional[InstalledCopy]:
    """The installed copy of ``name`` (``model.tag``) per its record, or None if nothing is installed.

    A record that cannot be read or makes no sense raises :class:`IntegrityError` saying how to repair it.
    """
    record = _record_path(name)
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IntegrityError(f"{record}: cannot read the record of the installed weights {name} ({exc})") from exc
    try:
        data = json.loads(text)
        weights = data["weights"]
        if (not isinstance(weights, str) or "/" in weights or "\\" in weights or weights.startswith(".")
                or data.get("name") != name):
            raise ValueError("bad weights file name or entry name")
        copy = InstalledCopy(name=name, path=record.parent / weights, sha256=str(data["sha256"]),
                             size=int(data["size"]), original=dict(data.get("original") or {}),
                             installed_at=data.get("installed_at"), version=data.get("video3d_zoo_version"))
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{record}: the record of the installed weights {name} is damaged ({exc}); import "
                             f"the original again (video3d-zoo import FILE) or delete {record.parent}") from exc
    return copy


def find_installed(entry) -> Optional[InstalledCopy]:
    """The verified installed copy of a manifest entry, or None if it was never imported.

    Raises :class:`IntegrityError` if the copy is damaged (size or sha256 differ from its record), or
    if it was made from an original whose sha256 the manifest now contradicts.
    """
    from .hub import verify_file

    for attempt in range(2):
        copy = read_record(entry.name)
        if copy is None:
            return None
        _check_original_against_manifest(copy, entry)
        try:
            verify_file(copy.path, copy.sha256, copy.size, what=f"installed {entry.name} ({copy.path})")
        except FileNotFoundError:
            if attempt == 0:  # replaced by a concurrent import between reading the record and the file
                continue
            raise IntegrityError(f"installed {entry.name}: {copy.path} is missing; import the original again "
                                 f"(video3d-zoo import FILE) or delete {copy.path.parent}") from None
        except IntegrityError as exc:
            raise IntegrityError(f"{exc}. The installed copy is damaged: import the original again "
                                 f"(video3d-zoo import FILE) or delete {copy.path.parent}") from None
        return copy
    return None  # pragma: no cover


def _check_original_against_manifest(copy: InstalledCopy, entry) -> None:
    up = entry.upstream
    sha = str(copy.original.get("sha256") or "")
    if up is None or not sha:
        return
    expected = up.sha256 or up.sha256_prefix
    if expected and not sha.startswith(expected):
        raise IntegrityError(
            f"installed {entry.name} was converted from {copy.original_file} (sha256 {sha}), but the manifest "
            f"now expects the original's sha256 {'to be' if up.sha256 else 'to start with'} {expected}; import "
            f"the right original again (video3d-zoo import FILE) or delete {copy.path.parent}")


# -- writing -----------------------------------------------------------------------------------------
def _lock_timeout() -> float:
    try:
        return float(os.environ.get(LOCK_TIMEOUT_ENV) or 600)
    except ValueError:
        return 600.0


@contextlib.contextmanager
def entry_lock(name: str) -> Iterator[None]:
    """An inter-process lock for one entry's folder (a lock file under ``.locks/``)."""
    from filelock import FileLock, Timeout

    folder = weights_home() / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"{name}.lock"))
    timeout = _lock_timeout()
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise Video3DZooError(f"{folder / (name + '.lock')}: another process has held this lock for over "
                              f"{timeout:g} s (an import still running?); try again, or raise "
                              f"{LOCK_TIMEOUT_ENV}") from None
    try:
        yield
    finally:
        lock.release()


def install_state_dict(entry, state_dict: Mapping[str, Any], config, original: Mapping[str, Any]):
    """Install converted tensors for ``entry``: ``(InstalledCopy, changed)``.

    ``changed`` is False when the installed copy already held exactly these bytes (the record is
    still updated to name this ``original``).  Call under no lock: this takes the entry's lock.
    """
    from .hub import _write_marker, sha256_file
    from .safetensors_write import save_aligned
    from ..version import __version__
    from ..models.config import CONFIG_METADATA_KEY

    folder = entry_folder(entry.name)
    with entry_lock(entry.name):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            previous = read_record(entry.name)
        except IntegrityError:
            previous = None  # a damaged record is simply replaced
        fd, name = tempfile.mkstemp(prefix=".incoming.", suffix=".tmp", dir=folder)
        os.close(fd)
        tmp = Path(name)
        try:
            save_aligned(dict(state_dict), tmp, metadata={CONFIG_METADATA_KEY: config.to_json(), "format": "pt"})
            sha, size = sha256_file(tmp), tmp.stat().st_size
            target = folder / f"weights-{sha[:16]}.safetensors"
            unchanged = (previous is not None and previous.sha256 == sha and previous.path == target
                         and target.is_file() and target.stat().st_size == size
                         and sha256_file(target) == sha)  # a damaged copy of the same name is replaced
            if not unchanged:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        copy = InstalledCopy(name=entry.name, path=target, sha256=sha, size=size, original=dict(original),
                             installed_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                             version=__version__)
        text = json.dumps(copy.to_dict(), indent=2) + "\n"
        write_text_atomic(folder / RECORD_NAME, text)
        for stale in folder.glob("weights-*.safetensors"):
            if stale != target:
                stale.unlink(missing_ok=True)
        _write_marker(target, sha)  # just hashed: the first load need not hash it again
    return copy, not unchanged


# -- where each entry can come from now --------------------------------------------------------------
SOURCE_ORDER = ("embedded", "installed", "cached", "hub", "download")


@dataclass(frozen=True)
class WeightsSources:
    """Where the weights of one manifest entry can come from right now (nothing is verified or downloaded).

    ``available`` is the first of :data:`SOURCE_ORDER` that is present (the one a load uses), or
    ``"original only"`` when the weights must first be imported or converted from the original file.
    """

    name: str
    default: bool
    embedded: Optional[str] = None   # packaged file
    installed: Optional[str] = None  # installed weights file
    installed_from: Optional[str] = None  # the original it was converted from
    cached: Optional[str] = None     # the Hub file in the huggingface_hub cache
    hub: Optional[str] = None        # repo@revision/filename, when published
    download: Optional[str] = None   # the public URL the original downloads from on first use
    original: Optional[str] = None   # the upstream file name (and where it was released)

    @property
    def available(self) -> str:
        for source in SOURCE_ORDER:
            if getattr(self, source):
                return source
        return "original only" if self.original else "none"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "default": self.default, "available": self.available,
                "embedded": self.embedded, "installed": self.installed, "installed_from": self.installed_from,
                "cached": self.cached, "hub": self.hub, "download": self.download, "original": self.original}

    def describe(self) -> str:
        """The details of :attr:`available`, in one line."""
        where = self.available
        if where == "installed":
            return f"{self.installed} (from {self.installed_from})" if self.installed_from else str(self.installed)
        if where in ("embedded", "cached"):
            return str(getattr(self, where))
        if where == "hub":
            return f"{self.hub} (downloaded on first use)"
        if where == "download":
            return f"{self.download} (downloaded, verified and installed on first use)"
        return self.original or ""


def weights_sources(entry) -> WeightsSources:
    """Where ``entry``'s weights can come from now: cheap checks only (no hashing, no network)."""
    from .upstream import download_url

    embedded = installed = installed_from = cached = hub = original = None
    if entry.embedded is not None:
        from importlib.resources import files

        path = Path(str(files("video3d_zoo").joinpath(*entry.embedded.path.split("/"))))
        embedded = str(path) if path.is_file() else None
    try:
        copy = read_record(entry.name)
    except IntegrityError:
        copy = None
    if copy is not None and copy.path.is_file():
        installed, installed_from = str(copy.path), copy.original_file
    if entry.hub is not None:
        hub = f"{entry.hub.repo_id}@{entry.hub.revision}/{entry.hub.filename}"
        cached = _hub_cached(entry.hub)
    if entry.upstream is not None:
        up = entry.upstream
        alternates = f" (or {', '.join(up.alternate_files)})" if up.alternate_files else ""
        original = f"{up.file}{alternates}, {up.release}" + (f": {up.url}" if up.url else "")
    return WeightsSources(name=entry.name, default=entry.default, embedded=embedded, installed=installed,
                          installed_from=installed_from, cached=cached, hub=hub, download=download_url(entry),
                          original=original)


def _hub_cached(location) -> Optional[str]:
    from .hub import cache_dir, cached_file

    try:
        return cached_file(location.repo_id, location.filename, location.revision, cache_dir())
    except Exception:  # pragma: no cover - a broken cache is not this listing's problem
        return None


def list_sources(pattern: str, manifest) -> List[WeightsSources]:
    """:class:`WeightsSources` of every entry of ``manifest`` whose ``model.tag`` matches ``pattern``, sorted.

    (``video3d_zoo.list_pretrained(pattern, sources=True)`` calls this with the loaded manifest.)
    """
    entries = sorted((e for e in manifest.entries if fnmatch.fnmatchcase(e.name, pattern)), key=lambda e: e.name)
    return [weights_sources(e) for e in entries]


__all__ = ["HOME_ENV", "InstalledCopy", "SOURCE_ORDER", "WeightsSources", "entry_folder", "entry_lock",
           "find_installed", "install_state_dict", "list_sources", "read_record", "weights_home",
           "weights_sources"]
