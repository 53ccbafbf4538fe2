"""Verified downloads from the Hugging Face Hub (or any server speaking its file protocol).

:func:`download` returns the local path of a manifest entry's converted file:

1. **Cache first, no network.**  If the file of the pinned commit is in the huggingface_hub
   cache it is verified and returned; nothing is sent, also when the Hub is unreachable.
2. **Offline.**  With ``HF_HUB_OFFLINE=1`` (or ``offline=True``) and no cached copy, a
   :class:`~video3d_zoo.errors.DownloadError` says so; no request is made.
3. **Metadata check.**  One HEAD request (our own retry policy: ``VIDEO3D_ZOO_HUB_RETRIES``,
   default 2, and ``HF_HUB_ETAG_TIMEOUT`` seconds, default 10) classifies failures - 404 repo /
   revision / file, HTTP 5xx, timeout, no connection - into a DownloadError that names the repo,
   file, revision and endpoint and what to do.  A size or sha256 (ETag) that disagrees with the
   manifest is refused before any byte is downloaded.
4. **Download** with ``huggingface_hub.hf_hub_download(revision=<pinned commit>)``: its cache,
   file locks, atomic moves and progress bar.  The body may not exceed the manifest's size: the
   transfer stops at the first chunk past it (an :class:`~video3d_zoo.errors.IntegrityError`) and
   nothing is left in the cache.
5. **Verify** the full sha256 (hashed in 8 MiB chunks) and size against the manifest.  A
   mismatch raises :class:`~video3d_zoo.errors.IntegrityError` naming both hashes, after the
   snapshot link is removed from the cache (and the blob, unless another revision's snapshot
   links to the same content), so the bad file is never trusted.

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

import contextlib
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import DownloadError, IntegrityError
from ..fileio import write_text_atomic

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
        marker = _marker_path(sha256, key["path"])
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


# -- cache surgery ---------------------------------------------------------------------------------
def _repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def remove_cached(repo_id: str, filename: str, revision: str, cache: Optional[Path] = None) -> None:
    """Delete a cached file of one commit: its snapshot entry always, and the blob it points to
    unless another snapshot link of the same repository still uses it (two revisions with the same
    content share one blob; a wrong sha256 in one manifest entry must not break the other)."""
    cache = Path(cache or cache_dir())
    storage = cache / _repo_folder(repo_id)
    pointer = storage / "snapshots" / revision / Path(*filename.split("/"))
    blob = _link_target(pointer) if pointer.is_symlink() else None
    with contextlib.ExitStack() as stack:
        if blob is not None:
            lock_path = cache / ".locks" / _repo_folder(repo_id) / f"{blob.name}.lock"
            try:
                from huggingface_hub.utils import WeakFileLock

                lock_path.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(WeakFileLock(str(lock_path)))
            except (ImportError, OSError):  # pragma: no cover - locking is best effort here
                pass
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
            logger.info("removed %s from the huggingface_hub cache", pointer)
        if blob is not None and (blob.is_symlink() or blob.exists()):
            users = _links_to(storage / "snapshots", blob)
            if users:
                logger.info("kept %s: still linked from %s", blob, ", ".join(map(str, users[:3])))
            else:
                blob.unlink()
                logger.info("removed %s from the huggingface_hub cache", blob)


def _link_target(link: Path) -> Path:
    target = os.readlink(link)
    return Path(os.path.normpath(target if os.path.isabs(target) else link.parent / target))


def _links_to(snapshots: Path, blob: Path) -> list:
    """Snapshot symlinks (any revision, any file) that point to ``blob``."""
    if not snapshots.is_dir():
        return []
    return [p for p in snapshots.rglob("*") if p.is_symlink() and _link_target(p) == blob]


# -- the download --------------------------------------------------------------------------------
def _describe(repo_id: str, filename: str, revision: str, where: str) -> str:
    return f"{filename} from {repo_id} at revision {revision} ({where})"


def _head(url: str, timeout: float, attempts: int, what: str, where: str):
    """HEAD the file with our retry policy; translate every failure into a DownloadError."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    delay = 1.0
    for attempt in range(attempts + 1):
        last = attempt == attempts
        try:
            return get_hf_file_metadata(url, timeout=timeout)
        except GatedRepoError as exc:
            raise DownloadError(f"cannot download {what}: the repository is gated; accept its terms on the Hub "
                                "and log in (HF_TOKEN)") from exc
        except RevisionNotFoundError as exc:
            raise DownloadError(
                f"cannot download {what}: the repository has no such commit. The manifest pins a revision that "
                "this endpoint does not have (a rewritten history, or a mirror that lacks it): update the "
                "entry, or point VIDEO3D_ZOO_MANIFEST / HF_ENDPOINT to a matching manifest / mirror") from exc
        except EntryNotFoundError as exc:
            raise DownloadError(f"cannot download {what}: the file is not in that commit (HTTP 404); the "
                                "manifest entry is wrong for this repository") from exc
        except RepositoryNotFoundError as exc:
            raise DownloadError(f"cannot download {what}: repository not found (HTTP 404) - it does not "
                                "exist, or it is private and no valid HF_TOKEN was sent; check HF_ENDPOINT "
                                "if you use a mirror") from exc
        except OfflineModeIsEnabled as exc:
            raise DownloadError(f"cannot download {what}: huggingface_hub is in offline mode (HF_HUB_OFFLINE "
                                "was set when it was imported) and the file is not in the cache") from exc
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status is not None and (status >= 500 or status in (408, 429)) and not last:
                pass
            else:
                raise DownloadError(
                    f"cannot download {what}: the server answered HTTP {status}"
                    + (" (a server error; try again later, use a mirror with HF_ENDPOINT, or load a local copy "
                       "with pretrained='<path>')" if status and status >= 500 else "")
                    + (f" after {attempts + 1} attempts" if attempts else "")) from exc
        except Exception as exc:
            if not (_is_timeout(exc) or _is_network(exc)):
                raise DownloadError(f"cannot download {what}: {exc.__class__.__name__}: {exc}") from exc
            if last and _is_timeout(exc):
                raise DownloadError(
                    f"cannot download {what}: no answer within {timeout:g} s"
                    + (f" ({attempts + 1} attempts)" if attempts else "")
                    + "; check the network or proxy, or raise HF_HUB_ETAG_TIMEOUT") from exc
            if last:
                raise DownloadError(f"cannot download {what}: cannot reach {where} ({exc.__class__.__name__}: "
                                    f"{exc}); check the network, proxy or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 "
                                    "and use files already in the cache") from exc
        logger.warning("%s: attempt %d failed, retrying in %.0f s", what, attempt + 1, delay)
        time.sleep(delay)
        delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")  # pragma: no cover


