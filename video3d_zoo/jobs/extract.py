"""The ``video3d-zoo extract`` job: features for many videos, one ``.npz`` each.

* Inputs are video files, folders (searched recursively by extension) and text files listing
  paths (one per line; relative paths are relative to the list).  Output names mirror the
  inputs and keep the video's extension (``a/clip.mp4`` -> ``OUT/a/clip.mp4.npz``); see
  :mod:`video3d_zoo.jobs.extract_plan`.  The list is sorted, so every process agrees on it;
  ``shard=(i, n)`` keeps every n-th video from the i-th.  Under ``torchrun`` the shard
  defaults to (RANK, WORLD_SIZE).
* Every argument, the shard, the layer, the output names and the output folder's
  writability are checked before any video is read.
* Each file records what made it (:mod:`video3d_zoo.jobs.provenance`).  A rerun skips a file only
  when that record equals what this run would write (same source file, model and weights,
  layer, clips and preprocessing); others are recomputed and counted as stale.
  ``overwrite=True`` redoes everything.
* Each output is written to a temporary file and renamed into place; temporaries left by an
  interrupted run are removed by the next one.
* A video that cannot be decoded, or whose features hold NaN/inf, is reported with its path
  and reason, no file is written for it, and the job goes on; :attr:`ExtractionSummary.ok`
  is then false.  Its output from an earlier run is moved aside (``NAME.npz.stale``), so no
  stale result sits beside fresh ones.  Files of a folder input that are not videos by
  extension are named in the summary.  A full disk ends the run with one
  :class:`~video3d_zoo.errors.DiskFullError` (the partial file removed).  Partial decodes and
  still images are marked in the file (``decode_report``) and counted; with ``strict=True``
  they are failures too.
* Clips of several videos share a batch.  Decoding overlaps inference: in a background thread
  by default (``overlap``, on machines with 2 or more cores), or in DataLoader worker processes
  with ``workers > 0``.  :attr:`ExtractionSummary.timing` says where the time went.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..models.config import InputSpec
from ..errors import ConfigError, DiskFullError
from .extract_plan import (STALE_SUFFIX, VideoJob, check_writable, ignored_line, plan_jobs,
                           remove_stale_temporaries)
from .pipeline import check_layer, model_id, model_input_spec, positive_int, run_clips
from .provenance import (compare_record, dumps, run_record, source_identity, stored_report, video_info,
                         video_record)
from ..wording import count


@dataclass
class ExtractionSummary:
    """What a run did.  ``processed`` were written (``recomputed`` maps the stale ones to why)."""

    processed: List[Path] = field(default_factory=list)
    recomputed: Dict[Path, str] = field(default_factory=dict)
    skipped: List[Path] = field(default_factory=list)
    failed: Dict[Path, str] = field(default_factory=dict)
    partial: List[Path] = field(default_factory=list)
    still_images: List[Path] = field(default_factory=list)
    cleaned: List[Path] = field(default_factory=list)
    outputs: Dict[Path, Path] = field(default_factory=dict)
    #: failed video -> where its earlier output was moved (``NAME.npz.stale``)
    moved_aside: Dict[Path, Path] = field(default_factory=dict)
    #: files under folder inputs that were not taken for videos (by extension)
    ignored: List[Path] = field(default_factory=list)
    #: seconds and counts of the run (see :meth:`describe_timing`)
    timing: Dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def new(self) -> List[Path]:
        return [p for p in self.processed if p not in self.recomputed]

    def describe(self) -> str:
        lines = [f"{len(self.processed)} extracted ({len(self.new)} new, {len(self.recomputed)} recomputed), "
                 f"{len(self.skipped)} up to date (skipped), {len(self.failed)} failed",
                 f"{count(len(self.partial), 'partial decode')}, {count(len(self.still_images), 'still image')}"]
        reasons = sorted(set(self.recomputed.values()))
        if reasons:
            lines.append("recomputed because: " + "; ".join(reasons[:5]) + (" ..." if len(reasons) > 5 else ""))
        if self.cleaned:
            lines.append(f"removed {count(len(self.cleaned), 'leftover temporary file')} of an interrupted run")
        if self.moved_aside:
            lines.append(f"moved {count(len(self.moved_aside), 'earlier output')} of failed videos aside "
                         "(.npz.stale), so none is left beside this run's files")
        if self.ignored:
            lines.append(ignored_line(self.ignored))
        if self.timing.get("builds_running"):
            lines.append("the compiled model is still being built in another process (lowest priority); "
                         "the next --compile run loads it")
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed.items()]
        return "\n".join(lines)

    def describe_timing(self) -> str:
        """Where the run's time went: the model, waiting for decoded clips, decoding, the rest."""
        t = self.timing
        if not t or not t.get("clips"):
            return "timing: no clip reached the model (every video was up to date, failed or empty)"
        clips, model = int(t["clips"]), t.get("model_s", 0.0)
        detail = f", {1000 * model / clips:.1f} ms/clip"
        if t.get("batches"):
            detail += f"; {t.get('shared_batches', 0)} of {count(int(t['batches']), 'batch')} beside decoding"
        mode = t.get("decoding", "inline")
        compiled = f"; loading or building the compiled model {t['compile_s']:.2f} s" if t.get("compile_s") else ""
        if "compiled_batches" in t:  # a library built in the background serves only the later batches
            compiled += (f"; batches run eager {int(t['eager_batches'])}, "
                         f"compiled {int(t['compiled_batches'])}")
        return (f"timing: {t.get('wall_s', 0.0):.2f} s in all{compiled}; "
                f"model {model:.2f} s ({count(clips, 'clip')}{detail}); "
                f"waiting for decoded clips {t.get('waited_s', 0.0):.2f} s; decoding ({mode}) "
                f"{t.get('decode_s', 0.0):.2f} s; writing {t.get('write_s', 0.0):.2f} s")


