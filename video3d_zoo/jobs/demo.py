"""``video3d-zoo demo``: the main job end to end, offline, with the model embedded in the package.

It writes fresh synthetic motion videos (one per class, from a seed the model never saw), classifies
each with the embedded toy model ``resnet3d_10.synthetic_motion`` (a small 3D ResNet trained by the
packaged config ``synthetic_r3d``; named by its tag, it is no model's default weights),
and extracts their clip features to one ``.npz`` per video, exactly as ``video3d-zoo classify`` and
``video3d-zoo extract`` would.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..wording import count
from ..errors import ConfigError

DEMO_WEIGHTS = "resnet3d_10.synthetic_motion"


@dataclass
class DemoReport:
    out_dir: Path
    kept: bool = True  # False: out_dir was a temporary folder, removed when the demo ended
    rows: List[Tuple[str, str, float]] = field(default_factory=list)  # (true, predicted, probability)
    feature_shapes: List[Tuple[str, Tuple[int, ...]]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(t == p for t, p, _ in self.rows) / max(len(self.rows), 1)

    def describe(self) -> str:
        lines = [f"{'video':<26} {'true class':<12} {'predicted':<12} {'probability':>11}"]
        for (true, pred, prob), (name, _) in zip(self.rows, self.feature_shapes):
            lines.append(f"{name:<26} {true:<12} {pred:<12} {prob:11.1%}")
        shape = self.feature_shapes[0][1] if self.feature_shapes else ()
        lines.append(f"video accuracy {self.accuracy:.0%} on {count(len(self.rows), 'fresh video')}; "
                     f"features: {count(shape[0] if shape else 0, 'clip')} x {shape[1] if len(shape) > 1 else 0} "
                     "per video, " + (f"written to {self.out_dir / 'features'}" if self.kept else
                                      "written to a temporary folder, now removed (-o DIR keeps the videos "
                                      "and features)"))
        return "\n".join(lines)


def write_demo_videos(out_dir: Path, seed: int, size: int, frames: int) -> List[Tuple[str, Path]]:
    from .synthetic import CLASSES, render_video, video_rng, write_mp4

    videos = []
    for class_index, label in enumerate(CLASSES):
        path = out_dir / "videos" / f"{label}.mp4"
        write_mp4(path, render_video(label, video_rng(seed, class_index, 0), size=size, frames=frames))
        videos.append((label, path))
    return videos


def run_demo(out_dir: Optional[str] = None, seed: int = 2026, device: str = "cpu",
             progress: bool = False) -> DemoReport:
    """Generate, classify and extract; returns the per-video results (see the module docstring)."""
    from ..devices import resolve_device
    from ..api import load_model

    if out_dir and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError(f"-o {out_dir}: is a file; the demo writes a folder (videos/ and features/ inside it)")
    model = load_model(DEMO_WEIGHTS).to(resolve_device(device)).eval()
    if out_dir:
        return _run_demo_in(model, Path(out_dir), seed, progress)
    with tempfile.TemporaryDirectory(prefix="video3d_zoo_demo_") as tmp:  # nothing left behind
        report = _run_demo_in(model, Path(tmp), seed, progress)
    report.kept = False
    return report


def _run_demo_in(model, out: Path, seed: int, progress: bool) -> DemoReport:
    from .extract import run_extraction
    from .features import classify_video

    spec = model.config.input_spec
    # The generator's own size and length (64 px, 32 frames): preprocessing resizes as for training.
    videos = write_demo_videos(out, seed, size=64, frames=2 * spec.frames)
    report = DemoReport(out)
    for label, path in videos:
        prediction = classify_video(model, path, topk=1)
        report.rows.append((label, prediction.top[0][0], prediction.top[0][1]))
    summary = run_extraction(model, [out / "videos"], out / "features", overwrite=True, progress=progress)
    if not summary.ok:
        raise RuntimeError(summary.describe())
    for _, path in videos:
        with np.load(summary.outputs[path.resolve()]) as data:
            report.feature_shapes.append((path.name, tuple(data["features"].shape)))
    return report
