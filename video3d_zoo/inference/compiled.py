"""Compiled CPU inference that persists across runs: AOTInductor libraries in a local cache.

Why not plain ``torch.compile`` in every process: what makes compiled CPU inference fast is
freezing (conv + BN + ReLU become prepacked oneDNN calls), and frozen graphs bypass inductor's
FX graph cache ("mkldnn tensors unpickleable"), so every process compiles again - 5.7 s for a
resnet3d_50 on 2 cores with warm caches, more than the compiled model saves on a dozen videos.
Here the model is exported once per (weights, entry point, batch shape, precision, machine) and
AOTInductor compiles it, with freezing, into a shared library holding the weights; later
processes load that library in about 0.05 s.

* Key: sha256 of everything the library depends on - the prepared weights' bytes, the model
  class, config and module tree, the entry point (``forward`` or ``forward_features``), the input shape and
  dtype, the torch and Python versions, the machine, its CPU flags and the thread count.
  Different weights can never reuse a library built for others.
* Files: ``<home>/compiled/<key>.<sha256 prefix>.so`` and ``<key>.json`` (the library's name,
  sha256 and what it was built from), where ``<home>`` is ``$VIDEO3D_ZOO_HOME`` or the
  huggingface assets cache (as for installed weights, :mod:`video3d_zoo.weights.installed`).  Both are
  written atomically under a lock, so concurrent runs build it once; a library whose bytes no
  longer match its record is rebuilt.  Only files no one else could have written are loaded
  (:mod:`video3d_zoo.inference.trusted_files`: regular files of the user's, mode 0600, in a
  folder only the user can write to), hashed and loaded through one descriptor; any other file
  or folder gives one warning and the eager model.  Each library of a resnet3d_50 takes about 95 MB (it holds
  the weights); libraries unused for 30 days are removed when a new one is built
  (:func:`remove_unused`), and the folder can be deleted at any time.
* A library is checked against the eager model on the export example when it is built, and on
  its first clip each time a process loads it (the trial call of the GIL-free call path; it
  costs one eager clip).
* Libraries are called with the GIL released (:mod:`video3d_zoo.inference.compiled_call`), so a decoding
  thread keeps working while the compiled model runs.
* Batch shapes are static: smaller batches are padded (outputs sliced off), larger ones split,
  so one library serves a whole run, including its last, partial batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Callable, List, Optional

import torch
from torch import nn

from ..errors import Video3DZooError
from . import trusted_files
from .trusted_files import UntrustedFile

FORMAT = 4  # 2: bf16 stems on space-to-depth blocks; 3: always frozen (see _build); 4: the module tree keyed
UNUSED_DAYS = 30
_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 0.05, torch.float16: 0.05}


class CompileError(Video3DZooError):
    """Building or loading a compiled library failed (the caller falls back to eager execution)."""


def compiled_home() -> Path:
    """``$VIDEO3D_ZOO_HOME/compiled`` or ``<huggingface assets cache>/video3d_zoo/compiled`` (read now)."""
    from ..weights.installed import weights_home

    return weights_home().parent / "compiled"


def available() -> bool:
    """Whether this torch can build and load AOTInductor libraries for the CPU.

    Checked without importing ``torch._inductor`` (1.3 s of imports a cached library never needs).
    """
    import importlib.util

    runner = hasattr(getattr(torch._C, "_aoti", None), "AOTIModelContainerRunnerCpu")
    return runner and importlib.util.find_spec("torch._inductor") is not None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def artefact_key(model: nn.Module, entry: str, example: torch.Tensor, weights_digest: Optional[str] = None) -> str:
    """sha256 naming the library for ``model.<entry>`` on inputs like ``example`` (see the module docstring).

    ``weights_digest`` (a digest of ``model``'s float32 state, see
    :func:`video3d_zoo.jobs.provenance.weights_digest`) saves hashing the weights again; the example's
    dtype, part of the key, covers a cast copy.
    """
    config = getattr(model, "config", None)
    head = {"format": FORMAT, "torch": torch.__version__, "python": list(sys.version_info[:2]),
            "machine": platform.machine(), "cpu_flags": hashlib.sha256(_cpu_flags().encode()).hexdigest(),
            "threads": torch.get_num_threads(),  # inductor sizes its parallel loops when it compiles
            "class": f"{type(model).__module__}.{type(model).__qualname__}", "entry": entry,
            # the prepared module tree: a rewrite that keeps the weights (a stem on space-to-depth blocks,
            # time folded or not) changes the graph the library holds, not the weights digest
            "modules": hashlib.sha256(repr(model).encode()).hexdigest(),
            "config": config.to_json() if hasattr(config, "to_json") else None,
            "input": [list(example.shape), str(example.dtype), list(example.stride())]}
    if weights_digest is None:
        from ..jobs.provenance import weights_digest as digest_of

        weights_digest = digest_of(model)
    return hashlib.sha256((json.dumps(head, sort_keys=True) + weights_digest).encode()).hexdigest()


class _Entry(nn.Module):
    """One entry point of a model as a module's forward (what torch.export takes)."""

    def __init__(self, model: nn.Module, entry: str) -> None:
        super().__init__()
        self.model, self.entry = model, entry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.entry)(x)


