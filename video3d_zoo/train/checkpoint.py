"""Training checkpoints: atomic writes, exact resume.

A checkpoint (``RUN/checkpoints/last.pt``, ``best.pt``) is one ``torch.save`` dict holding the
model (unwrapped, no ``module.`` prefix), optimizer, learning-rate schedule and gradient
scaler states, every process's RNG states (Python, NumPy, torch CPU and CUDA), the position
in the data order (epoch and optimizer step inside it), the running epoch statistics, the
metric history and the best metric so far.  It is written to a temporary file in the same
folder and renamed into place, so a run killed at any moment leaves either the previous or
the new checkpoint, never a half-written one.  Loading uses ``torch.load(weights_only=True)``:
only tensors and plain containers, nothing that runs code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError
from ..fileio import atomic_path

CHECKPOINT_VERSION = 1
LAST, BEST = "last.pt", "best.pt"


def rng_state() -> Dict[str, Any]:
    """This process's RNG states, as plain (``weights_only``-loadable) objects."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> Path:
    """``torch.save`` ``state`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    state = dict(state, version=CHECKPOINT_VERSION)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            try:
                import os

                os.fsync(fh.fileno())
            except OSError:  # pragma: no cover - e.g. some network file systems
                pass
    return path


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint` (tensors and containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable file
        raise CheckpointError(f"{path}: not a readable training checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a video3d_zoo training checkpoint (version "
                              f"{state.get('version') if isinstance(state, dict) else None})")
    return state


class CheckpointDir:
    """``RUN/checkpoints`` with ``last.pt`` (every save) and ``best.pt`` (best metric so far)."""

    def __init__(self, run_dir: Union[str, Path]) -> None:
        self.dir = Path(run_dir) / "checkpoints"

    @property
    def last(self) -> Path:
        return self.dir / LAST

    @property
    def best(self) -> Path:
        return self.dir / BEST

    def exists(self) -> bool:
        return self.last.is_file()

    def save(self, state: Dict[str, Any], best: bool = False) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.last, state)
        if best:
            save_checkpoint(self.best, state)

    def load_last(self) -> Dict[str, Any]:
        return load_checkpoint(self.last)

    def load_best_weights(self) -> Optional[Dict[str, torch.Tensor]]:
        return load_checkpoint(self.best)["model"] if self.best.is_file() else None


def gather_rng(info) -> List[Dict[str, Any]]:
    """Every process's RNG state (rank order), for a checkpoint written by rank 0."""
    from .distributed import all_gather_objects

    return all_gather_objects(rng_state(), info)


def check_resumable(state: Dict[str, Any], config, path: Union[str, Path],
                    accept_changes: bool = False) -> List[Tuple[str, Any, Any]]:
    """Check a checkpoint ``--resume`` would continue from: finite weights (else
    :class:`~video3d_zoo.errors.TrainingDivergedError`) and the same config as ``config`` up to the
    keys in :data:`~video3d_zoo.train.config_schema.RESUME_SAFE` (else :class:`TrainConfigError` listing
    every difference, unless ``accept_changes``).  Returns the differences."""
    from ..errors import TrainConfigError
    from .config_changes import config_changes, describe_changes
    from .guard import require_finite_state

    require_finite_state(state["model"], f"--resume from {path}")
    changes = config_changes(state.get("config"), config)
    if changes and not accept_changes:
        raise TrainConfigError(
            f"--resume: the config differs from the one {path} was trained with: {describe_changes(changes)}; "
            "a resumed run would no longer equal an uninterrupted one. Pass --accept-config-changes "
            "(train(..., accept_config_changes=True)) to continue with the new values, or undo the changes")
    return changes