def _class_names(exc: BaseException) -> str:
    return " ".join(c.__name__ for c in type(exc).__mro__)


def _is_timeout(exc: BaseException) -> bool:
    """A timeout from httpx2 / httpx / requests (checked by class name: no hard HTTP-client import)."""
    return isinstance(exc, TimeoutError) or "Timeout" in _class_names(exc)


def _is_network(exc: BaseException) -> bool:
    names = _class_names(exc)
    return isinstance(exc, ConnectionError) or any(
        n in names for n in ("NetworkError", "ConnectError", "ProxyError", "RemoteProtocolError", "TransportError"))


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def cached_file(repo_id: str, filename: str, revision: str, cache: Path) -> Optional[str]:
    """Path of ``filename`` at ``revision`` in the huggingface_hub cache, or ``None``.

    A pinned commit (what manifests hold) names its snapshot folder directly, so a warm start
    does not import huggingface_hub (about 0.15 s of imports, more than the rest of loading a
    model); branch and tag names go through huggingface_hub's own lookup of ``refs/``.
    """
    if _is_commit(revision):
        path = cache / _repo_folder(repo_id) / "snapshots" / revision / Path(*filename.split("/"))
        return str(path) if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision)
    return found if isinstance(found, str) else None


def download(location: Any = None, *, repo_id: Optional[str] = None, filename: Optional[str] = None,
             revision: Optional[str] = None, sha256: Optional[str] = None, size: Optional[int] = None,
             cache: Optional[PathLike] = None, endpoint_url: Optional[str] = None,
             offline: Optional[bool] = None, timeout: Optional[float] = None,
             attempts: Optional[int] = None) -> Path:
    """Local path of a verified copy of a published file.

    ``location`` is a :class:`~video3d_zoo.weights.manifest.HubLocation` (or anything with ``repo_id``,
    ``filename``, ``revision``, ``sha256`` and ``size``); the keyword arguments override it.
    ``cache``, ``endpoint_url``, ``offline``, ``timeout`` and ``attempts`` (retries after the
    first HEAD) default to the environment, read now (see the module docstring).
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
    cached = cached_file(repo_id, filename, revision, cache)
    if cached is not None:
        try:
            verify_file(cached, sha256, size, what=f"cached {what}")
            return Path(cached)
        except IntegrityError as exc:
            remove_cached(repo_id, filename, revision, cache)
            if offline:
                raise IntegrityError(f"{exc}. The bad copy was removed from the cache {cache}; it cannot be "
                                     "downloaded again while HF_HUB_OFFLINE is set") from None
            warnings.warn(f"{exc}; the bad copy was removed from the cache, downloading it again", stacklevel=2)

    # 2. offline and not cached
    if offline:
        raise DownloadError(
            f"cannot load {what}: offline mode (HF_HUB_OFFLINE) is on and the file is not in the cache "
            f"{cache}. Run once with network access and the same HF_HOME, copy a filled cache there, or pass "
            "pretrained='<local file or folder>'")

    # 3. metadata: fast, classified errors; size / sha256 checked before downloading
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=where)
    meta = _head(url, timeout, attempts, what, where)
    if meta.size is not None and meta.size != size:
        raise IntegrityError(f"{what}: the server reports {meta.size} bytes, the manifest expects {size} bytes "
                             f"(expected sha256 {sha256}); not downloaded")
    etag = (meta.etag or "").lower()
    if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) and etag != sha256:
        raise IntegrityError(f"{what}: sha256 mismatch - expected {sha256}, the server reports {etag}; "
                             "not downloaded")

    # 4. the download itself (huggingface_hub's cache, locks and progress bar), capped at the manifest size
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache), endpoint=where,
                               etag_timeout=timeout, library_name="video3d_zoo", library_version=_version(),
                               tqdm_class=_capped_progress(size))
    except OversizeBody as exc:
        raise IntegrityError(f"{what}: the server sent more than the {size} bytes the manifest states "
                             f"({exc.received} received); the transfer was stopped and nothing was kept in the "
                             f"cache {cache}") from None
    except Exception as exc:  # every failure of the transfer itself is a DownloadError
        raise DownloadError(f"cannot download {what}: {exc.__class__.__name__}: {exc}. Nothing was kept in the "
                            f"cache {cache}; try again") from exc

    # 5. verify the full file; a bad file leaves the cache
    try:
        verify_file(path, sha256, size, what=what)
    except IntegrityError as exc:
        remove_cached(repo_id, filename, revision, cache)
        raise IntegrityError(f"{exc}. The downloaded file was refused and removed from the cache {cache}; "
                             "nothing was loaded") from None
    return Path(path)


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


__all__ = ["assets_dir", "cache_dir", "download", "endpoint", "offline_mode", "remove_cached", "sha256_file",
           "verify_file"]