def _build(model: nn.Module, entry: str, example: torch.Tensor, so_path: Path) -> None:
    """Export ``model.<entry>``, compile it with freezing into ``so_path`` (atomic)."""
    from torch._inductor import aoti_compile_and_package

    from ..fileio import atomic_path

    wrapper = _Entry(model, entry).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecation notes, not the user's
        exported = torch.export.export(wrapper, (example,))
    # no_grad around the compilation too: inductor freezes (pre-packs oneDNN weights, fuses conv + ReLU)
    # only when gradients are off as it compiles, and says nothing otherwise - a library built with them
    # on ran a resnet3d_50 3.6x slower than one built without (75 vs 21 ms per clip, bf16, batch 8).
    with tempfile.TemporaryDirectory(prefix="video3d_zoo_aoti_") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        package = aoti_compile_and_package(exported, package_path=os.path.join(tmp, "model.pt2"),
                                           inductor_configs={"freezing": True})
        with zipfile.ZipFile(package) as archive:
            libraries = [n for n in archive.namelist() if n.endswith(".so")]
            if len(libraries) != 1:
                raise CompileError(f"expected one shared library in the AOTInductor package, found {libraries}")
            # private: mode 0600 whatever the umask, as the trust check on loading asks
            with atomic_path(so_path, private=True) as target, archive.open(libraries[0]) as src, \
                    open(target, "wb") as dst:
                while block := src.read(1 << 22):
                    dst.write(block)


def _eager_output(model: nn.Module, entry: str, example: torch.Tensor) -> torch.Tensor:
    """What the library must reproduce; only single-tensor outputs are compiled (a features-only
    backbone's list of stages stays eager rather than losing all but its first stage)."""
    with torch.no_grad():
        expected = getattr(model, entry)(example)
    if not isinstance(expected, torch.Tensor):
        raise CompileError(f"{type(model).__name__}.{entry} returns {type(expected).__name__}, not one tensor; "
                           "only single-tensor entry points are compiled")
    return expected.float()


def _check(runner, expected: torch.Tensor, example: torch.Tensor) -> None:
    """``runner`` on ``example`` must give ``expected`` (the eager outputs of its first clips) within tolerance."""
    outputs = runner.run([example])
    if len(outputs) != 1:
        raise CompileError(f"the compiled library returns {len(outputs)} outputs where the model returns one")
    got = outputs[0].float()[:len(expected)]
    scale = float(expected.abs().max()) or 1.0
    error = float((got - expected).abs().max()) / scale
    if got.shape != expected.shape or not error <= _TOLERANCE[example.dtype]:
        raise CompileError(f"the compiled library disagrees with the eager model (max error {error:.2%} of the "
                           f"largest output, shape {tuple(got.shape)} vs {tuple(expected.shape)}); not used")


def _load(library: Path, fd: int, check: Callable) -> object:
    """A runner of the library behind ``fd`` (checked and hashed through it) that passed ``check``."""
    from .compiled_call import load_runner

    try:
        return load_runner(trusted_files.loadable_path(fd, library.name), trial=check, name=library.name)
    except Exception as exc:  # a truncated or foreign library, or one that disagrees with the eager model
        raise CompileError(f"{library}: cannot use the compiled library ({exc})") from exc


