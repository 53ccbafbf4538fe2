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

Steps 1-3 for one file are :func:`video3d_zoo.weights.originals.import_original`, shared with the
download of public originals on first use.

Files with other names are reported as not being a released checkpoint, with the
``video3d-zoo convert`` command that makes them usable by path.  Afterwards
``create_model(name, pretrained=True | tag | alias)``, the factory functions, ``torch.hub.load``
and every ``--model NAME[.TAG]`` find the weights without network or manifest edits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from ..errors import CheckpointError, Video3DZooError
from .originals import (ALREADY, INSTALLED, NOT_RELEASED, REFUSED, STATUSES, ImportResult,  # noqa: F401
                        import_original, one_message)
from .resolve import CHECKPOINT_SUFFIXES

PathLike = Union[str, os.PathLike]


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
        report.results.append(import_file(path, entry, manifest))
    return report


def import_file(path: PathLike, entry, manifest=None, url: Optional[str] = None) -> ImportResult:
    """Verify, convert and install one original ``path`` as ``entry`` (named after it or downloaded for it);
    ``url`` is recorded with the installed copy as where the original came from.  Refusals are in the result."""
    from .loading import convert_source, load_converted
    from .manifest import load_manifest

    try:
        return import_original(Path(path), entry, manifest or load_manifest(), convert_source, load_converted,
                               {"url": url} if url else {})
    except Video3DZooError as exc:
        return ImportResult(str(path), REFUSED, entry.name, one_message(exc))


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
    if explicit and path.is_file() and not path.name.lower().endswith(".safetensors"):
        from .checkpoint_files import check_pickle

        try:  # a file that is no checkpoint at all is told so, not sent to convert (opcodes read, nothing run)
            check_pickle(path)
        except CheckpointError as exc:
            return ImportResult(str(path), REFUSED, None, str(exc))
    folder = f"./{path.name.split('.')[0] or 'converted'}"
    return ImportResult(str(path), NOT_RELEASED, None,
                        f"{path.name} is not the name of a released checkpoint in the weights manifest (a renamed "
                        f"release file must get its release name back). Convert it and load it by path instead:\n"
                        f"video3d-zoo convert {path} -o {folder}   then   --model {folder}\n"
                        f"(in Python: video3d_zoo.from_pretrained({str(path)!r}))")


# -- one file ----------------------------------------------------------------------------------------
__all__ = ["ImportReport", "ImportResult", "STATUSES", "import_file", "import_weights"]
