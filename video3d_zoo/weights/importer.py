"""``video3d-zoo import``: install original checkpoints once, then load them by name, offline.

:func:`import_weights` takes files and folders (searched recursively).  For each file named like
a released checkpoint (``upstream.file`` or one of its ``alternate_files`` in the weights
manifest) it

1. checks the file's sha256 against the manifest: ``upstream.sha256`` where recorded, and the
   ``sha256_prefix`` torchvision puts in its file names (``r3d_18-b3b3357e.pth``); where the
   manifest has no hash, the file's is recorded with the installed copy (and in the report);
2. converts it and confirms it is what its name says: the architecture, its arguments, the
   number of classes, the frames and input convention, the layout and the parameter count
   inferred from the tensors must equal the entry's - a file that disagrees is refused, naming
   the entry it is named after and what its tensors are (and which entry they do fit);
3. loads it strictly (NaN / inf and negative running variances refused) and installs the
   converted tensors in the local weights cache (:mod:`video3d_zoo.weights.installed`), atomically and
   under a lock; importing the same file again changes nothing.

Files with other names are reported as not being a released checkpoint, with the
``video3d-zoo convert`` command that makes them usable by path.  Afterwards
``create_model(name, pretrained=True | tag | alias)``, the factory functions, ``torch.hub.load``
and every ``--model NAME[.TAG]`` find the weights without network or manifest edits.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import Video3DZooError
from .resolve import CHECKPOINT_SUFFIXES

PathLike = Union[str, os.PathLike]

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


@dataclass
class ImportReport:
    """The result of :func:`import_weights`: one :class:`ImportResult` per file looked at."""

    home: Path
    results: List[ImportResult] = field(default_factory=list)

    def by_status(self, status: str) -> List[ImportResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> bool:
        """At least one released checkpoint is now installed, and none was refused."""
        return not self.by_status(REFUSED) and bool(self.by_status(INSTALLED) or self.by_status(ALREADY))

    @property
    def names(self) -> List[str]:
        """The entries now installed from these files."""
        return sorted({r.name for r in self.results if r.status in (INSTALLED, ALREADY) and r.name})

    def to_dict(self) -> Dict[str, Any]:
        return {"home": str(self.home), "ok": self.ok, "results": [r.to_dict() for r in self.results]}

    def describe(self, cli: bool = True) -> str:
        """A human summary; ``cli`` chooses command-line or Python usage hints."""
        lines = []
        for r in self.results:
            head = f"{r.status:<17} {r.name or '-':<32} {r.path}"
            lines.append(head)
            if r.message:
                lines += [f"    {line}" for line in r.message.splitlines()]
        counts = ", ".join(f"{len(self.by_status(s))} {s}" for s in STATUSES if self.by_status(s))
        lines.append(f"{counts or 'no files found'}; installed weights live in {self.home}")
        if self.names:
            first = self.names[0]
            model, _, tag = first.partition(".")
            use = (f"--model {first}" if cli else f"video3d_zoo.create_model({model!r}, pretrained={tag!r})")
            lines.append(f"load them by name, offline: {use}")
        return "\n".join(lines)


def import_weights(paths: Union[PathLike, Iterable[PathLike]], manifest=None) -> ImportReport:
    """Verify, convert and install original checkpoints (see the module docstring); returns a report.

    ``paths`` are files or folders (searched recursively for files named like a released
    checkpoint, or with a checkpoint suffix).  Nothing raises for one bad file: every file gets
    a line in the report (``report.ok`` is False if any was refused or nothing was installed).
    """
    from .installed import weights_home
    from .manifest import load_manifest

    manifest = manifest or load_manifest()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    index = _release_index(manifest)
    report = ImportReport(home=weights_home())
    for path, explicit in _candidates(paths, index):
        entry = index.get(path.name)
        if entry is None:
            report.results.append(_not_released(path, explicit))
            continue
        try:
            report.results.append(_import_one(path, entry, manifest))
        except Video3DZooError as exc:
            report.results.append(ImportResult(str(path), REFUSED, entry.name, _one_message(exc)))
    return report


def _one_message(exc: BaseException) -> str:
    return getattr(exc, "python_message", None) or str(exc)


# -- finding files ---------------------------------------------------------------------------------
def _release_index(manifest) -> Dict[str, Any]:
    index: Dict[str, Any] = {}
    for entry in manifest.entries:
        if entry.upstream is None:
            continue
        for name in (entry.upstream.file,) + tuple(entry.upstream.alternate_files):
            index.setdefault(name, entry)
    return index


def _candidates(paths: Iterable[PathLike], index: Dict[str, Any]) -> List[Tuple[Path, bool]]:
    """``(file, named explicitly)`` in a stable order, each file once."""
    out: List[Tuple[Path, bool]] = []
    seen = set()

    def add(path: Path, explicit: bool) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.append((path, explicit))

    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if found.is_file() and (found.name in index or found.name.lower().endswith(CHECKPOINT_SUFFIXES)):
                    add(found, False)
        else:
            add(path, True)
    return out


def _not_released(path: Path, explicit: bool) -> ImportResult:
    if explicit and not path.exists():
        return ImportResult(str(path), REFUSED, None, "no such file or folder")
    folder = f"./{path.name.split('.')[0] or 'converted'}"
    return ImportResult(str(path), NOT_RELEASED, None,
                        f"{path.name} is not the name of a released checkpoint in the weights manifest (a renamed "
                        f"release file must get its release name back). Convert it and load it by path instead:\n"
                        f"video3d-zoo convert {path} -o {folder}   then   --model {folder}\n"
                        f"(in Python: video3d_zoo.from_pretrained({str(path)!r}))")


# -- one file ----------------------------------------------------------------------------------------
def _import_one(path: Path, entry, manifest) -> ImportResult:
    from ..errors import CheckpointError
    from .hub import sha256_file
    from .installed import find_installed, install_state_dict, read_record
    from .tensor_checks import compact_state_dict
    from .loading import convert_source, load_converted

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

    converted = convert_source(path)
    problems = disagreements(converted, entry)
    if problems:
        return _refuse(result, _mismatch_message(path, entry, converted, problems, manifest))
    model = load_converted(converted)
    params = sum(p.numel() for p in model.parameters())
    if entry.params is not None and params != entry.params:
        return _refuse(result, f"{path.name} is named after {entry.name}, which has {entry.params:,} parameters; "
                               f"its tensors hold {params:,}; not imported")
    original = {"file": path.name, "path": str(path.resolve()), "sha256": sha, "size": size,
                "release": up.release, "layout": converted.layout,
                "sha256_in_manifest": bool(up.sha256 or up.sha256_prefix)}
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


def disagreements(converted, entry) -> List[str]:
    """What a converted original says that its manifest entry does not (empty when they agree)."""
    config, up = converted.config, entry.upstream
    out = []
    if config.architecture != entry.model:
        out.append(f"architecture {config.architecture} (the entry: {entry.model})")
    elif dict(config.arch_kwargs) != dict(entry.arch_kwargs):
        out.append(f"arguments {dict(config.arch_kwargs)} (the entry: {dict(entry.arch_kwargs)})")
    if config.num_classes != entry.num_classes:
        out.append(f"{config.num_classes} classes (the entry: {entry.num_classes})")
    if config.in_chans != 3:
        out.append(f"{config.in_chans} input channels (the entry: 3)")
    if up.layout and converted.layout != up.layout:
        out.append(f"the {converted.layout} layout (the entry: {up.layout})")
    spec, want = config.input_spec, entry.input_spec
    if spec.frames != want.frames:
        out.append(f"{spec.frames} frames (the entry: {want.frames})")
    elif spec != want:
        out.append(f"the {spec.name} input convention (the entry: {want.name})")
    return out


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


__all__ = ["ImportReport", "ImportResult", "STATUSES", "import_weights"]
