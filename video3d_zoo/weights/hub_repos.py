"""Files of any Hub repository by id (``hf-hub:ORG/REPO``), verified by what the Hub says of them.

Manifest entries carry their own sha256 and size (:func:`video3d_zoo.weights.hub.download`).  A
repository named by id has no manifest entry, so the reference is the Hub's own metadata:
for an LFS file (weights) its ETag *is* the sha256 of the content; for a small file kept in
git (``config.json``) the ETag is the git blob id, ``sha1("blob <size>\\0" + content)``.
Both are checked after the download, and a file that does not match is removed from the
cache.  Offline (``HF_HUB_OFFLINE=1``), a cached file is checked against the name of its blob,
which huggingface_hub stores under that same ETag.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from ..errors import DownloadError, IntegrityError
from ..fileio import write_text_atomic
from .hub import (_describe, _head, _version, cache_dir, download, endpoint, etag_timeout, offline_mode,
                  remove_cached, retries)

_HEX = frozenset("0123456789abcdef")


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and set(text) <= _HEX


def git_blob_sha1(path: os.PathLike) -> str:
    """The git object id of a file's content (what the Hub reports as the ETag of non-LFS files)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check_git_blob(path: Path, etag: str, what: str, cleanup) -> None:
    actual = git_blob_sha1(path)
    if actual != etag:
        cleanup()
        raise IntegrityError(f"{what}: content does not match the Hub's ETag (git blob {etag}, got {actual}); "
                             "the file was refused and removed from the cache")


def fetch_repo_file(repo_id: str, filename: str, revision: str = "main", *, cache: Optional[Path] = None,
                    offline: Optional[bool] = None) -> Path:
    """Local path of a verified copy of ``filename`` from Hub repository ``repo_id``."""
    cache = Path(cache) if cache is not None else cache_dir()
    where = endpoint().rstrip("/")
    what = _describe(repo_id, filename, revision, where)
    offline = offline_mode() if offline is None else offline
    if offline:
        return _cached_copy(repo_id, filename, revision, cache, what)
    from huggingface_hub import hf_hub_download, hf_hub_url

    meta = _head(hf_hub_url(repo_id, filename, revision=revision, endpoint=where), etag_timeout(), retries(),
                 what, where)
    etag = (meta.etag or "").strip('"').lower()
    # Pin the commit the revision points to now: the cache keeps snapshots by commit, so a bad
    # file is removed from the right snapshot, and both files of a folder come from one commit.
    commit = getattr(meta, "commit_hash", None) or revision
    if _is_hex(etag, 64) and meta.size:
        path = download(repo_id=repo_id, filename=filename, revision=commit, sha256=etag, size=meta.size,
                        cache=cache, endpoint_url=where)
        _record_ref(cache, repo_id, revision, commit)
        return path
    revision = commit
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache), endpoint=where,
                                    etag_timeout=etag_timeout(), library_name="video3d_zoo",
                                    library_version=_version()))
    except Exception as exc:  # every failure of the transfer itself is a DownloadError
        raise DownloadError(f"cannot download {what}: {exc.__class__.__name__}: {exc}") from exc
    if _is_hex(etag, 40):
        _check_git_blob(path, etag, what, lambda: remove_cached(repo_id, filename, revision, cache))
    return path


def _record_ref(cache: Path, repo_id: str, revision: str, commit: str) -> None:
    """Remember which commit a branch or tag resolved to, as huggingface_hub does (``refs/NAME``),
    so the same reference works offline later."""
    if revision == commit or not _is_hex(commit, 40):
        return
    ref = cache / ("models--" + repo_id.replace("/", "--")) / "refs" / revision
    write_text_atomic(ref, commit)


def _cached_copy(repo_id: str, filename: str, revision: str, cache: Path, what: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision)
    if not isinstance(cached, str):
        raise DownloadError(f"cannot load {what}: offline mode (HF_HUB_OFFLINE) is on and the file is not in "
                            f"the cache {cache}; run once with network access and the same HF_HOME")
    path = Path(cached)
    blob = Path(os.path.realpath(path)).name.lower()
    cleanup = lambda: remove_cached(repo_id, filename, revision, cache)  # noqa: E731
    if _is_hex(blob, 64):
        from .hub import sha256_file

        actual = sha256_file(path)
        if actual != blob:
            cleanup()
            raise IntegrityError(f"cached {what}: sha256 {actual} differs from its blob name {blob}; "
                                 "removed from the cache")
    elif _is_hex(blob, 40):
        _check_git_blob(path, blob, f"cached {what}", cleanup)
    return path
