"""Verified downloads from the Hugging Face Hub (or any server speaking its file protocol).

:func:`download` returns the local path of a manifest entry's converted file:

0. **Names first.**  The repository id, revision and file name are checked
   (:mod:`~video3d_zoo.weights.hub_names`: huggingface_hub's repo-id validator, git's ref-name
   rules, a relative file name) before the cache is looked at or a request is sent.
1. **Cache first, no network.**  If the file of the pinned commit is in the huggingface_hub
   cache it is verified and returned; nothing is sent, also when the Hub is unreachable.
2. **Offline.**  With ``HF_HUB_OFFLINE=1`` (or ``offline=True``) and no cached copy, a
   :class:`~video3d_zoo.errors.DownloadError` says so; no request is made.
3. **Metadata check.**  One HEAD request (:mod:`~video3d_zoo.weights.hub_http`: retries and
   classified failures).  A commit other than the pinned one, a size or a sha256 (ETag) that
   disagrees with the manifest is refused before any byte is downloaded.
4. **Download** with ``huggingface_hub.hf_hub_download``: its cache layout, refs, file locks,
   atomic moves and progress bar, so ``hf cache scan`` / ``hf cache delete`` see the zoo's files.
   Every path it will write (named from the revision and from what the server announced) is
   checked to lie inside the cache first.  The body may not exceed the manifest's size: the
   transfer stops at the first chunk past it (an :class:`~video3d_zoo.errors.IntegrityError`) and
   nothing is left in the cache.
5. **Verify** the full sha256 (hashed in 8 MiB chunks) and size against the manifest.  A
   mismatch raises :class:`~video3d_zoo.errors.IntegrityError` naming both hashes, after the file
   is removed from the cache with huggingface_hub's cache manager (the blob too, unless another
   revision's snapshot links to the same content), so the bad file is never trusted.

Environment (read at call time, not import time: huggingface_hub reads its own constants once,
when it is imported, so the endpoint and cache folder are passed to it explicitly):
``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE`` / ``XDG_CACHE_HOME``, ``HF_HUB_OFFLINE``,
``HF_HUB_ETAG_TIMEOUT``.  The body download timeout is huggingface_hub's
``HF_HUB_DOWNLOAD_TIMEOUT``, read when huggingface_hub is imported.

Verified-hash marker: after a file has been hashed, a small JSON marker under
``$HF_HOME/assets/video3d_zoo/verified/`` records its real path, size, inode, device, mtime and
ctime (nanoseconds).  A later load whose cached file has exactly the same stat skips re-hashing.
Any write to the file, a rename over it, or resetting its mtime changes the ctime or inode (the
ctime cannot be set from user space), so a changed file is always re-hashed; what the marker does
not catch is silent media corruption.  ``VIDEO3D_ZOO_VERIFY=always`` hashes on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import DownloadError, IntegrityError
from ..fileio import ensure_inside, write_text_atomic
from .hub_http import head_file
from .hub_names import check_hub_file, is_commit

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
RETRIES_ENV = "VIDEO3D_ZOO_HUB_RETRIES"
VERIFY_ENV = "VIDEO3D_ZOO_VERIFY"
CHUNK = 8 * 1024 * 1024
_TRUE = {"1", "ON", "YES", "TRUE"}

PathLike = Union[str, os.PathLike]


# -- settings, read at call time -------------------------------------------------------------------
def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def hf_home() -> Path:
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                           "huggingface")
    return Path(_expand(os.environ.get("HF_HOME") or default))


def cache_dir() -> Path:
    """The huggingface_hub cache folder as the environment says *now* (same precedence as huggingface_hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(_expand(os.environ[var]))
    return hf_home() / "hub"


def assets_dir() -> Path:
    for var in ("HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE"):
        if os.environ.get(var):
            return Path(_expand(os.environ[var]))
    return hf_home() / "assets"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) now, or as huggingface_hub saw it at import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if value.upper() in _TRUE:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - defensive
        return False


def etag_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    except ValueError:
        return 10.0


def retries() -> int:
    try:
        return max(0, int(os.environ.get(RETRIES_ENV) or 2))
    except ValueError:
        return 2


