"""Upper bounds on every number a user gives (command options, config fields, architecture sizes), in one place.

Each bound is derived from what can run, so a value past it is refused with one line before any
work instead of running without end or failing deep inside an allocation:

===========================  ===============================  =================================================
value                        range                            why
===========================  ===============================  =================================================
clip length, frames          1 .. 1024                        64 frames is the longest published clip; a 1024-
                                                              frame 112 px clip already takes 154 MB
crop, resize, image side     1 .. 4096                        a 4K frame
batch size                   1 .. 4096                        and the batch must fit in memory (below)
frame rate (``--fps``)       > 0 .. 240                       8x a 30 fps source: more only repeats frames
decoding workers             0 .. 4 x CPU cores               more processes than that only compete for cores
workers, threads in configs  0 .. 256                         a config travels between machines: 4 x 64 cores
clip stride                  1 .. 100000                      about an hour at 30 fps: one clip per video
clips per video              0 .. 1024                        ``eval --clips``: evenly spaced views of a video
``widen_factor``             > 0 .. 64                        weights grow with its square: 4096x at 64
channel counts               1 .. 65536                       any width argument (stage widths, stem, growth)
classes, top-k               1 .. 100000                      the largest label sets have about 22000 classes
seeds                        0 .. 2**32 - 1                   what numpy's generators take
===========================  ===============================  =================================================

A batch of clips must also fit in half of the memory available now (:func:`check_clip_memory`),
and a model built with non-default architecture arguments in half of it too (checked on the meta
device before any weight is allocated, :func:`video3d_zoo.api.create_model`).
"""

from __future__ import annotations

import os
from typing import Optional

from .errors import ConfigError

MAX_FRAMES = 1024
MAX_SIDE = 4096
MAX_BATCH = 4096
MAX_FPS = 240.0
WORKERS_PER_CORE = 4
MAX_CONFIG_WORKERS = 256
MAX_STRIDE = 100_000
MAX_CLIPS_PER_VIDEO = 1024
MAX_WIDEN_FACTOR = 64.0
MAX_CHANNELS = 65536
MAX_CLASSES = 100_000
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10_000  # the paper's longest schedules are 200 epochs; more is a typo, not a plan
#: share of the available memory one batch of clips, or one model's weights, may take
MEMORY_SHARE = 0.5


def max_workers() -> int:
    """The most decoding processes worth starting here: :data:`WORKERS_PER_CORE` per CPU core."""
    return WORKERS_PER_CORE * (os.cpu_count() or 1)


def available_memory() -> Optional[int]:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo, else free pages), or ``None``."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(what: str, nbytes: int, fix: str) -> None:
    """Raise :class:`ConfigError` when ``nbytes`` is over :data:`MEMORY_SHARE` of the available memory."""
    free = available_memory()
    if free is not None and nbytes > MEMORY_SHARE * free:
        raise ConfigError(f"{what} would take {nbytes / 2**30:.2f} GiB, more than half of the "
                          f"{free / 2**30:.2f} GiB of memory available; {fix}")


def check_clip_memory(batch: int, frames: int, height: int, width: Optional[int] = None, channels: int = 3) -> None:
    """Refuse a batch of float32 clips (``batch x channels x frames x height x width``) that would not fit."""
    width = height if width is None else width
    nbytes = batch * channels * frames * height * width * 4
    check_memory(f"a batch of {batch} clips of {frames}x{height}x{width}", nbytes,
                 "use a smaller batch size, clip length or crop")
