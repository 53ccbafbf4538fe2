"""End-to-end feature extraction of a mixed set of videos, as whole processes, side by side.

Videos: 12 H.264 files at the bitrate of real footage (``decode_pipeline.write_textured_video``),
4 x 1280x720 and 8 x 640x272, 10 s at 30 fps (Kinetics clips are 10 s).  Every route computes
the same network: a seeded random resnet3d_50 saved with ``save_pretrained``.

Routes, each a fresh process over the same videos (process start to exit: start-up, model
loading, decoding and writing included):

* ``original``: the original extractor's route - ``ffmpeg -i video tmp/image_%05d.jpg`` at native
  resolution, PIL short side 112, centre crop, normalise, eager fp32 model, batches of 32
  non-overlapping clips (``decode_pipeline.original_route``);
* ``zoo eager``: ``video3d-zoo extract DIR --weights FOLDER`` (fp32, eager);
* ``zoo fast bf16``: ``... --fast --precision bf16`` (where the CPU has native bf16);
* ``zoo fast bf16 compile, first run``: ``... --compile`` with an empty compiled-model cache: this
  run builds the AOTInductor library (once per model, batch size, precision and machine);
* ``zoo fast bf16 compile``: the same command again, loading the library the first run built.

Printed: wall seconds per route, each route's speed-up over the original measured in the same
run, and for the zoo routes where the time went (``extract --verbose``); ``--csv`` appends rows.

    python benchmarks/extract_end_to_end.py                 # the set above
    python benchmarks/extract_end_to_end.py --seconds 3     # shorter videos
    python benchmarks/extract_end_to_end.py --tiny          # seconds-long smoke run (CI)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from decode_pipeline import write_textured_video  # noqa: E402  (a sibling benchmark script)

ORIGINAL_CHILD = """
import sys, pathlib, torch
sys.path.insert(0, {here!r})
from decode_pipeline import original_route
import video3d_zoo
model = video3d_zoo.from_pretrained({weights!r}).eval()
work = pathlib.Path({work!r})
for video in sorted(pathlib.Path({videos!r}).glob("*.mp4")):
    original_route(model, video, work, batch_size=32)
"""


def make_videos(root: Path, tiny: bool, seconds: float) -> int:
    sizes = [(64, 48)] * 2 if tiny else [(1280, 720)] * 4 + [(640, 272)] * 8
    for i, (width, height) in enumerate(sizes):
        write_textured_video(root / f"v{i:02d}_{width}x{height}.mp4", 1.0 if tiny else seconds, width, height,
                             seed=i)
    return len(sizes)


def timed(cmd, cwd: Path, env: dict):
    """``(wall seconds, the timing line of extract --verbose or "")``."""
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{result.stderr[-3000:]}")
    timing = next((line for line in result.stdout.splitlines() if line.startswith("timing:")), "")
    return elapsed, timing


def routes(weights: Path, videos: Path, work: Path, bf16: bool):
    extract = [sys.executable, "-m", "video3d_zoo", "extract", str(videos), "--weights", str(weights), "--quiet",
               "--verbose"]
    yield "original", [sys.executable, "-c", ORIGINAL_CHILD.format(here=str(HERE), weights=str(weights),
                                                                   work=str(work), videos=str(videos))]
    yield "zoo eager", extract + ["-o", str(work / "eager")]
    fast = ["--fast"] + (["--precision", "bf16"] if bf16 else [])
    label = "zoo fast bf16" if bf16 else "zoo fast fp32"
    yield label, extract + ["-o", str(work / "fast")] + fast
    yield f"{label} compile, first run", extract + ["-o", str(work / "compiled1")] + fast + ["--compile"]
    yield f"{label} compile", extract + ["-o", str(work / "compiled2")] + fast + ["--compile"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video (default 10)")
    parser.add_argument("--csv", default=None, help="append the rows to this CSV file")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("the original route needs the ffmpeg command (apt-get install ffmpeg)")
    import video3d_zoo
    from video3d_zoo.compiled import available
    from video3d_zoo.precision import bf16_supported

    bf16 = bf16_supported(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "videos").mkdir()
        count = make_videos(work / "videos", args.tiny, args.seconds)
        name, kwargs = ("resnet3d_10", {"widen_factor": 0.125}) if args.tiny else ("resnet3d_50", {})
        torch.manual_seed(0)
        weights = video3d_zoo.save_pretrained(video3d_zoo.create_model(name, **kwargs), work / "weights")
        env = {**os.environ, "VIDEO3D_ZOO_HOME": str(work / "home")}  # an empty compiled-model cache
        chosen = [(label, cmd) for label, cmd in routes(weights, work / "videos", work, bf16)
                  if available() or "compile" not in label]
        results = [(label, *timed(cmd, work, env)) for label, cmd in chosen]
    base = results[0][1]
    what = "tiny" if args.tiny else f"4 x 1280x720 + 8 x 640x272, {args.seconds:g} s, 30 fps, ~1.6 / 0.4 Mbit/s"
    print(f"{count} videos ({what}), {name}, {torch.get_num_threads()} threads; whole processes, wall time")
    for label, seconds, timing in results:
        print(f"  {label:34s} {seconds:7.2f} s   {base / seconds:5.2f}x the original route")
        if timing:
            print(f"    {timing}")
    if args.csv:
        write_rows(Path(args.csv), name, count, [(label, seconds) for label, seconds, _ in results])


def write_rows(path: Path, model: str, videos: int, results) -> None:
    from video3d_zoo.bench import machine_description

    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["date", "machine", "torch", "model", "videos", "route", "wall_s", "speedup_vs_original"])
        for label, seconds in results:
            writer.writerow([datetime.date.today().isoformat(), f"{machine_description()}, "
                             f"{torch.get_num_threads()} threads", torch.__version__, model, videos, label,
                             f"{seconds:.2f}", f"{results[0][1] / seconds:.3f}"])


if __name__ == "__main__":
    main()