# -- hashing ---------------------------------------------------------------------------------------
def sha256_file(path: PathLike, chunk_size: int = CHUNK) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(path: Path) -> dict:
    real = os.path.realpath(path)
    st = os.stat(real)
    return {"path": real, "size": st.st_size, "ino": st.st_ino, "dev": st.st_dev,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _marker_path(sha256: str, real_path: str) -> Path:
    where = hashlib.sha1(real_path.encode("utf-8")).hexdigest()[:16]
    return assets_dir() / "video3d_zoo" / "verified" / f"{sha256}-{where}.json"


def _marker_ok(path: Path, sha256: str) -> bool:
    if (os.environ.get(VERIFY_ENV) or "").lower() == "always":
        return False
    try:
        key = _stat_key(path)
        stored = json.loads(_marker_path(sha256, key["path"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stored == {**key, "sha256": sha256}


def _write_marker(path: Path, sha256: str) -> None:
    try:
        key = _stat_key(path)
        marker = ensure_inside(_marker_path(sha256, key["path"]), assets_dir(), "verified-hash marker")
        write_text_atomic(marker, json.dumps({**key, "sha256": sha256}))
    except OSError as exc:  # a read-only assets folder only costs a re-hash next time
        logger.debug("could not write verified-hash marker: %s", exc)


def verify_file(path: PathLike, sha256: str, size: int, what: str = "") -> None:
    """Raise :class:`IntegrityError` unless ``path`` has exactly ``size`` bytes and this sha256."""
    path = Path(path)
    label = what or str(path)
    actual_size = os.path.getsize(path)
    if actual_size != size:
        raise IntegrityError(f"{label}: size {actual_size} bytes, the manifest expects {size} bytes "
                             f"(expected sha256 {sha256}); truncated or a different file")
    if _marker_ok(path, sha256):
        return
    actual = sha256_file(path)
    if actual != sha256:
        raise IntegrityError(f"{label}: sha256 mismatch - expected {sha256}, got {actual}")
    _write_marker(path, sha256)


# -- the cache: huggingface_hub's layout, read and cleaned through its API ----------------------------
def _repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def snapshot_commit(path: PathLike, cache: PathLike) -> Optional[str]:
    """The commit (snapshot folder) a cached file path belongs to, or ``None``."""
    parts = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(cache))).parts
    return parts[2] if len(parts) > 3 and parts[1] == "snapshots" else None


def remove_cached(repo_id: str, filename: str, revision: str, cache: Optional[PathLike] = None) -> None:
    """Delete one cached file of commit ``revision`` with huggingface_hub's own cache manager
    (``scan_cache_dir().delete_files``): its snapshot entry, and its blob unless another snapshot
    still links to it (two revisions with the same content share one blob; a wrong sha256 in one
    manifest entry must not break the other).  What ``hf cache scan`` lists, this removes."""
    from huggingface_hub import scan_cache_dir

    cache = Path(cache or cache_dir())
    try:
        info = scan_cache_dir(cache)
    except (OSError, ValueError) as exc:  # CacheNotFound is an OSError: nothing cached, nothing to remove
        return logger.debug("nothing removed from %s: %s", cache, exc)
    files = [f for repo in info.repos if repo.repo_id == repo_id and repo.repo_type == "model"
             for rev in repo.revisions if rev.commit_hash == revision for f in rev.files
             if f.file_path.relative_to(rev.snapshot_path).as_posix() == filename]
    for f in files:
        ensure_inside(f.file_path, cache, "cached file"), ensure_inside(f.blob_path, cache, "cached blob")
    if files:
        info.delete_files(*files).execute()
        return logger.info("removed %s of %s@%s from the huggingface_hub cache %s", filename, repo_id, revision, cache)
    # A repository folder huggingface_hub's scan calls corrupted (a dangling link, a ref to a missing
    # snapshot) is not listed: drop the entry and its blob directly, so the bad bytes are not reused.
    storage = cache / _repo_folder(repo_id)
    pointer = storage / "snapshots" / revision / Path(*filename.split("/"))
    if not os.path.lexists(pointer):
        return
    ensure_inside(pointer.parent, storage, "cached file")
    target, linked = os.path.realpath(pointer), pointer.is_symlink()
    pointer.unlink()
    blobs = os.path.realpath(storage / "blobs")
    if linked and os.path.commonpath([blobs, target]) == blobs and os.path.isfile(target):
        os.unlink(target)


# -- the download --------------------------------------------------------------------------------
def _describe(repo_id: str, filename: str, revision: str, where: str) -> str:
    return f"{filename} from {repo_id} at revision {revision} ({where})"


def cached_file(repo_id: str, filename: str, revision: str, cache: Path) -> Optional[str]:
    """Path of ``filename`` at ``revision`` in the huggingface_hub cache, or ``None``.

    Branch and tag names go through huggingface_hub's own lookup (``try_to_load_from_cache``, which
    follows the ``refs/`` an earlier online load wrote).  A pinned commit (what manifests hold)
    names its snapshot folder in huggingface_hub's documented layout, read directly: a warm start
    then does not import huggingface_hub's download modules (about 0.1 s, more than the rest of
    loading a model).  Either way the path must resolve inside ``cache``.
    """
    check_hub_file(repo_id, filename, revision, f"{repo_id}/{filename}", full=False)
    if is_commit(revision):
        path = cache / _repo_folder(repo_id) / "snapshots" / revision / Path(*filename.split("/"))
        found: Any = str(path) if path.is_file() else None
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision)
    if not isinstance(found, str):
        return None
    ensure_inside(found, cache, f"cached {filename} of {repo_id}")
    return found


def announced_commit(meta: Any, revision: str, what: str) -> str:
    """The commit the server says ``revision`` is, refused unless it is a commit id and, for a pinned
    commit, that very commit (a server answering with another would leave the file where a later
    offline load of the pinned commit never looks)."""
    commit = getattr(meta, "commit_hash", None)
    if not is_commit(commit):
        raise DownloadError(f"cannot download {what}: the server named no commit id for it (got {commit!r}); "
                            "refused, nothing downloaded")
    if is_commit(revision) and commit != revision:
        raise DownloadError(f"cannot download {what}: the server answered the pinned commit {revision} with "
                            f"commit {commit}; refused, nothing downloaded (a mirror that ignores revisions, or a "
                            "rewritten history: use a server that has the commit, or update the pin)")
    return commit


def fetch_file(repo_id: str, filename: str, revision: str, *, cache: Path, where: str, timeout: float,
               limit: int, commit: str, etag: str, what: str) -> Path:
    """``hf_hub_download`` into ``cache`` (its layout, refs, locks and progress bar), the body capped at
    ``limit`` bytes.  What it will write (the ref, the snapshot entry, the blob and its lock, named
    from the revision and from what the server announced) is checked to lie inside ``cache`` first,
    and the path it returns after."""
    from huggingface_hub import hf_hub_download

    storage = cache / _repo_folder(repo_id)
    planned = [storage / "snapshots" / commit / Path(*filename.split("/")), storage / "blobs" / etag,
               cache / ".locks" / _repo_folder(repo_id) / f"{etag}.lock", storage / "refs" / revision]
    for path in planned:
        ensure_inside(path, storage if ".locks" not in path.parts else cache, what)
    try:
        found = hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache), endpoint=where,
                                etag_timeout=timeout, library_name="video3d_zoo", library_version=_version(),
                                tqdm_class=_capped_progress(limit))
    except OversizeBody as exc:
        raise IntegrityError(f"{what}: the server sent more than the {limit} bytes the manifest states "
                             f"({exc.received} received); the transfer was stopped and nothing was kept in the "
                             f"cache {cache}") from None
    except Exception as exc:  # every failure of the transfer itself is a DownloadError
        raise DownloadError(f"cannot download {what}: {exc.__class__.__name__}: {exc}. Nothing was kept in the "
                            f"cache {cache}; try again") from exc
    ensure_inside(found, cache, what)
    return Path(found)


