"""Building a compiled library in another process while a job runs the eager fast path.

The first ``--compile`` run of a model, batch shape and precision used to build its AOTInductor
library (about 12 s for a resnet3d_50 on 2 cores) before its first batch, which made that run about
2x slower than the eager fast path on a dozen videos.  Instead, a job's warm-up starts the build in a
child process and serves its batches eagerly; between batches it checks whether the child has
finished and, once it has, loads the library from the cache (with its usual trial call) and runs
the remaining batches compiled.

* The child builds through :func:`video3d_zoo.inference.compiled.load_or_build`: the same key, the
  same lock, the same trust rules and the same atomic writes as a build in the job's own process,
  so a library is either complete in the cache or absent.  It runs at the lowest priority
  (``os.nice(19)``) so that on a small machine it takes its cycles mostly when the eager path waits.
* The model reaches the child through a request file in the private cache folder
  (``<key>.request.<pid>.pt``, mode 0600, written atomically, opened with the trust checks of
  :mod:`~video3d_zoo.inference.trusted_files` before it is unpickled); the child removes it when it
  is done.  A request file therefore also says "a build is under way" (``benchmarks`` wait on it).
* A run that ends before the build is finished leaves the child running, detached (its own process
  group, the job's session, so that its priority counts against the job's under autogroup scheduling): the library it finishes is there for the next run.  Stopping it at any moment leaves no
  half-written library, only a request file that :func:`~video3d_zoo.inference.compiled.remove_unused`
  deletes a day later.
* Where no process can be started, or ``VIDEO3D_ZOO_COMPILE_IN_PROCESS=1`` asks for it, the job
  builds in its own process before its first batch, as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, List, Optional

import torch
from torch import nn

from . import compiled, trusted_files

#: how much the build process lowers its priority (0..19): the lowest, so that on a small machine it
#: takes the cycles the job leaves (waiting for clips, writing) and finishes at full speed after the job
NICE = 19


def _child_command(request: Path) -> List[str]:
    return [sys.executable, "-m", __name__, str(request)]


class BackgroundBuild:
    """A build running in a child process; :meth:`poll` says whether it finished and how."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def poll(self) -> Optional[bool]:
        """``None`` while it runs, then whether it succeeded."""
        code = self.process.poll()
        return None if code is None else code == 0

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.process.wait(timeout) == 0

    def error(self) -> str:
        """The child's last line of error output (what went wrong), or its exit status."""
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        return lines[-1].strip() if lines else f"the build process exited with status {self.process.returncode}"


def start(model: nn.Module, entry: str, example: torch.Tensor, weights_digest: str,
          home: Optional[Path] = None) -> Optional[BackgroundBuild]:
    """Start building ``model.<entry>`` for inputs like ``example`` in a child process; ``None`` when no
    process can be started (the caller builds in its own).  Raises :class:`~compiled.CompileError`
    when the cache folder cannot be used."""
    from ..fileio import atomic_path

    if os.environ.get("VIDEO3D_ZOO_COMPILE_IN_PROCESS") == "1":  # asked for the single-process build
        return None
    try:
        home = trusted_files.private_folder(home if home is not None else compiled.compiled_home())
        key = compiled.artefact_key(model, entry, example, weights_digest)
        request = home / f"{key}.request.{os.getpid()}.pt"
        payload = {"model": compiled._cast(model, example), "entry": entry, "example": example, "key": key,
                   "digest": weights_digest, "threads": torch.get_num_threads()}
        with atomic_path(request, private=True) as tmp:
            torch.save(payload, tmp)
        log = home / f"{key}.build.log"
        with open(log, "wb") as err:
            os.chmod(log, 0o600)
            process = _spawn(request, err)
    except trusted_files.UntrustedFile as exc:
        raise compiled.CompileError(str(exc)) from exc
    except OSError as exc:
        raise compiled.CompileError(f"compiled-library cache: {exc}") from exc
    if process is None:
        request.unlink(missing_ok=True)
        return None
    return BackgroundBuild(process, log)


def _spawn(request: Path, err) -> Optional[subprocess.Popen]:
    # The child imports this package from where this process did, whatever its working folder.
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        return subprocess.Popen(_child_command(request), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=env, close_fds=True)
    except (OSError, ValueError, RuntimeError):  # no fork/exec here (a sandbox, a process limit)
        return None


class SwitchWhenBuilt:
    """The eager entry point until the background build is done, then the compiled library."""

    def __init__(self, eager: Callable, build: BackgroundBuild, load: Callable[[], object]) -> None:
        self.eager, self.build, self.load = eager, build, load
        self.compiled: Optional[Callable] = None

    def current(self) -> Callable:
        """What the next batch runs: checked between batches, so a batch never changes path midway."""
        if self.compiled is None and self.build is not None and self.build.poll() is not None:
            build, self.build = self.build, None
            if not build.poll():
                _warn(build.error())
            else:
                try:
                    with torch.autocast("cpu", enabled=False):  # the trial call compares with plain eager
                        self.compiled = self.load()
                except compiled.CompileError as exc:
                    _warn(str(exc))
                if self.compiled is None:
                    _warn("the background build finished but its library is not in the cache")
        return self.compiled or self.eager


def _warn(reason: str) -> None:
    warnings.warn(f"compilation unavailable, running the eager fast path: {reason}", RuntimeWarning, stacklevel=4)


def main(argv: List[str]) -> int:
    """The child: build the library a request file describes, at a lower priority."""
    try:
        # Its own process group, so that Ctrl-C on the job does not stop it, but the job's session: with
        # autogroup scheduling (Linux) a new session would get its own fair share whatever its nice value.
        os.setpgrp()
        os.nice(NICE)
    except (OSError, AttributeError):
        pass
    request = Path(argv[0])
    try:
        fd = trusted_files.open_trusted(request)  # unpickled only when no one else could have written it
        with os.fdopen(fd, "rb") as fh:
            payload = torch.load(fh, weights_only=False)
        torch.set_num_threads(payload["threads"])  # part of the key: the library is sized for the job's threads
        model, entry, example = payload["model"].eval(), payload["entry"], payload["example"]
        if compiled.artefact_key(model, entry, example, payload["digest"]) != payload["key"]:
            raise compiled.CompileError("the build process computes another key than the job; not built")
        compiled.load_or_build(model, entry, example, home=request.parent, weights_digest=payload["digest"])
    except (compiled.CompileError, trusted_files.UntrustedFile, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        request.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
