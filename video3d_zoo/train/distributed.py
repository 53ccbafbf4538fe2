"""Distributed training under ``torchrun``: process-group setup from the environment and helpers.

``torchrun --nproc_per_node N -m video3d_zoo.train CONFIG`` (or ``--nnodes``/``--rdzv-*`` for
several machines) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them (``env://``) and picks the backend:
NCCL when the process drives a CUDA device, gloo on CPU.  Without those variables it is a
plain single process.

The data order is sharded by :class:`~video3d_zoo.train.data.ShardedBatchSampler` (every
global batch is split evenly over the processes), so N processes with a global batch B take
the same optimizer steps as one process with batch B, up to BatchNorm batch statistics being
per process (use ``model.sync_bn = true`` for SyncBatchNorm) and floating-point summation order.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from ..errors import TrainConfigError

            raise TrainConfigError("train.device = \"cuda\" but torch sees no CUDA device; use auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: str = "auto", backend: Optional[str] = None,
                     timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment (no-op for one process)."""
    world = env_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world <= 1:
        return DistInfo(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                    device=dev, backend=backend)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (in place, returned); no-op for one process."""
    if info.distributed:
        if info.backend == "nccl":
            moved = tensor.to(info.device)
            dist.all_reduce(moved)
            tensor.copy_(moved.cpu() if tensor.device.type == "cpu" else moved)
        else:
            dist.all_reduce(tensor)
    return tensor


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """Every process's ``obj`` (a list with one entry per rank)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_model(model: torch.nn.Module, info: DistInfo, sync_bn: bool = False) -> torch.nn.Module:
    """``DistributedDataParallel`` (with optional SyncBatchNorm) when running distributed."""
    if not info.distributed:
        return model
    if sync_bn:
        if info.device.type != "cuda":
            from ..errors import TrainConfigError

            raise TrainConfigError("model.sync_bn = true needs CUDA devices (torch's SyncBatchNorm is GPU-only); "
                                   "on CPU every process keeps its own BatchNorm batch statistics")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    # Frozen parameters (requires_grad=False) are ignored by DDP; buffers (BatchNorm running
    # statistics) are broadcast from rank 0 at every forward, so all processes hold rank 0's.
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(
        model, torch.nn.parallel.DistributedDataParallel) else model