def download(location: Any = None, *, repo_id: Optional[str] = None, filename: Optional[str] = None,
             revision: Optional[str] = None, sha256: Optional[str] = None, size: Optional[int] = None,
             cache: Optional[PathLike] = None, endpoint_url: Optional[str] = None,
             offline: Optional[bool] = None, timeout: Optional[float] = None,
             attempts: Optional[int] = None) -> Path:
    """Local path of a verified copy of a published file.

    ``location`` is a :class:`~video3d_zoo.weights.manifest.HubLocation` (or anything with ``repo_id``,
    ``filename``, ``revision``, ``sha256`` and ``size``); the keyword arguments override it.
    ``cache``, ``endpoint_url``, ``offline``, ``timeout`` and ``attempts`` (retries after the
    first HEAD) default to the environment, read now (see the module docstring).  The names are
    checked (:mod:`~video3d_zoo.weights.hub_names`) before the cache is looked at or a request sent.
    """
    repo_id = repo_id or getattr(location, "repo_id", None)
    filename = filename or getattr(location, "filename", None)
    revision = revision or getattr(location, "revision", None)
    sha256 = sha256 or getattr(location, "sha256", None)
    size = size if size is not None else getattr(location, "size", None)
    if not all((repo_id, filename, revision, sha256, size)):
        raise ValueError("download() needs repo_id, filename, revision, sha256 and size")
    cache = Path(cache) if cache is not None else cache_dir()
    where = (endpoint_url or endpoint()).rstrip("/")
    offline = offline_mode() if offline is None else offline
    timeout = etag_timeout() if timeout is None else timeout
    attempts = retries() if attempts is None else attempts
    what = _describe(repo_id, filename, revision, where)

    # 1. the cache: no network at all
    cached = _verified_cached(repo_id, filename, revision, sha256, size, cache, offline, what)
    if cached is not None:
        return cached

    # 2. offline and not cached
    if offline:
        raise DownloadError(
            f"cannot load {what}: offline mode (HF_HUB_OFFLINE) is on and the file is not in the cache "
            f"{cache}. Run once with network access and the same HF_HOME, copy a filled cache there, or pass "
            "pretrained='<local file or folder>'")

    # 3. metadata: fast, classified errors; commit, size and sha256 checked before downloading
    check_hub_file(repo_id, filename, revision, what)
    from huggingface_hub import hf_hub_url

    meta = head_file(hf_hub_url(repo_id, filename, revision=revision, endpoint=where), timeout, attempts, what, where)
    commit, etag = announced_commit(meta, revision, what), normalized_etag(meta)
    _check_announced(meta.size, etag, size, sha256, what)

    # 4. the download itself, capped at the manifest size; 5. verify the full file, a bad file leaves the cache
    path = fetch_file(repo_id, filename, revision, cache=cache, where=where, timeout=timeout, limit=size,
                      commit=commit, etag=etag, what=what)
    try:
        verify_file(path, sha256, size, what=what)
    except IntegrityError as exc:
        remove_cached(repo_id, filename, snapshot_commit(path, cache) or commit, cache)
        raise IntegrityError(f"{exc}. The downloaded file was refused and removed from the cache {cache}; "
                             "nothing was loaded") from None
    return path