def _cached_library(home: Path, key: str):
    """``(path, fd)`` of the library ``<key>.json`` names, opened and hashed through ``fd``, if it holds the
    recorded sha256; ``None`` when there is none or it must be rebuilt.  Raises :class:`UntrustedFile`."""
    record_path, fd = home / f"{key}.json", None
    if not os.path.lexists(record_path):
        return None
    fd = trusted_files.open_trusted(record_path)
    try:
        record = json.loads(trusted_files.read_all(fd).decode("utf-8"))
        path = home / Path(record["file"]).name
    except (ValueError, KeyError, TypeError, AttributeError):  # a damaged record: rebuild
        return None
    finally:
        os.close(fd)
    if not os.path.lexists(path):
        return None
    fd = trusted_files.open_trusted(path)
    if record.get("sha256") != trusted_files.sha256_fd(fd):
        os.close(fd)
        return None
    return path, fd


def load_or_build(model: nn.Module, entry: str, example: torch.Tensor, home: Optional[Path] = None,
                  weights_digest: Optional[str] = None):
    """A loaded AOTInductor runner of ``model.<entry>`` for inputs shaped like ``example``.

    A float32 ``model`` is cast to the example's dtype for building and the trial call only.

    Returns ``(runner, built_seconds)`` (``0.0`` when the library came from the cache).  Raises
    :class:`CompileError` when this torch cannot build one, the build fails or disagrees with
    the eager model, or the cache holds files someone else could have written.
    """
    if not available():
        raise CompileError(f"torch {torch.__version__} has no AOTInductor CPU runner")
    from filelock import FileLock

    try:
        home = trusted_files.private_folder(home if home is not None else compiled_home())
        key = artefact_key(model, entry, example, weights_digest)
        with FileLock(str(home / f"{key}.lock")):
            cast = _cast(model, example)
            cached = _cached_library(home, key)
            if cached is not None:
                return _trial_load(cast, entry, example, home, key, cached), 0.0
            started = time.perf_counter()
            runner = _build_checked(cast, entry, example, home, key)
            return runner, time.perf_counter() - started
    except UntrustedFile as exc:
        raise CompileError(str(exc)) from exc
    except OSError as exc:  # an unreadable cache, a full disk: run eager rather than fail the job
        raise CompileError(f"compiled-library cache: {exc}") from exc


def _cast(model: nn.Module, example: torch.Tensor) -> nn.Module:
    return model if example.dtype == torch.float32 else copy.deepcopy(model).to(example.dtype)


def _trial_load(cast: nn.Module, entry: str, example: torch.Tensor, home: Path, key: str, cached) -> object:
    """The runner of a cached library after the trial call: one clip against eager (clips are independent
    in eval mode)."""
    expected = _eager_output(cast, entry, example[:1])
    runner = _load(*cached, lambda r: _check(r, expected, example))
    os.utime(home / f"{key}.json")  # last used: what remove_unused() goes by
    return runner


