"""One metadata (HEAD) request to the Hub with the zoo's retry policy, every failure told as a DownloadError.

huggingface_hub's ``get_hf_file_metadata`` does the request; here its outcome is classified (gated
repository, unknown commit, missing file, unknown repository, offline mode, HTTP 5xx / 408 / 429,
timeout, no connection) into one :class:`~video3d_zoo.errors.DownloadError` that names the repo,
file, revision and endpoint and says what to do.  Server errors and network failures are retried
with a doubling delay (``attempts`` retries after the first request).
"""

from __future__ import annotations

import logging
import time

from ..errors import DownloadError

logger = logging.getLogger(__name__)


def head_file(url: str, timeout: float, attempts: int, what: str, where: str):
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
