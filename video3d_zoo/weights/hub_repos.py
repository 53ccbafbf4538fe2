"""Files of any Hub repository by id (``hf-hub:ORG/REPO``), verified by what the Hub says of them.

Manifest entries carry their own sha256 and size (:func:`video3d_zoo.weights.hub.download`).  A
repository named by id has no manifest entry, so the reference is the Hub's own metadata:
for an LFS file (weights) its ETag *is* the sha256 of the content; for a small file kept in
git (``config.json``) the ETag is the git blob id, ``sha1("blob <size>\\0" + content)``.
Both are checked before the file is used, the announced size caps the transfer, and a file
that does not match is removed from the cache.

The download is huggingface_hub's (``hf_hub_download`` with the revision as given), so a branch
or tag resolved online is recorded in its ``refs/`` and found by a later offline load
(``try_to_load_from_cache``); offline, a cached file is checked against the name of its blob,
which huggingface_hub stores under that same ETag.  Names are checked first
(:mod:`~video3d_zoo.weights.hub_names`): nothing is sent for a revision that is not a git ref
name or a commit id.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, DownloadError, IntegrityError
from ..fileio import ensure_inside
from .hub import (_describe, announced_commit, cache_dir, endpoint, etag_timeout, fetch_file, normalized_etag,
                  offline_mode, remove_cached, retries, snapshot_commit, verify_file)
from .hub_http import head_file
from .hub_names import check_hub_file

#: the files of a zoo folder on the Hub, in the order they are fetched (the first pins the commit)
HUB_FILES = ("config.json", "model.safetensors")
_HEX = frozenset("0123456789abcdef")


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and set(text) <= _HEX


def git_blob_sha1(path: os.PathLike) -> str:
    """The git object id of a file's content (what the Hub reports as the ETag of non-LFS files)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check(path: Path, etag: str, size: Optional[int], what: str, cleanup) -> None:
    """Raise IntegrityError (after ``cleanup``) unless ``path`` is what ``etag`` (sha256 or git blob) names."""
    try:
        if _is_hex(etag, 64):  # hashed once; the verified-hash marker spares later loads
            verify_file(path, etag, os.path.getsize(path) if size is None else size, what=what)
        elif git_blob_sha1(path) != etag:
            raise IntegrityError(f"{what}: content does not match the Hub's ETag (git blob {etag}, got "
                                 f"{git_blob_sha1(path)})")
    except IntegrityError as exc:
        cleanup()
        raise IntegrityError(f"{exc}; the file was refused and removed from the cache") from None


def fetch_repo_file(repo_id: str, filename: str, revision: str = "main", *, cache: Optional[Path] = None,
                    offline: Optional[bool] = None) -> Path:
    """Local path of a verified copy of ``filename`` from Hub repository ``repo_id`` at ``revision``."""
    cache = Path(cache) if cache is not None else cache_dir()
    where = endpoint().rstrip("/")
    what = _describe(repo_id, filename, revision, where)
    check_hub_file(repo_id, filename, revision, what)
    offline = offline_mode() if offline is None else offline
    if offline:
        return _cached_copy(repo_id, filename, revision, cache, what)
    from huggingface_hub import hf_hub_url, try_to_load_from_cache

    meta = head_file(hf_hub_url(repo_id, filename, revision=revision, endpoint=where), etag_timeout(), retries(),
                     what, where)
    commit = announced_commit(meta, revision, what)
    etag = normalized_etag(meta)
    if not (_is_hex(etag, 64) or _is_hex(etag, 40)):
        raise DownloadError(f"cannot download {what}: the server's ETag {etag!r} is neither a sha256 nor a git "
                            "blob id, so the file could not be verified; refused, nothing downloaded")
    if meta.size is None:
        raise DownloadError(f"cannot download {what}: the server announced no size, so the transfer could not "
                            "be bounded; refused, nothing downloaded")
    # Already cached for this commit, and the ref (if a branch or tag) already points to it: no transfer.
    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision)
    if isinstance(found, str) and snapshot_commit(found, cache) == commit:
        path = Path(found)
        ensure_inside(path, cache, what)
    else:
        path = fetch_file(repo_id, filename, revision, cache=cache, where=where, timeout=etag_timeout(),
                          limit=meta.size, commit=commit, etag=etag, what=what)
    got = snapshot_commit(path, cache) or commit
    _check(path, etag, meta.size, what, lambda: remove_cached(repo_id, filename, got, cache))
    return path


def _cached_copy(repo_id: str, filename: str, revision: str, cache: Path, what: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision)
    if not isinstance(cached, str):
        raise DownloadError(f"cannot load {what}: offline mode (HF_HUB_OFFLINE) is on and the file is not in "
                            f"the cache {cache}; run once with network access and the same HF_HOME")
    path = Path(cached)
    ensure_inside(path, cache, f"cached {what}")
    blob = Path(os.path.realpath(path)).name.lower()
    commit = snapshot_commit(path, cache) or revision
    if _is_hex(blob, 64) or _is_hex(blob, 40):
        _check(path, blob, None, f"cached {what}", lambda: remove_cached(repo_id, filename, commit, cache))
    return path


def fetch_hub_folder(repo_id: str, revision: Optional[str] = None) -> Path:
    """Download (or find in the cache) a zoo folder from a Hub repository; returns the folder.

    The first file pins the commit the revision points to now, and the second is fetched at that
    commit, so both come from one snapshot even if the branch moves meanwhile.  Each file is
    checked against the sha256 (or git blob id) the Hub reports for it; a file that does not
    match is removed from the cache and refused.
    """
    first = fetch_repo_file(repo_id, HUB_FILES[0], revision or "main")
    cache = cache_dir()
    pinned = revision or "main"
    if not offline_mode():
        pinned = snapshot_commit(first, cache) or pinned
    paths = [first] + [fetch_repo_file(repo_id, name, pinned) for name in HUB_FILES[1:]]
    folders = {p.parent for p in paths}
    if len(folders) != 1:  # both files come from one snapshot folder of the cache
        raise ConfigError(f"hf-hub:{repo_id}: {' and '.join(HUB_FILES)} resolved to different snapshots "
                          f"{sorted(map(str, folders))}; pin a revision with @REVISION")
    return folders.pop()