@dataclass
class _Task:
    job: VideoJob
    meta: Dict[str, object]
    stale: Optional[str] = None  # why an existing output is recomputed


# -- writing ---------------------------------------------------------------------------------------
def write_npz(path: Path, features: np.ndarray, timestamps: np.ndarray, meta: dict) -> None:
    """Atomically write one video's result (``features``, ``timestamps`` and metadata arrays)."""
    from ..fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, features=features.astype(np.float32), timestamps=timestamps.astype(np.float64),
                 **{k: np.asarray(v) for k, v in meta.items()})


def _decode_notes(report: dict) -> List[str]:
    notes = [f"partial decode: {report['partial']}"] if report.get("partial") else []
    return notes + (["still image: a single picture, not a video"] if report.get("still_image") else [])


def _fail(summary: ExtractionSummary, job: VideoJob, reason: str) -> None:
    """Record a failed video and move its earlier output aside: it does not come from this run."""
    note = ""
    if job.output.is_file():
        aside = job.output.with_name(job.output.name + STALE_SUFFIX)
        try:
            os.replace(job.output, aside)
        except OSError as exc:
            note = f" (its earlier output {job.output} could not be moved aside: {exc.strerror or exc})"
        else:
            summary.moved_aside[job.source] = aside
            note = f" (its earlier output was moved aside to {aside})"
    summary.failed[job.source] = reason + note


class _Collector:
    """The job's sink (:func:`~video3d_zoo.jobs.pipeline.run_clips`): writes each finished video, records failures."""

    def __init__(self, tasks: List[_Task], summary: ExtractionSummary, progress, strict: bool) -> None:
        self.tasks, self.summary, self.progress, self.strict = tasks, summary, progress, strict
        self.write_s = 0.0
        self.paths: Dict[int, List[str]] = {}  # per video, "eager" and/or "compiled" (compile=True only)

    def ran(self, index: int, paths: List[str]) -> None:
        self.paths[index] = paths

    def done(self, index: int, features: np.ndarray, spans: np.ndarray, decode_report) -> None:
        task = self.tasks[index]
        report = decode_report.to_dict()
        notes = _decode_notes(report)
        if notes and self.strict:
            return self.error(index, "; ".join(notes) + " (refused by strict)")
        started = time.perf_counter()
        meta = {**task.meta, "decode_report": json.dumps(report),
                "video_info": dumps(video_info(task.job.source, report))}
        if index in self.paths:  # information, not identity: both paths agree within the precision's tolerance
            meta["execution"] = dumps(self.paths.pop(index))
        try:
            write_npz(task.job.output, features, spans, meta)
        except DiskFullError as exc:
            raise DiskFullError(f"{exc}; {count(len(self.summary.processed), 'earlier video')} of this run "
                                "already written completely (a rerun skips them)") from exc
        self.write_s += time.perf_counter() - started
        _count(self.summary, task.job, report)
        self.summary.processed.append(task.job.source)
        if task.stale is not None:
            self.summary.recomputed[task.job.source] = task.stale
        self.progress.update(1)

    def error(self, index: int, reason: str) -> None:
        job = self.tasks[index].job
        _fail(self.summary, job, reason)
        self.progress.write(f"failed {job.source}: {reason}", file=sys.stderr)
        self.progress.update(1)


