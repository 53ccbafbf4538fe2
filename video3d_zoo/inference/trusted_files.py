"""Files the package runs as machine code only when no one else could have written them.

A compiled library is loaded with ``dlopen``, so its constructors run before any check of what it
computes.  As ssh treats its keys, a library (and the record naming it) is trusted only when it is
a regular file (not a symbolic link) owned by the current user and writable by no one else, in a
folder owned by the current user that no one else can write to, below folders that only their
owner (the user or root) can change, or that are sticky like ``/tmp`` (others may add entries
there but not rename or remove ours).  Anything else raises :class:`UntrustedFile`, which the
compiled cache turns into one warning and the eager model.

The bytes hashed are the bytes loaded: a file is opened once (``O_NOFOLLOW``), checked and hashed
through that descriptor, and loaded through ``/proc/self/fd/N`` (elsewhere: through a copy in a
private folder this process creates), so swapping the file between the check and ``dlopen``
changes nothing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import List

from ..errors import Video3DZooError

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
# Descriptors of loaded libraries stay open for the life of the process: the dynamic loader knows a
# library by the name it was opened with, and a later library behind a reused "/proc/self/fd/N" would
# be taken for the earlier one (ctypes never unloads a library, so its name stays registered).
_LOADED: List[int] = []


class UntrustedFile(Video3DZooError):
    """A compiled library, its record or its folder could have been written by someone else: not loaded."""


def _problem(st: os.stat_result, owners) -> str:
    if st.st_uid not in owners:
        return f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    if st.st_mode & _OTHERS_WRITE:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def private_folder(folder) -> Path:
    """``folder`` (created with mode 0700 where missing) as a real path, after checking that no one else can
    change it or its parents.  Raises :class:`UntrustedFile` saying what to fix."""
    real = Path(os.path.realpath(os.path.abspath(folder)))
    missing = [p for p in [real, *real.parents] if not os.path.lexists(p)]
    for path in reversed(missing):  # every folder we create is ours alone, whatever the umask
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    me = os.geteuid()
    st = os.lstat(real)
    problem = "not a folder" if not stat.S_ISDIR(st.st_mode) else _problem(st, (me,))
    if problem:
        raise UntrustedFile(f"compiled-library folder {real}: {problem}; compiled libraries are loaded only from a "
                            f"folder no one else can write to (fix: chmod go-w {real}, or set VIDEO3D_ZOO_HOME)")
    for parent in real.parents:
        st = os.lstat(parent)
        problem = _problem(st, (me, 0))
        if problem and not (st.st_uid in (me, 0) and st.st_mode & stat.S_ISVTX):
            raise UntrustedFile(f"compiled-library folder {real}: its parent {parent} is {problem}; someone else "
                                "could replace the folder (fix its permissions, or set VIDEO3D_ZOO_HOME)")
    return real


def open_trusted(path: Path) -> int:
    """A read-only descriptor of ``path`` after checking, on that descriptor, that it is a regular file owned by
    the current user and writable by no one else.  Raises :class:`UntrustedFile`; the caller closes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UntrustedFile(f"{path}: a symbolic link, not loaded (a compiled library and its record must be "
                            "regular files in the cache; delete it to rebuild)") from None
    st = os.fstat(fd)
    problem = "not a regular file" if not stat.S_ISREG(st.st_mode) else _problem(st, (os.geteuid(),))
    if problem:
        os.close(fd)
        raise UntrustedFile(f"{path}: {problem}; not loaded, as someone else could have written it "
                            "(delete it to rebuild)")
    return fd


def read_all(fd: int) -> bytes:
    """Everything in the file behind ``fd``, from its start."""
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        return fh.read()


def sha256_fd(fd: int) -> str:
    """sha256 of the file behind ``fd``, read from its start."""
    digest = hashlib.sha256()
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def loadable_path(fd: int, name: str) -> str:
    """A path ``dlopen`` reads the very file of ``fd`` through; ``fd`` stays open for the process's life."""
    _LOADED.append(fd)
    proc = f"/proc/self/fd/{fd}"
    if os.path.exists(proc):
        return proc
    private = tempfile.mkdtemp(prefix="video3d_zoo_lib_")  # mode 0700, created by this process
    copy = os.path.join(private, name)
    with os.fdopen(os.dup(fd), "rb") as src, open(copy, "wb") as dst:
        src.seek(0)
        shutil.copyfileobj(src, dst, 1 << 22)
    return copy
