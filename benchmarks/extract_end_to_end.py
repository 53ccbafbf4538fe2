"""End-to-end feature extraction of a mixed set of videos, as whole processes, side by side.

Routes, each a fresh process over the same videos and the same weights (a random resnet3d_50 saved
with ``save_pretrained``, so every route computes the same network):

* ``original``: the original extractor's route - ``ffmpeg -i video tmp/image_%05d.jpg`` at native
  resolution, PIL short side 112, centre crop, normalise, eager fp32 model, non-overlapping clips
  (``benchmarks/decode_pipeline.original_route``), batches of one clip as the original ran them;
* ``zoo eager``: ``video3d-zoo extract DIR --weights FOLDER`` (fp32, eager);
* ``zoo fast bf16``: ``... --fast --precision bf16`` (where the CPU has native bf16);
* ``zoo fast bf16 compile``: ``... --compile`` too.

Printed: wall seconds per route (process start to exit, model loading and start-up included) and each
route's speed-up over the original, measured in the same run; ``--csv`` appends them to a CSV.

    python benchmarks/extract_end_to_end.py           # 4 x 1280x720 + 8 x 640x272, 3 s each, 30 fps
    python benchmarks/extract_end_to_end.py --tiny    # seconds-long smoke run (CI)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from decode_pipeline import write_test_video  # noqa: E402  (a sibling benchmark script)

ORIGINAL_CHILD = """
import sys, pathlib, torch
sys.path.insert(0, {here!r})
from decode_pipeline import original_route
import video3d_zoo
model = video3d_zoo.from_pretrained({weights!r}).eval()
work = pathlib.Path({work!r})
for video in sorted(pathlib.Path({videos!r}).glob("*.mp4")):
    original_route(model, video, work)
"""


def make_videos(root: Path, tiny: bool) -> int:
    sizes = [(64, 48)] * 2 if tiny else [(1280, 720)] * 4 + [(640, 272)] * 8
    seconds = 1.0 if tiny else 3.0
    for i, (width, height) in enumerate(sizes):
        write_test_video(root / f"v{i:02d}_{width}x{height}.mp4", seconds, width, height)
    return len(sizes)


def timed(cmd, cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{result.stderr[-3000:]}")
    return elapsed


def routes(weights: Path, videos: Path, work: Path, bf16: bool):
    extract = [sys.executable, "-m", "video3d_zoo", "extract", str(videos), "--weights", str(weights), "--quiet"]
    yield "original", [sys.executable, "-c", ORIGINAL_CHILD.format(here=str(HERE), weights=str(weights),
                                                                   work=str(work), videos=str(videos))]
    yield "zoo eager", extract + ["-o", str(work / "eager")]
    if bf16:
        yield "zoo fast bf16", extract + ["-o", str(work / "bf16"), "--fast", "--precision", "bf16"]
        yield "zoo fast bf16 compile", extract + ["-o", str(work / "compiled"), "--fast", "--precision", "bf16",
                                                  "--compile"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--csv", default=None, help="append the rows to this CSV file")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("the original route needs the ffmpeg command (apt-get install ffmpeg)")
    import video3d_zoo
    from video3d_zoo.precision import bf16_supported

    bf16 = bf16_supported(torch.device("cpu")) and not args.tiny
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "videos").mkdir()
        count = make_videos(work / "videos", args.tiny)
        name, kwargs = ("resnet3d_10", {"widen_factor": 0.125}) if args.tiny else ("resnet3d_50", {})
        weights = video3d_zoo.save_pretrained(video3d_zoo.create_model(name, **kwargs), work / "weights")
        results = [(label, timed(cmd, work)) for label, cmd in routes(weights, work / "videos", work, bf16)]
    base = results[0][1]
    print(f"{count} videos ({'tiny' if args.tiny else '4 x 1280x720 + 8 x 640x272, 3 s, 30 fps'}), {name}, "
          f"{torch.get_num_threads()} threads; whole processes, wall time")
    for label, seconds in results:
        print(f"  {label:24s} {seconds:7.2f} s   {base / seconds:5.2f}x the original route")
    if not bf16:
        print("  (bf16 routes skipped: no native bf16 on this CPU, or --tiny)")
    if args.csv:
        write_rows(Path(args.csv), name, count, results)


def write_rows(path: Path, model: str, videos: int, results) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["date", "machine", "torch", "model", "videos", "route", "wall_s", "speedup_vs_original"])
        for label, seconds in results:
            writer.writerow([datetime.date.today().isoformat(), f"{platform.processor() or platform.machine()}, "
                             f"{torch.get_num_threads()} threads", torch.__version__, model, videos, label,
                             f"{seconds:.2f}", f"{results[0][1] / seconds:.3f}"])


if __name__ == "__main__":
    main()
