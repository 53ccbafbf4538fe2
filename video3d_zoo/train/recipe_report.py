"""The reproduction report: finished runs measured against the figures the recipes report.

``video3d-zoo train --report RUNS -o docs/reproduction.md`` reads every run folder under ``RUNS``
(``export/metrics.json`` of a training run, whose config names its recipe) and every ``eval --out``
folder (``metrics.json`` of released weights, whose ``model.tag`` is the recipe's name), and
writes one markdown table: recipe, protocol, measured top-1 / top-5, the reported figure and the
difference.  Where the report holds runs of the paper's groups it draws their figures next to the
page: ``<page>_scratch.png`` (train vs validation loss of each from-scratch run) and
``<page>_depth.png`` (accuracy against depth, measured and reported).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import TrainConfigError
from ..fileio import write_text_atomic
from .recipes import RECIPE_SOURCE_PREFIX, Recipe, recipe


@dataclass
class RunResult:
    folder: Path
    recipe: Optional[Recipe]
    name: str
    top1: Optional[float]
    top5: Optional[float]
    protocol: str
    kind: str  # "train" or "eval"


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _train_run(metrics_file: Path) -> Optional[RunResult]:
    data = _read_json(metrics_file)
    if data is None or "config" not in data:
        return None
    config = data["config"]
    source = str(config.get("source") or "")
    name = source[len(RECIPE_SOURCE_PREFIX):] if source.startswith(RECIPE_SOURCE_PREFIX) else \
        str(config.get("output", {}).get("name") or metrics_file.parent.parent.name)
    return RunResult(metrics_file.parent.parent, recipe(name), name, data.get("video_top1"), data.get("video_top5"),
                     f"trained {data.get('epochs')} epochs; evaluated on {data.get('evaluated_on', '?')}", "train")


def _eval_run(metrics_file: Path) -> Optional[RunResult]:
    data = _read_json(metrics_file)
    if data is None or "video_top1" not in data or not isinstance(data.get("model"), dict):
        return None
    model = data["model"]
    name = f"{model.get('architecture')}.{model.get('tag')}" if model.get("tag") else str(model.get("ref"))
    protocol = (data.get("protocol") or {}).get("description", "?")
    where = data.get("data") or {}
    return RunResult(metrics_file.parent, recipe(name), name, data.get("video_top1"), data.get("video_top5"),
                     f"eval of released weights on {where.get('format')} {where.get('split')}: {protocol}", "eval")


def gather_runs(runs_dir: Union[str, Path]) -> List[RunResult]:
    """Every finished training run and eval report under ``runs_dir``, sorted by folder."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise TrainConfigError(f"{root}: no such runs folder (--report takes the folder holding run folders)")
    results = []
    for path in sorted(root.rglob("metrics.json")):
        if path.parent.name == "export":
            found = _train_run(path)
        elif path.parent.name != "eval":  # a training run's eval/ repeats its export/metrics.json
            found = _eval_run(path)
        else:
            found = None
        if found is not None:
            results.append(found)
    return results


def measured_value(run: RunResult) -> Optional[float]:
    """The run's number in the reported figure's metric (percent)."""
    found = run.recipe.reported() if run.recipe else None
    if run.top1 is None:
        return None
    if found and "mean(top-1, top-5)" in found[1]:
        return None if run.top5 is None else 50.0 * (run.top1 + run.top5)
    if found and "top-5" in found[1] and "top-1" not in found[1]:
        return None if run.top5 is None else 100.0 * run.top5
    return 100.0 * run.top1


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def report_page(runs: List[RunResult], figures: Dict[str, str]) -> str:
    out = ["# Reproduction report", "",
           f"{len(runs)} finished runs, measured against the figures their recipes report "
           "(`video3d-zoo train --list`).  Written by `video3d-zoo train --report`.", "",
           "| run | recipe | reproduces | measured with | top-1 | top-5 | measured | reported (source; protocol) | difference |",
           "|---|---|---|---|---:|---:|---:|---|---:|"]
    for run in runs:
        r = run.recipe
        found = r.reported() if r else None
        value = measured_value(run)
        diff = f"{value - found[0]:+.1f}" if value is not None and found else "-"
        rep = f"{found[0]:g} {found[1]} ({found[2]}; {r.protocol()})" if found else "not reported"
        out.append(f"| `{run.folder.name}` | {f'`{r.name}`' if r else run.name + ' (no recipe)'} | "
                   f"{(r.reproduces if r else None) or '-'} | {run.protocol} | {_pct(run.top1)} | {_pct(run.top5)} | "
                   f"{'-' if value is None else f'{value:.1f}'} | {rep} | {diff} |")
    for group, png in figures.items():
        out += ["", f"## {group}", "", f"![{group}]({png})"]
    return "\n".join(out) + "\n"


def _history(folder: Path) -> List[Dict[str, float]]:
    rows = []
    with open(folder / "log.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: float(v) for k, v in row.items() if v not in (None, "")})
    return rows


def plot_scratch(runs: List[RunResult], path: Path) -> Optional[Path]:
    """Train vs validation loss of each from-scratch run, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_png

    chosen = [r for r in runs if r.kind == "train" and r.recipe and "scratch" in r.recipe.groups
              and (r.folder / "log.csv").is_file()]
    if not chosen:
        return None
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.5 * len(chosen), 3), squeeze=False)
    for ax, run in zip(axes[0], chosen):
        hist = _history(run.folder)
        ax.plot([h["epoch"] for h in hist], [h.get("train_loss") for h in hist], label="train")
        val = [h for h in hist if "val_loss" in h]
        ax.plot([h["epoch"] for h in val], [h["val_loss"] for h in val], label="validation")
        ax.set_title(run.recipe.row.data, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("cross-entropy")
    axes[0][0].legend()
    return save_png(fig, path)


def plot_depth(runs: List[RunResult], path: Path) -> Optional[Path]:
    """Measured (and reported) accuracy against ResNet depth on Kinetics-400."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_png

    points: List[Tuple[int, Optional[float], Optional[float]]] = []
    for run in runs:
        if run.recipe and "depth" in run.recipe.groups:
            depth = int(re.search(r"_(\d+)$", run.recipe.entry.model).group(1))
            found = run.recipe.reported()
            points.append((depth, measured_value(run), found[0] if found else None))
    if not points:
        return None
    points.sort()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="measured")
    ax.plot([p[0] for p in points if p[2] is not None], [p[2] for p in points if p[2] is not None], "s--",
            label="reported")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([p[0] for p in points])
    ax.set_xticklabels([str(p[0]) for p in points])
    ax.set_xlabel("ResNet depth")
    ax.set_ylabel("mean(top-1, top-5) %")
    ax.legend()
    return save_png(fig, path)


def write_report(runs_dir: Union[str, Path], out: Union[str, Path]) -> Path:
    """Gather the runs under ``runs_dir`` and write the markdown page ``out`` (plus its figures)."""
    out = Path(out)
    if out.suffix.lower() != ".md":
        raise TrainConfigError(f"-o {out}: expected a markdown file (.md)")
    runs = gather_runs(runs_dir)
    if not runs:
        raise TrainConfigError(f"{runs_dir}: no finished run (export/metrics.json) or eval report (metrics.json)")
    figures: Dict[str, str] = {}
    try:
        for group, draw in (("scratch", plot_scratch), ("depth", plot_depth)):
            png = out.with_name(f"{out.stem}_{group}.png")
            if draw(runs, png) is not None:
                figures[group] = png.name
    except ImportError:
        pass  # matplotlib is optional: the table is written without the figures
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, report_page(runs, figures))