def load_cached(model: nn.Module, entry: str, example: torch.Tensor, home: Optional[Path] = None,
                weights_digest: Optional[str] = None):
    """The loaded runner of a library already in the cache, or ``None`` when there is none yet or a
    build of it is under way (its lock is held); never builds.  Raises :class:`CompileError` as
    :func:`load_or_build` does."""
    if not available():
        raise CompileError(f"torch {torch.__version__} has no AOTInductor CPU runner")
    from filelock import FileLock, Timeout

    try:
        home = trusted_files.private_folder(home if home is not None else compiled_home())
        key = artefact_key(model, entry, example, weights_digest)
        lock = FileLock(str(home / f"{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:  # another process is building it: not ready
            return None
        try:
            cached = _cached_library(home, key)
            return None if cached is None else _trial_load(_cast(model, example), entry, example, home, key, cached)
        finally:
            lock.release()
    except UntrustedFile as exc:
        raise CompileError(str(exc)) from exc
    except OSError as exc:
        raise CompileError(f"compiled-library cache: {exc}") from exc


def _build_checked(model: nn.Module, entry: str, example: torch.Tensor, home: Path, key: str):
    """Build, name by content, load and check against eager, then record; returns the loaded runner."""
    from ..fileio import atomic_path

    expected = _eager_output(model, entry, example)
    building = home / f"{key}.building.so"
    try:
        _build(model, entry, example, building)
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError(f"AOTInductor could not compile {type(model).__name__}.{entry} "
                           f"({type(exc).__name__}: {exc})") from exc
    fd = trusted_files.open_trusted(building)
    sha = trusted_files.sha256_fd(fd)
    # Named by content: a process that already loaded an older library of this key keeps its
    # mapping, and the dynamic loader never mistakes the new file for the old one by name.
    path = home / f"{key}.{sha[:16]}.so"
    os.replace(building, path)
    try:
        runner = _load(path, fd, lambda r: _check(r, expected, example))
    except CompileError:
        path.unlink(missing_ok=True)
        raise
    record = {"file": path.name, "sha256": sha, "entry": entry, "torch": torch.__version__,
              "model": type(model).__name__, "input": list(example.shape), "dtype": str(example.dtype),
              "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    with atomic_path(home / f"{key}.json", private=True) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for old in home.glob(f"{key}.*.so"):
        if old != path:
            old.unlink(missing_ok=True)  # a mapped library stays usable by its process after unlink
    remove_unused(home)
    return runner


def remove_unused(home: Optional[Path] = None, days: float = UNUSED_DAYS) -> List[Path]:
    """Delete the libraries not used for ``days`` days (each build calls this); returns what was removed.

    A library of a resnet3d_50 takes about 95 MB and every model, batch size and precision has its
    own, so the cache would otherwise only grow.  Use is the modification time of ``<key>.json``,
    touched on every load.
    """
    home = Path(home) if home is not None else compiled_home()
    cutoff = time.time() - days * 86400
    removed = []
    for request in home.glob("*.request.*.pt"):  # left by a background build killed a day or more ago
        try:
            if request.stat().st_mtime < time.time() - 86400:
                request.unlink()
                removed.append(request)
        except OSError:
            continue
    for record in home.glob("*.json"):
        try:
            if record.stat().st_mtime >= cutoff:
                continue
        except OSError:
            continue
        key = record.name[:-len(".json")]
        # The lock file stays: another process may hold it (it is empty and tiny).
        for path in [*home.glob(f"{key}.*.so"), home / f"{key}.build.log", record]:
            if path.exists():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class StaticBatchRunner:
    """Calls a fixed-batch compiled library with any batch size: pads small batches, splits large ones."""

    def __init__(self, runner, example: torch.Tensor) -> None:
        self.runner, self.batch = runner, example.shape[0]
        self.dtype, self.tail = example.dtype, tuple(example.shape[1:])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.tail:
            raise ValueError(f"the compiled model takes clips of shape {self.tail}, got {tuple(x.shape[1:])}")
        outputs: List[torch.Tensor] = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            count = chunk.shape[0]
            if count < self.batch:  # repeat the last clip: real values, no NaN risk, sliced off below
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - count, *self.tail)])
            chunk = chunk.to(self.dtype).contiguous(memory_format=torch.channels_last_3d)
            outputs.append(self.runner.run([chunk])[0][:count])
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


def compile_entry(model: nn.Module, entry: str, batch: int, clip_shape, dtype: torch.dtype,
                  weights_digest: Optional[str] = None) -> Callable:
    """``StaticBatchRunner`` of ``model.<entry>`` at ``batch`` clips of ``clip_shape`` (C, T, H, W) in ``dtype``.

    ``model`` is the prepared (folded, channels_last) float32 model; a copy is cast to ``dtype``.
    ``weights_digest`` is ``model``'s (see :func:`artefact_key`).
    """
    example = example_input(batch, clip_shape, dtype)
    runner, _ = load_or_build(model, entry, example, weights_digest=weights_digest)
    return StaticBatchRunner(runner, example)


def example_input(batch: int, clip_shape, dtype: torch.dtype) -> torch.Tensor:
    """The export example of a library: ``batch`` random clips of ``clip_shape``, channels-last, in ``dtype``."""
    example = torch.randn(batch, *clip_shape, generator=torch.Generator().manual_seed(0))
    return example.to(dtype).contiguous(memory_format=torch.channels_last_3d)
