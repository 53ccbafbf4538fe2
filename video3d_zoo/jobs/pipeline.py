"""The one path from videos to clip features, shared by every job that runs a model on videos.

``video3d-zoo extract`` (:func:`~video3d_zoo.jobs.extract.run_extraction`, many videos) and
:func:`~video3d_zoo.jobs.features.extract_features` (the Python call, one video or a list) both call
:func:`run_clips`: the same decoding stream, the same batching (clips of several videos share a
batch), the same model call per layer (:func:`clip_outputs`) and the same check of the outputs.
They differ only in what happens to a finished video (a ``sink``): the job writes a file and
reports failures in its summary; the call keeps the arrays and raises on the first failure
(``fail_fast``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, NonFiniteError, Video3DZooError
from ..models.config import InputSpec, input_preset
from ..wording import count

SPECIAL_LAYERS = ("pooled", "logits")


# -- the model side ----------------------------------------------------------------------------------
def stage_names(model: nn.Module) -> List[str]:
    return [info.module for info in getattr(model, "feature_info", [])]


def check_layer(model: nn.Module, layer: str) -> str:
    valid = list(SPECIAL_LAYERS) + stage_names(model)
    if layer not in valid:
        raise ConfigError(f"layer must be one of {', '.join(valid)}; got {layer!r}")
    return layer


def clip_outputs(model: nn.Module, batch: torch.Tensor, layer: str = "pooled") -> torch.Tensor:
    """Per-clip vectors of ``batch`` (N x C x T x H x W): pooled features, logits or a pooled stage.

    A stage comes from ``model.forward_intermediates(..., stop_early=True)`` - the mechanism a
    ``features_only`` backbone uses - so the stages after it are not run.
    """
    with torch.inference_mode():
        if layer == "logits":
            return model(batch).float()
        if layer == "pooled":
            return model.forward_head(model.forward_features(batch), pre_logits=True).float()
        check_layer(model, layer)
        if not hasattr(model, "forward_intermediates"):
            raise ConfigError(f"layer={layer!r} needs a model with forward_intermediates(); "
                              f"{type(model).__name__} has none")
        infos = list(getattr(model, "feature_info", []))
        position = [info.module for info in infos].index(layer)
        index = getattr(infos[position], "index", position)
        (stage,) = model.forward_intermediates(batch, indices=[index], stop_early=True, intermediates_only=True)
        return stage.float().mean(dim=(2, 3, 4))


def model_input_spec(model: nn.Module, spec: Optional[InputSpec] = None) -> InputSpec:
    if spec is not None:
        return input_preset(spec) if isinstance(spec, str) else spec
    config = getattr(model, "config", None)
    return config.input_spec if config is not None else input_preset("kenshohara2020")


def model_id(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if config is None:
        return getattr(model, "network_name", type(model).__name__)
    return f"{config.architecture}.{config.tag}" if config.tag else config.architecture


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: an InferenceModel says so, a module is where its parameters are."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def place_model(model: nn.Module, device) -> torch.device:
    """Move ``model`` to ``device`` (in place, as ``Module.to``; an InferenceModel refuses another
    device than its own); return where it now runs."""
    if device is None:
        return model_device(model)
    device = torch.device(device)
    model.to(device)
    return device


@contextlib.contextmanager
def eval_mode(model):
    """Run ``model`` in eval mode, then give every submodule back its own training flag."""
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_finite(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` unchanged, or :class:`NonFiniteError` naming how many entries and clips are bad."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) if values.ndim > 1 else []
        raise NonFiniteError(f"{what}: {int(bad.sum())} NaN/inf value(s) in {len(rows)} of {len(values)} "
                             f"clip(s) (first: clip {int(rows[0]) if len(rows) else 0}); nothing written")
    return values


# -- decoding (optionally in DataLoader workers or a background thread) ------------------------------
class _ClipStream(torch.utils.data.IterableDataset):
    """Yields ("clip", index, tensor, start, end), then ("done", index, report) or ("error", index, reason).

    ``fail_fast``: a video that cannot be decoded raises here instead (its own exception)."""

    def __init__(self, sources: Sequence, spec: InputSpec, protocol, decode_threads: Optional[int] = None,
                 fail_fast: bool = False) -> None:
        super().__init__()
        self.sources, self.spec, self.protocol = list(sources), spec, protocol
        self.decode_threads, self.fail_fast = decode_threads, fail_fast

    def __iter__(self):
        from ..io import iter_video_clips

        info = torch.utils.data.get_worker_info()
        mine = range(len(self.sources)) if info is None else range(info.id, len(self.sources), info.num_workers)
        for index in mine:
            try:
                stream = iter_video_clips(self.sources[index], self.spec, protocol=self.protocol,
                                          decode_threads=self.decode_threads)
                for clip in stream:
                    yield ("clip", index, clip.tensor, clip.start_s, clip.end_s)
            except (Video3DZooError, OSError, RuntimeError, ValueError) as exc:
                if self.fail_fast:
                    raise
                yield ("error", index, str(exc))
                continue
            yield ("done", index, stream.report)


class _Timed:
    """The inline stream, timed: every second spent in it is the model waiting for decoding."""

    def __init__(self, iterator: Iterator[tuple]) -> None:
        self.iterator, self.waited_s = iterator, 0.0

    def __iter__(self):
        return self

    def __next__(self) -> tuple:
        started = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.waited_s += time.perf_counter() - started

    def close(self) -> None:
        pass


def _open_stream(clips: _ClipStream, workers: int, overlap: bool, batch_size: int):
    """Decoded clips: in worker processes (``workers > 0``), a background thread taking turns with the
    model (``overlap``) or inline.  Returns ``(stream, how, CoreShare or None)``."""
    if workers > 0:
        loader = torch.utils.data.DataLoader(clips, batch_size=None, num_workers=workers, prefetch_factor=4)
        return _Timed(iter(loader)), count(workers, "worker process"), None
    if overlap:
        from ..io.prefetch import CoreShare, Prefetcher, decoding_cores

        threads = torch.get_num_threads()
        clips.decode_threads = decoding_cores(threads)
        depth = queue_depth(clips.spec, batch_size)
        stream = Prefetcher(iter(clips), depth=depth)
        share = CoreShare(stream, min(2 * batch_size, depth - 1), threads, clips.decode_threads) \
            if threads > 1 else None
        return stream, "background thread", share
    return _Timed(iter(clips)), "inline", None


def queue_depth(spec: InputSpec, batch_size: int, budget: int = 512 << 20) -> int:
    """Clips decoded ahead: what fits in ``budget`` bytes, at least two batches and one, at most 64 or 3 batches."""
    clip_bytes = 3 * spec.frames * spec.crop_size ** 2 * 4  # float32, centre-cropped
    return max(2 * batch_size + 1, min(max(64, 3 * batch_size), budget // clip_bytes))


# -- batching across videos ----------------------------------------------------------------------------
class BatchStaging:
    """Stacks a batch of clips for the model's device.

    For a GPU the batch is stacked into a reused page-locked (pinned) buffer and copied with
    ``non_blocking=True``: the copy needs no bounce through pageable memory, and the CPU goes on
    (taking the next decoded clips from the workers) while it runs.  On the CPU the clips are simply
    stacked.  ``allocate`` makes the buffer (a test gives a plain allocator: pinning needs CUDA).
    """

    def __init__(self, device: torch.device, pinned: Optional[bool] = None, allocate=None) -> None:
        self.device = torch.device(device)
        self.pinned = self.device.type == "cuda" if pinned is None else pinned
        self.allocate = allocate or (lambda shape, dtype: torch.empty(shape, dtype=dtype, pin_memory=True))
        self.buffer: Optional[torch.Tensor] = None

    def __call__(self, clips: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.pinned:
            return torch.stack(list(clips)).to(self.device)
        shape = (len(clips), *clips[0].shape)
        buffer = self.buffer
        if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0] \
                or buffer.dtype != clips[0].dtype:
            # The previous batch's copy has finished: its outputs were read back before this call.
            buffer = self.buffer = self.allocate(shape, clips[0].dtype)
        staged = buffer[:shape[0]]
        torch.stack(list(clips), out=staged)
        return staged.to(self.device, non_blocking=True)


class _Batcher:
    """Clips of several videos in one batch; a video is finished after the batch with its last clip."""

    def __init__(self, model, layer: str, batch_size: int, sink, sources: Sequence, fail_fast: bool) -> None:
        self.model, self.layer, self.batch_size, self.sink = model, layer, batch_size, sink
        self.sources, self.fail_fast = sources, fail_fast
        self.device = model_device(model)
        self.stage = BatchStaging(self.device)
        self.pending: list = []
        self.parts: Dict[int, list] = {}  # per video: (1 x D vector, (start, end)) of each clip run so far
        self.waiting: List[Tuple[int, Any]] = []  # decoded videos whose last clips are still pending
        self.model_s, self.clips, self.warm_s = 0.0, 0, 0.0
        # per video, which paths its batches ran (a compiled model's first batches may run eager)
        self.ran: Dict[int, set] = {}
        self.before_batch = lambda: None

    def clip(self, item: tuple) -> None:
        if not self.clips and not self.pending:
            self._warm_up(tuple(item[2].shape))
        self.pending.append(item)
        if len(self.pending) == self.batch_size:
            self.flush()

    def _warm_up(self, clip_shape: tuple) -> None:
        # A compiled model loads its library here, while the decoder works on the first batch; one not
        # built yet is built by another process while the first batches run eagerly.
        entry = {"pooled": "forward_features", "logits": "forward"}.get(self.layer)
        warm_up = getattr(self.model, "warm_up", None)
        if entry is not None and warm_up is not None:
            started = time.perf_counter()
            if warm_up(entry, clip_shape, background=True):
                self.warm_s = time.perf_counter() - started

    def done(self, index: int, report) -> None:
        self.waiting.append((index, report))
        if not any(p[1] == index for p in self.pending):
            self._finish(*self.waiting.pop())

    def error(self, index: int, reason: str) -> None:
        self.pending[:] = [p for p in self.pending if p[1] != index]
        self.parts.pop(index, None)
        self.sink.error(index, reason)

    def flush(self) -> None:
        if self.pending:
            self.before_batch()
            started = time.perf_counter()
            batch = self.stage([p[2] for p in self.pending])
            before = self._batches_run()
            vectors = clip_outputs(self.model, batch, self.layer).cpu().numpy()
            self.model_s += time.perf_counter() - started
            if before is not None:
                path = "compiled" if self._batches_run()["compiled"] > before["compiled"] else "eager"
                for p in self.pending:
                    self.ran.setdefault(p[1], set()).add(path)
            self.clips += len(self.pending)
            for (_, index, _, start, end), row in zip(self.pending, vectors):
                self.parts.setdefault(index, []).append((row, (start, end)))
            self.pending.clear()
        while self.waiting:
            self._finish(*self.waiting.pop(0))

    def _batches_run(self) -> Optional[Dict[str, int]]:
        compiling = getattr(getattr(self.model, "options", None), "compile", False)
        return self.model.batches_run() if compiling and hasattr(self.model, "batches_run") else None

    def _finish(self, index: int, report) -> None:
        parts = self.parts.pop(index, [])
        ran = self.ran.pop(index, None)
        if ran and hasattr(self.sink, "ran"):  # provenance: eager, compiled, or both (a switch mid-video)
            self.sink.ran(index, sorted(ran))
        features = np.stack([p[0] for p in parts]).astype(np.float32) if parts else np.zeros((0, 0), np.float32)
        spans = np.asarray([p[1] for p in parts], dtype=np.float64).reshape(-1, 2)
        try:
            check_finite(features, f"{self.layer} outputs")
        except NonFiniteError as exc:
            if self.fail_fast:
                raise NonFiniteError(f"{self.sources[index]}: {exc}") from None
            return self.sink.error(index, str(exc))
        self.sink.done(index, features, spans, report)


def run_clips(model, sources: Sequence, spec: InputSpec, protocol, layer: str, batch_size: int, sink, *,
              workers: int = 0, overlap: bool = False, fail_fast: bool = False) -> Dict[str, Any]:
    """Run ``model`` on the clips of every source (``spec``: the preprocessing really applied).

    Each video ends in ``sink.done(index, features, timestamps, decode_report)`` (num_clips x D
    float32, num_clips x 2 seconds) or ``sink.error(index, reason)``; with ``fail_fast`` the
    failure is raised instead.  The model runs in eval mode and gets its training flags back.
    Returns where the time went (seconds and counts).
    """
    batcher = _Batcher(model, layer, batch_size, sink, sources, fail_fast)
    started = time.perf_counter()
    clips = _ClipStream(sources, spec, protocol, fail_fast=fail_fast)
    stream, mode, share = _open_stream(clips, workers, overlap, batch_size)
    if share is not None:
        batcher.before_batch = share.before_batch
    try:
        with eval_mode(model):
            for item in stream:
                if item[0] == "clip":
                    batcher.clip(item)
                elif item[0] == "done":
                    batcher.done(item[1], item[2])
                else:
                    batcher.error(item[1], item[2])
            batcher.flush()
    finally:
        stream.close()
        if share is not None:
            share.restore()
    timing = {"wall_s": time.perf_counter() - started, "model_s": batcher.model_s, "clips": batcher.clips,
              "waited_s": stream.waited_s, "decoding": mode, "decode_s": getattr(stream, "busy_s", stream.waited_s),
              "compile_s": batcher.warm_s}
    if share is not None:
        timing.update(batches=share.batches, shared_batches=share.shared_batches)
    if getattr(getattr(model, "options", None), "compile", False) and hasattr(model, "batches_run"):
        ran = model.batches_run()
        timing.update(eager_batches=ran["eager"], compiled_batches=ran["compiled"])
        timing["builds_running"] = len(model.builds_running())
    return timing
