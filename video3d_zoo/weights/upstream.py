"""Public originals by name: an entry's ``upstream.url`` downloaded, verified and installed on first use.

torchvision's video ResNets are public files (``https://download.pytorch.org/models/r3d_18-b3b3357e.pth``);
their manifest entries have no Hub copy, but the first ``pretrained=True`` can fetch the original
itself, as torchvision does, and install it as ``video3d-zoo import`` would
(:func:`video3d_zoo.weights.originals.install_from_upstream`): converted, checked against the entry,
stored in the weights cache and offline from then on.  This module only finds, fetches and verifies.

* **Which entries.**  An ``upstream.url`` over http(s) with a way to verify the file: the manifest's
  full ``sha256``, else its ``sha256_prefix``, else the hex digits torchvision puts in the file
  name (``-b3b3357e.pth``: the first 8 hex digits of the file's sha256).  Google Drive folders
  and other pages (no checksum) are left to ``video3d-zoo import``.  A private manifest
  (``VIDEO3D_ZOO_MANIFEST``) can point entries at mirrors.
* **The transfer.**  ``urllib`` with a connect/read timeout (``VIDEO3D_ZOO_DOWNLOAD_TIMEOUT``,
  seconds, default 60) and a size cap (``VIDEO3D_ZOO_MAX_DOWNLOAD_MB``, default 4096), into a
  temporary file inside the weights cache (``<home>/.downloads/``), hashed while it arrives.
* **Verification.**  A file whose sha256 differs, or that is larger than the cap, is removed and
  never loaded (:class:`~video3d_zoo.errors.IntegrityError`); only a verified file is renamed to
  its release name and imported.  The full sha256 is recorded with the installed copy.
* **Offline.**  With ``HF_HUB_OFFLINE=1`` nothing is requested: a :class:`DownloadError` says so.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import urlparse

from ..errors import ConfigError, DownloadError, IntegrityError, Video3DZooError

TIMEOUT_ENV = "VIDEO3D_ZOO_DOWNLOAD_TIMEOUT"
MAX_MB_ENV = "VIDEO3D_ZOO_MAX_DOWNLOAD_MB"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_MB = 4096
DOWNLOADS = ".downloads"
_CHUNK = 1024 * 1024
_NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z.]+$")


def expected_hash(upstream) -> Optional[Tuple[str, bool]]:
    """``(hex, is_full)``: what the original's sha256 must be (full) or start with; None if unknown."""
    if upstream.sha256:
        return upstream.sha256, True
    if upstream.sha256_prefix:
        return upstream.sha256_prefix, False
    found = _NAME_HASH.search(upstream.file)
    return (found.group(1), len(found.group(1)) == 64) if found else None


def download_url(entry) -> Optional[str]:
    """The URL the entry's original downloads from by name, or None (no http(s) URL or no checksum)."""
    up = entry.upstream
    if up is None or not up.url or urlparse(up.url).scheme not in ("http", "https"):
        return None
    return up.url if expected_hash(up) is not None else None


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"${name}={text!r}: expected a positive number")
    return value


def download_original(entry, folder: Path) -> Path:
    """Download and verify ``entry``'s original into ``folder`` under its release name; returns its path."""
    from .hub import offline_mode

    url, up = download_url(entry), entry.upstream
    if url is None:
        raise DownloadError(f"{entry.name}: the manifest gives no verifiable public URL for {up.file if up else 'it'}")
    if offline_mode():
        raise DownloadError(f"cannot download {entry.name} from {url}: offline mode (HF_HUB_OFFLINE) is on. Run "
                            f"once with network access, or download {up.file} yourself and run: video3d-zoo import "
                            f"{up.file}")
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".part.", suffix=".tmp", dir=folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, entry.name)
        _verify(digest, up, url, entry.name)
        target = folder / up.file
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(url: str, out, what: str) -> str:
    """Stream ``url`` into ``out`` under the size cap; the hex sha256 of what came."""
    import urllib.error
    import urllib.request

    cap = int(_env_number(MAX_MB_ENV, DEFAULT_MAX_MB) * 1024 * 1024)
    timeout = _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT)
    digest, received = hashlib.sha256(), 0
    sys.stderr.write(f"Downloading {what} from {url}\n")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) checked above)
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > cap:
                raise IntegrityError(f"{url}: the server announces {int(length)} bytes, over the cap of {cap} "
                                     f"bytes (${MAX_MB_ENV}); not downloaded")
            for block in iter(lambda: response.read(_CHUNK), b""):
                received += len(block)
                if received > cap:
                    raise IntegrityError(f"{url}: more than {cap} bytes (${MAX_MB_ENV}); the transfer was stopped "
                                         "and the partial file removed")
                digest.update(block)
                out.write(block)
    except Video3DZooError:
        raise  # our own refusals (size cap) pass as they are
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {what} from {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"cannot download {what} from {url}: {reason}; check the network or proxy "
                            f"(timeout ${TIMEOUT_ENV} = {timeout:g} s)") from None
    return digest.hexdigest()


def _verify(actual: str, upstream, url: str, what: str) -> None:
    expected, full = expected_hash(upstream)
    if (actual != expected) if full else not actual.startswith(expected):
        wanted = f"sha256 {expected}" if full else f"a sha256 starting with {expected}"
        raise IntegrityError(f"{url}: sha256 mismatch for {what} - expected {wanted}, the download has {actual}; "
                             "the file was removed and nothing was loaded")


__all__ = ["DOWNLOADS", "download_original", "download_url", "expected_hash"]