def _count(summary: ExtractionSummary, job: VideoJob, report: dict) -> None:
    summary.outputs[job.source] = job.output
    if report.get("partial"):
        summary.partial.append(job.source)
    if report.get("still_image"):
        summary.still_images.append(job.source)


def _triage(jobs: List[VideoJob], run: dict, summary: ExtractionSummary, overwrite: bool,
            strict: bool) -> List[_Task]:
    """Skip outputs made exactly as this run would make them; the rest become tasks."""
    tasks = []
    for job in jobs:
        try:
            meta = video_record(run, source_identity(job.source))
        except OSError as exc:
            _fail(summary, job, f"{job.source}: cannot be read ({exc.strerror or exc})")
            continue
        if not job.output.exists():
            tasks.append(_Task(job, meta))
            continue
        stale, stored = (("--overwrite", {}) if overwrite else compare_record(job.output, meta))
        if stale is not None:
            tasks.append(_Task(job, meta, stale))
            continue
        report = stored_report(stored)
        if strict and _decode_notes(report):
            _fail(summary, job, "; ".join(_decode_notes(report)) + " (refused by strict)")
            continue
        summary.skipped.append(job.source)
        _count(summary, job, report)
    return tasks


def _check_numbers(batch_size, workers) -> Tuple[int, int]:
    batch_size = positive_int("batch_size", batch_size)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ConfigError(f"workers must be an integer >= 0, got {workers!r}")
    return batch_size, int(workers)


def run_extraction(model, inputs: Sequence[os.PathLike], out_dir: os.PathLike, *, layer: str = "pooled",
                   clip_len: Optional[int] = None, stride: Optional[int] = None, last: str = "pad",
                   fps: Optional[float] = None, batch_size: int = 8, workers: int = 0,
                   shard: Union[Tuple[int, int], str, None] = None, overwrite: bool = False,
                   spec: Optional[InputSpec] = None, progress: bool = True, strict: bool = False,
                   overlap: Optional[bool] = None) -> ExtractionSummary:
    """Extract features of every input video into ``out_dir`` (see the module docstring).

    ``overlap`` decodes in a background thread while the model runs (default: on with ``workers=0``
    on a machine with 2 or more cores); ``summary.timing`` records where the time went.

    Bad arguments, a bad ``shard`` (``(i, n)`` or ``"i/n"``), an unknown ``layer``, clashing
    output names or an unwritable ``out_dir`` raise :class:`~video3d_zoo.errors.ConfigError`
    before any video is read.
    """
    from tqdm.auto import tqdm

    from ..io import ClipPreprocessor, ClipProtocol

    started_ns = time.time_ns()
    batch_size, workers = _check_numbers(batch_size, workers)
    protocol = ClipProtocol(clip_len=clip_len, stride=stride, last=last, fps=fps)
    check_layer(model, layer)
    prep = ClipPreprocessor(model_input_spec(model, spec))
    ignored: List[Path] = []
    jobs = plan_jobs(inputs, out_dir, shard, ignored=ignored)
    check_writable(out_dir)
    summary = ExtractionSummary(cleaned=remove_stale_temporaries(jobs, started_ns), ignored=ignored)
    applied = {**prep.spec.to_dict(), "crop_size": prep.crop, "resize": prep.resize}
    run = run_record(model, model_id(model), layer, protocol, applied, prep.spec)
    tasks = _triage(jobs, run, summary, overwrite, strict)
    bar = tqdm(total=len(tasks), unit="video", disable=not progress, desc="extract")
    collector = _Collector(tasks, summary, bar, strict)
    overlap = _default_overlap(workers) if overlap is None else bool(overlap)
    try:
        summary.timing = run_clips(model, [t.job.source for t in tasks], prep.spec, protocol, layer, batch_size,
                                   collector, workers=workers, overlap=overlap)
    finally:
        bar.close()
    summary.timing["write_s"] = collector.write_s
    return summary


def _default_overlap(workers: int) -> bool:
    # A decoding thread needs a core of its own to help; with one, it only takes turns with the model.
    return workers == 0 and (os.cpu_count() or 1) >= 2
