"""What ``video3d-zoo eval`` writes: the report (JSON), per-video predictions (CSV), the confusion PNG.

The report (:func:`build_report`) holds the metrics of :func:`~.evaluate.compute_metrics` and:

* ``data`` - format, root, annotations, fold, split, ``split_files`` read, ``labels_source``;
* ``videos`` - ``listed`` (rows of the split), ``used`` (scored), ``skipped`` (and
  ``skipped_by_reason``), ``transcoded_matches`` (listed ``.avi`` found under another extension),
  ``partial_decodes`` and ``still_images`` among the scored videos;
* ``skipped_videos``, ``transcoded_videos``, ``partial_decode_videos``, ``still_image_videos``:
  the lists behind those counts;
* ``protocol`` (:meth:`ClipProtocol.to_dict` with the spec's defaults resolved), ``input_spec``,
  ``model``, ``topk``.

Values that are not finite numbers become ``null``; JSON is written with ``allow_nan=False``.
``--out`` receives ``metrics.json`` (with the confusion matrix), ``predictions.csv`` and
``confusion.png``, each replaced atomically; an output of an earlier run that this run does not
write (a confusion PNG) is removed, so the folder only ever describes the latest run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ..fileio import write_text_atomic

OUTPUT_FILES = ("metrics.json", "predictions.csv", "confusion.png")
PRIVATE_KEYS = ("confusion", "labels")


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (and numpy scalars made plain)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def dumps(report: Dict[str, Any], indent: Optional[int] = None) -> str:
    return json.dumps(json_safe(report), indent=indent, allow_nan=False)


def video_counts(videos, issues, used: int, notes: Dict[int, dict]) -> Dict[str, Any]:
    """The ``videos`` section: listed, used, skipped (by reason), transcoded, partial, still."""
    skipped = dict(sorted(issues.counts.items()))
    listed = videos.listed if videos.listed is not None else len(videos.items)
    return {"listed": listed, "used": used, "skipped": sum(skipped.values()), "skipped_by_reason": skipped,
            "transcoded_matches": len(videos.matched),
            "partial_decodes": sum(1 for n in notes.values() if n.get("partial")),
            "still_images": sum(1 for n in notes.values() if n.get("still_image"))}


def decode_lists(videos, notes: Dict[int, dict]) -> Dict[str, List[Any]]:
    partial, still = [], []
    for index, note in sorted(notes.items()):
        item = videos.items[index]
        if note.get("partial"):
            partial.append({"video": item.video_id, "path": item.path, "frames": note.get("frames"),
                            "expected": note.get("expected"), "partial": note["partial"]})
        if note.get("still_image"):
            still.append({"video": item.video_id, "path": item.path})
    return {"partial_decode_videos": partial, "still_image_videos": still}


def build_report(metrics: Dict[str, Any], *, videos, issues, notes: Dict[int, dict], data_info: Dict[str, Any],
                 protocol, spec, model_info: Dict[str, Any], topk: int) -> Dict[str, Any]:
    """The eval report: ``metrics`` plus where the videos came from, what happened to them and how
    they were cut (see the module docstring)."""
    report = dict(metrics)
    report["skipped"] = dict(sorted(issues.counts.items()))
    report["data"] = data_info
    report["videos"] = video_counts(videos, issues, metrics["num_videos"], notes)
    report["skipped_videos"] = list(issues.messages)
    report["transcoded_videos"] = [{"listed": a, "file": b} for a, b in videos.matched]
    report.update(decode_lists(videos, notes))
    report["protocol"] = protocol.to_dict(spec)
    report["input_spec"] = spec.to_dict()
    report["model"] = model_info
    report["topk"] = topk
    return report


def public_report(report: Dict[str, Any]) -> Dict[str, Any]:
    """The report without the confusion matrix (what ``--json`` prints)."""
    return {k: v for k, v in report.items() if k not in PRIVATE_KEYS}


# -- per-video predictions --------------------------------------------------------------------------
def prediction_header(topk: int) -> List[str]:
    columns = ["video", "path", "label", "num_clips"]
    for k in range(1, topk + 1):
        columns += [f"top{k}_label", f"top{k}_score"]
    return columns


def prediction_rows(result, videos, names: Sequence[str], topk: int) -> List[List[str]]:
    """One row per scored video: id, file, true label, clips, then the top-k labels and mean softmax."""
    rows = []
    k = min(topk, result.video_probs.shape[1]) if len(result.labels) else 0
    for i, index in enumerate(result.video_index.tolist()):
        item = videos.items[index]
        probs = result.video_probs[i]
        order = np.argsort(-probs, kind="stable")[:k]
        row = [item.video_id, item.path, names[int(result.labels[i])], str(int(result.clip_counts[i]))]
        for j in order:
            row += [names[int(j)], f"{float(probs[j]):.6g}"]
        rows.append(row + [""] * (2 * (topk - k)))
    return rows


def _csv_text(header: List[str], rows: List[List[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_eval_outputs(metrics: Dict[str, Any], out_dir: Union[str, Path], confusion_png: bool = True,
                       prefix: str = "", predictions: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``metrics.json`` (and ``predictions.csv`` when ``predictions`` = ``{"header", "rows"}``,
    and ``confusion.png``) into ``out_dir``, each atomically; outputs of an earlier run that this
    one does not write are removed.  ``metrics.json`` is written last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = set()
    if predictions is not None:
        write_text_atomic(out / f"{prefix}predictions.csv", _csv_text(predictions["header"], predictions["rows"]))
        written.add("predictions.csv")
    if confusion_png and metrics.get("confusion"):
        if save_confusion_png(metrics["confusion"], metrics["labels"], out / f"{prefix}confusion.png"):
            written.add("confusion.png")
    write_text_atomic(out / f"{prefix}metrics.json", dumps(metrics, indent=2) + "\n")
    written.add("metrics.json")
    for name in OUTPUT_FILES:
        if name not in written:
            (out / f"{prefix}{name}").unlink(missing_ok=True)
    return out


def save_confusion_png(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Union[str, Path],
                       title: str = "") -> Optional[Path]:
    """Row-normalised confusion matrix as a PNG; ``None`` (with a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no confusion-matrix PNG (pip install 'video3d-zoo[train]')",
              file=sys.stderr)
        return None

    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(labels)
    side = min(24.0, max(5.0, 0.35 * n + 2))
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= 60:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (video level, row-normalised)")
    from .plots import save_png

    return save_png(fig, path)
