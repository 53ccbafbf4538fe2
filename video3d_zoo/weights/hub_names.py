"""Hub repository ids, revisions and file names, checked before any request is sent or cache path is used.

huggingface_hub checks repository ids (:func:`huggingface_hub.utils.validate_repo_id`, used here)
but not revisions: ``hf_hub_download`` writes ``<cache>/models--ORG--NAME/refs/<revision>`` as
given, so a revision such as ``../../x`` names a file outside the cache.  Here a revision is a
40-hex commit id or a name git itself accepts for a branch or tag (the rules of
``git check-ref-format``), never a path; a file name is a relative path inside the repository.
Every problem is a :class:`~video3d_zoo.errors.ConfigError` that says what is expected.
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import ConfigError

MAX_REVISION_CHARS = 255
EXPECTED_REVISION = "a branch or tag name (git's ref-name rules) or a 40-hex commit id, never a path"
_COMMIT = re.compile(r"[0-9a-f]{40}")
# git refuses these anywhere in a ref name; '@' only as "@{" or alone, but in hf-hub:ORG/REPO@REVISION a
# second '@' is ambiguous, so it is refused outright.
_REFUSED_CHARS = frozenset(" ~^:?*[\\@")


def is_commit(revision: object) -> bool:
    """``True`` for a full commit id (40 lower-case hex digits)."""
    return isinstance(revision, str) and _COMMIT.fullmatch(revision) is not None


def revision_problem(revision: object) -> Optional[str]:
    """Why ``revision`` is neither a commit id nor a valid git ref name, or ``None`` when it is fine."""
    if not isinstance(revision, str) or not revision:
        return "empty"
    if len(revision) > MAX_REVISION_CHARS:
        return f"longer than {MAX_REVISION_CHARS} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in revision):
        return "contains a control character"
    refused = sorted(set(revision) & _REFUSED_CHARS)
    if refused:
        return "contains the character(s) " + " ".join(repr(c) for c in refused)
    if ".." in revision:
        return "contains '..'"
    if revision.startswith(("/", "-")):
        return f"starts with {revision[0]!r}"
    if revision.endswith(("/", ".")):
        return f"ends with {revision[-1]!r}"
    for part in revision.split("/"):
        if not part:
            return "contains an empty component ('//')"
        if part.startswith("."):
            return f"the component {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"the component {part!r} ends with '.lock'"
    return None


def repo_id_problem(repo_id: object) -> Optional[str]:
    """Why ``repo_id`` is not ``ORG/NAME`` as huggingface_hub's own validator accepts it, or ``None``."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        return "not of the form ORG/NAME"
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return str(exc).rstrip(".")
    return None


def filename_problem(filename: object) -> Optional[str]:
    """Why ``filename`` is not a relative path inside a repository, or ``None``."""
    if not isinstance(filename, str) or not filename:
        return "empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in filename) or "\\" in filename:
        return "a control character or a backslash"
    if filename.startswith("/") or any(part in ("", ".", "..") for part in filename.split("/")):
        return "not a relative path inside the repository"
    return None


def check_hub_file(repo_id: str, filename: str, revision: str, what: str, *, full: bool = True) -> None:
    """Raise :class:`ConfigError` unless the three names are safe to send and to use in the cache.

    ``full=False`` skips huggingface_hub's repo-id validator (its import costs about 20 ms) for a
    look into the cache, where the id only names one folder (every ``/`` becomes ``--``); it
    runs before the first request.
    """
    problem = revision_problem(revision)
    if problem:
        raise ConfigError(f"{what}: revision {revision!r} is not {EXPECTED_REVISION} ({problem})")
    problem = filename_problem(filename)
    if problem:
        raise ConfigError(f"{what}: file name {filename!r} is not a relative path inside the repository ({problem})")
    problem = repo_id_problem(repo_id) if full else (None if isinstance(repo_id, str) and repo_id.count("/") == 1
                                                       and all(repo_id.split("/")) else "not of the form ORG/NAME")
    if problem:
        raise ConfigError(f"{what}: repository id {repo_id!r} is not valid ({problem}); expected ORG/NAME")
