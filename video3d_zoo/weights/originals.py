"""One original checkpoint installed as its manifest entry: verified, converted, confirmed, installed.

The one procedure behind ``video3d-zoo import`` (:mod:`video3d_zoo.weights.importer`, files the user
has) and the first ``pretrained=True`` of an entry whose original is public
(:func:`install_from_upstream`, files downloaded by :mod:`video3d_zoo.weights.upstream`):

1. the file's sha256 against the manifest (``upstream.sha256``, or the ``sha256_prefix`` of
   torchvision's file names); where the manifest has none, the file's is recorded;
2. conversion, and the tensors confirmed to be the entry (:func:`~video3d_zoo.weights.identity.disagreements`
   and the parameter count) - a file that disagrees is refused naming what it is;
3. a strict load, then the converted tensors installed atomically under a lock
   (:func:`~video3d_zoo.weights.installed.install_state_dict`).

Conversion and loading are passed in (``convert`` / ``load``: ``convert_source`` and
``load_converted`` of :mod:`video3d_zoo.weights.loading`), so that the loader can install a public
original on first use without an import cycle.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from ..errors import IntegrityError, Video3DZooError
from .identity import disagreements

INSTALLED = "installed"
ALREADY = "already installed"
REFUSED = "refused"
NOT_RELEASED = "not a release"
STATUSES = (INSTALLED, ALREADY, REFUSED, NOT_RELEASED)


@dataclass
class ImportResult:
    """What happened to one file."""

    path: str
    status: str
    name: Optional[str] = None       # the manifest entry (model.tag) the file is named after
    message: str = ""
    sha256: Optional[str] = None     # of the original file
    sha256_in_manifest: Optional[bool] = None  # False: the manifest has no sha256 for it; this one is recorded
    installed: Optional[str] = None  # the installed weights file

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "status": self.status, "name": self.name, "message": self.message,
                "sha256": self.sha256, "sha256_in_manifest": self.sha256_in_manifest, "installed": self.installed}


def one_message(exc: BaseException) -> str:
    return getattr(exc, "python_message", None) or str(exc)


def import_original(path: Path, entry, manifest, convert: Callable, load: Callable,
                    extra: Optional[Dict[str, Any]] = None) -> ImportResult:
    """Steps 1-3 of the module docstring for ``path`` as ``entry``; refusals are in the result, not raised.
    ``extra`` joins the record of the original (``url`` of a download)."""
    from ..errors import CheckpointError
    from .hub import sha256_file
    from .installed import find_installed, install_state_dict, read_record
    from .tensor_checks import compact_state_dict

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot access it ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path}: not a regular file; not read")
    up = entry.upstream
    sha = sha256_file(path)
    size = path.stat().st_size
    result = ImportResult(str(path), INSTALLED, entry.name, sha256=sha,
                          sha256_in_manifest=bool(up.sha256))
    if up.sha256 and sha != up.sha256:
        return _refuse(result, f"sha256 mismatch: the manifest expects {up.sha256} for {up.file} ({entry.name}), "
                               f"this file has {sha} - a damaged download or a different file; not imported")
    if up.sha256_prefix and not sha.startswith(up.sha256_prefix):
        return _refuse(result, f"sha256 mismatch: {up.file} ({entry.name}) must have a sha256 starting with "
                               f"{up.sha256_prefix} (the hash in its file name), this file has {sha} - a damaged "
                               "download or a different file under that name; not imported")

    try:
        previous = read_record(entry.name)
    except Video3DZooError:
        previous = None  # a damaged record: this import replaces it
    if previous is not None and previous.original.get("sha256") == sha:
        try:
            copy = find_installed(entry)
        except Video3DZooError:
            copy = None  # damaged: import it again below
        if copy is not None:
            result.status, result.installed = ALREADY, str(copy.path)
            result.message = _hash_note(result)
            return result

    converted = convert(path)
    problems = disagreements(converted, entry)
    if problems:
        return _refuse(result, _mismatch_message(path, entry, converted, problems, manifest))
    model = load(converted)
    params = sum(p.numel() for p in model.parameters())
    if entry.params is not None and params != entry.params:
        return _refuse(result, f"{path.name} is named after {entry.name}, which has {entry.params:,} parameters; "
                               f"its tensors hold {params:,}; not imported")
    original = {"file": path.name, "path": str(path.resolve()), "sha256": sha, "size": size,
                "release": up.release, "layout": converted.layout,
                "sha256_in_manifest": bool(up.sha256 or up.sha256_prefix), **(extra or {})}
    config = entry.to_config().replace(source=f"installed:{path.name}")
    state = compact_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    copy, changed = install_state_dict(entry, state, config, original)
    result.installed = str(copy.path)
    if not changed:
        result.status = ALREADY
    result.message = _hash_note(result)
    return result


def _refuse(result: ImportResult, message: str) -> ImportResult:
    result.status, result.message = REFUSED, message
    return result


def _hash_note(result: ImportResult) -> str:
    if result.sha256_in_manifest:
        return "sha256 matches the manifest"
    return f"sha256 {result.sha256} (the manifest records none for this file; kept with the installed copy)"


def _describe_config(config, layout: str) -> str:
    kwargs = f" {dict(config.arch_kwargs)}" if config.arch_kwargs else ""
    return (f"{config.architecture}{kwargs} with {config.num_classes} classes ({layout} layout, "
            f"{config.input_spec.frames} frames)")


def _mismatch_message(path: Path, entry, converted, problems: Sequence[str], manifest) -> str:
    config = converted.config
    fits = [e for e in manifest.entries
            if e.model == config.architecture and dict(e.arch_kwargs) == dict(config.arch_kwargs)
            and e.num_classes == config.num_classes and e.upstream is not None
            and e.upstream.layout in (None, converted.layout)]
    wanted = _describe_config(entry.to_config(), entry.upstream.layout or "?")
    lines = [f"{path.name} is named after {entry.name} ({wanted}), but its tensors are "
             f"{_describe_config(config, converted.layout)}: {'; '.join(problems)}. Not imported."]
    if fits:
        names = ", ".join(f"{e.name} (released as {e.upstream.file})" for e in fits)
        lines.append(f"Those tensors fit {names}: if that is what it is, give the file that name.")
    else:
        lines.append("They fit no manifest entry; to use the file anyway, convert it and load it by path: "
                     f"video3d-zoo convert {path} -o ./converted")
    return "\n".join(lines)


def install_from_upstream(entry, manifest, convert: Callable, load: Callable):
    """Download (verified), convert and install ``entry``'s public original; the installed copy, or None
    when the entry has no verifiable public URL.  Under the entry's download lock: concurrent first
    uses download once.  The downloaded original is removed afterwards (the record keeps its sha256
    and URL); a refused one never stays."""
    from .installed import entry_lock, find_installed, weights_home
    from .upstream import DOWNLOADS, download_original, download_url

    url = download_url(entry)
    if url is None:
        return None
    with entry_lock(f"{entry.name}.download"):
        copy = find_installed(entry)  # installed meanwhile by another process
        if copy is not None:
            return copy
        original = download_original(entry, weights_home() / DOWNLOADS)
        try:
            result = import_original(original, entry, manifest, convert, load, {"url": url})
        finally:
            original.unlink(missing_ok=True)
    if result.status not in (INSTALLED, ALREADY):
        raise IntegrityError(f"{entry.name}: the file downloaded from {url} was refused: {result.message}")
    return find_installed(entry)


__all__ = ["ALREADY", "INSTALLED", "ImportResult", "NOT_RELEASED", "REFUSED", "STATUSES", "import_original",
           "install_from_upstream", "one_message"]
