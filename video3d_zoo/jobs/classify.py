"""The `video3d-zoo classify` job: video-level predictions for many videos, as a table or JSON lines.

Inputs are read as by `extract` (video files, folders searched recursively, text files listing
paths).  One video behaves as it always has: any error ends the command (exit status 2).  With
several, a video that fails is reported on stderr with its reason, the others are still
classified, and the exit status is 1; files of a folder input that are not videos by extension are
named on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from ..errors import Video3DZooError
from .extract_plan import LIST_EXTENSIONS, collect_videos, ignored_line
from ..wording import count


def prediction_record(video: str, prediction) -> Dict[str, Any]:
    """The JSON object of one video (``--json`` prints one per line)."""
    report = prediction.decode_report
    return {"video": video, "num_clips": prediction.num_clips,
            "top": [{"label": label, "score": score} for label, score in prediction.top],
            "notes": prediction.notes, "decode_report": report.to_dict() if report else None}


def print_one(video: str, prediction) -> None:
    print(f"{video} ({count(prediction.num_clips, 'clip')}, softmax averaged over clips):")
    for label, score in prediction.top:
        print(f"  {score:7.2%}  {label}")
    for note in prediction.notes:
        print(f"  note: {note}")


def print_table(rows: List[tuple]) -> None:
    """One row per video: the video, its clip count and the top-k ``label score`` pairs."""
    width = max([len("video")] + [len(video) for video, _ in rows])
    print(f"{'video':<{width}}  clips  top-k (softmax averaged over clips)")
    for video, prediction in rows:
        top = ", ".join(f"{label} {score:.2%}" for label, score in prediction.top)
        notes = "".join(f"  [note: {note}]" for note in prediction.notes)
        print(f"{video:<{width}}  {prediction.num_clips:5d}  {top}{notes}")


def run_classify(inputs: Sequence[str], classify: Callable[[Path], Any], as_json: bool) -> int:
    """Classify every video of ``inputs`` with ``classify(path) -> VideoPrediction``; the exit status."""
    first = Path(inputs[0])
    single = len(inputs) == 1 and not first.is_dir() and first.suffix.lower() not in LIST_EXTENSIONS
    ignored: List[Path] = []
    videos = [Path(inputs[0])] if single else [path for path, _rel in collect_videos(inputs, ignored)]
    if ignored:
        print(ignored_line(ignored), file=sys.stderr)
    if not videos:
        raise Video3DZooError(f"no videos found in {', '.join(inputs)}" + (f" ({ignored_line(ignored)})"
                                                                          if ignored else ""))
    rows, failed = [], 0
    for video in videos:
        try:
            prediction = classify(video)
        except Video3DZooError as exc:
            if single:
                raise
            failed += 1
            print(f"FAILED {video}: {exc}", file=sys.stderr)
            continue
        if as_json:
            print(json.dumps(prediction_record(str(video), prediction), allow_nan=False), flush=True)
        rows.append((str(video), prediction))
    if not as_json:
        print_one(*rows[0]) if single else print_table(rows)
    if failed:
        print(f"{len(rows)} classified, {failed} failed", file=sys.stderr)
    return 1 if failed else 0
