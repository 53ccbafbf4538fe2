"""Atomic file writes: a file is replaced only by a complete new version, never left half-written.

:class:`atomic_path` yields a temporary path next to the target and renames it into place when
the ``with`` block succeeds (and removes it when it fails); :func:`write_text_atomic` and
:func:`write_json_atomic` are the one-line forms for text and JSON files.  A full disk (or
quota) while writing is a :class:`~video3d_zoo.errors.DiskFullError` naming the file.  :func:`ensure_inside`
checks that a path built from outside input (a Hub revision, a file name) stays in the folder the
package owns before anything is written or removed there.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

from .errors import ConfigError, DiskFullError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

PathLike = Union[str, os.PathLike]


class atomic_path:
    """Context manager yielding a temporary path that replaces ``target`` on success only.

    The temporary is ``.<target name>.<random letters>.tmp`` in the target's folder (created if
    needed), so the final rename never crosses a file system.  The file gets the permissions a
    newly created file would get (mkstemp's are 0600), or keeps 0600 with ``private=True``.
    """

    def __init__(self, target: PathLike, private: bool = False) -> None:
        self.target, self.private = Path(target), private

    def __enter__(self) -> Path:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        except OSError as exc:
            raise_if_disk_full(exc, self.target)
            raise
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self.private:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise_if_disk_full(exc, self.target)


def raise_if_disk_full(exc: OSError, target: PathLike) -> None:
    """Turn a no-space (or over-quota) error while writing ``target`` into a one-line :class:`DiskFullError`."""
    if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and exc.errno in _NO_SPACE:
        error = DiskFullError(f"disk full while writing {target} ({exc.strerror or exc}); the partial file was "
                              "removed")
        error.errno, error.filename = exc.errno, str(target)
        raise error from exc


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: PathLike, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as indented JSON plus a final newline to ``path`` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


def ensure_inside(path: PathLike, root: PathLike, what: str = "") -> Path:
    """``path`` with every symlink and ``..`` resolved, if that lies inside ``root`` (resolved too).

    Raises :class:`~video3d_zoo.errors.ConfigError` otherwise, naming both, so that a name taken
    from outside (a revision such as ``../../x``, a file name, a symlink planted in the folder)
    never makes the package write, replace or delete a file of someone else's.  Parts of
    ``path`` that do not exist yet are resolved as written.
    """
    real_root = os.path.realpath(os.fspath(root))
    real = os.path.realpath(os.fspath(path))
    if os.path.commonpath([real_root, real]) != real_root:
        label = f"{what}: " if what else ""
        raise ConfigError(f"{label}{os.fspath(path)} resolves to {real}, outside {real_root}; refused (nothing is "
                          "written or removed outside that folder)")
    return Path(real)