def _verified_cached(repo_id: str, filename: str, revision: str, sha256: str, size: int, cache: Path,
                     offline: bool, what: str) -> Optional[Path]:
    """The cached copy if it verifies; a bad copy is removed (and, offline, refused)."""
    cached = cached_file(repo_id, filename, revision, cache)
    if cached is None:
        return None
    try:
        verify_file(cached, sha256, size, what=f"cached {what}")
        return Path(cached)
    except IntegrityError as exc:
        remove_cached(repo_id, filename, snapshot_commit(cached, cache) or revision, cache)
        if offline:
            raise IntegrityError(f"{exc}. The bad copy was removed from the cache {cache}; it cannot be "
                                 "downloaded again while HF_HUB_OFFLINE is set") from None
        warnings.warn(f"{exc}; the bad copy was removed from the cache, downloading it again", stacklevel=3)
    return None


def _check_announced(announced_size: Optional[int], etag: str, size: int, sha256: str, what: str) -> None:
    """Refuse, before any byte is downloaded, a size or sha256 (ETag) the server announces that differs."""
    if announced_size is not None and announced_size != size:
        raise IntegrityError(f"{what}: the server reports {announced_size} bytes, the manifest expects {size} "
                             f"bytes (expected sha256 {sha256}); not downloaded")
    if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) and etag != sha256:
        raise IntegrityError(f"{what}: sha256 mismatch - expected {sha256}, the server reports {etag}; "
                             "not downloaded")


def normalized_etag(meta: Any) -> str:
    """The ETag huggingface_hub names the blob after (quotes and a weak ``W/`` dropped), lower case."""
    etag = (getattr(meta, "etag", None) or "").strip()
    return (etag[2:] if etag.startswith("W/") else etag).strip('"').lower()


class OversizeBody(Exception):
    """Raised from the progress callback when a body grows past the manifest's size."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


def _capped_progress(limit: int):
    """A huggingface_hub progress-bar class that stops the transfer once more than ``limit`` bytes came.

    huggingface_hub calls ``update(len(chunk))`` *before* writing each chunk, so raising there
    keeps an oversize (or endless) body off the disk; its own clean-up then deletes the
    temporary file.  The count is kept here because a disabled tqdm does not count.
    """
    from huggingface_hub.utils import tqdm as hf_tqdm

    class CappedProgress(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.received = int(kwargs.get("initial") or 0)

        def update(self, n: Any = 1) -> Any:
            self.received += int(n or 0)  # negative on a restarted transfer
            if self.received > limit:
                raise OversizeBody(self.received)
            return super().update(n)

    return CappedProgress


def _version() -> str:
    from ..version import __version__

    return __version__


__all__ = ["announced_commit", "assets_dir", "cache_dir", "cached_file", "download", "endpoint", "fetch_file",
           "offline_mode", "remove_cached", "sha256_file", "snapshot_commit", "verify_file"]
