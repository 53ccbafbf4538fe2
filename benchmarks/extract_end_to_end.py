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
* ``zoo fast bf16 compile, first run``: ``... --compile`` with an empty compiled-model cache: the
  first batches run on the eager fast path while another process builds the AOTInductor library
  (once per model, batch size, precision and machine; every repeat starts from an empty cache),
  the later ones on the library once it is there.  A build still running when the run ends goes on
  detached; the benchmark waits for it (untimed) before the next route;
* ``zoo fast bf16 compile, first run, built in process``: the same with
  ``VIDEO3D_ZOO_COMPILE_IN_PROCESS=1``, the build before the first batch in the job's own process
  (how the first run went before the background build);
* ``zoo fast bf16 compile``: the same command again, loading the library the first run built.

Every route runs ``--repeats`` times (default 3), interleaved route by route, so the machine's slow
and fast moments fall on every route alike.  Printed: the median wall seconds per route with the
fastest and slowest run, each route's speed-up over the original (ratio of the medians), and for the
zoo routes where the time went in the median run (``extract --verbose``); ``--csv`` appends rows.

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

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


def routes(weights: Path, videos: Path, work: Path, bf16: bool, run: int):
    """``(label, command, compiled-model home or None)`` of every route, writing to folders of run ``run``."""
    extract = [sys.executable, "-m", "video3d_zoo", "extract", str(videos), "--weights", str(weights), "--quiet",
               "--verbose"]
    out = work / f"run{run}"
    yield "original", [sys.executable, "-c", ORIGINAL_CHILD.format(here=str(HERE), weights=str(weights),
                                                                   work=str(out), videos=str(videos))], None
    yield "zoo eager", extract + ["-o", str(out / "eager")], None
    fast = ["--fast"] + (["--precision", "bf16"] if bf16 else [])
    label = "zoo fast bf16" if bf16 else "zoo fast fp32"
    yield label, extract + ["-o", str(out / "fast")] + fast, None
    # The first run of each repeat builds into an empty cache (the first repeat's cache is the one
    # the later runs load from).
    first_home = work / "home" if run == 0 else work / f"home_first{run}"
    yield f"{label} compile, first run", extract + ["-o", str(out / "compiled1")] + fast + ["--compile"], first_home
    yield (f"{label} compile, first run, built in process", extract + ["-o", str(out / "compiled1p")] + fast
           + ["--compile"], work / f"home_inprocess{run}")
    yield f"{label} compile", extract + ["-o", str(out / "compiled2")] + fast + ["--compile"], work / "home"


def measure(weights: Path, videos: Path, work: Path, bf16: bool, repeats: int, compiling: bool) -> Dict[str, list]:
    """Every route ``repeats`` times, interleaved (route by route within each repeat), so slow and fast
    moments of the machine fall on every route alike: ``{label: [(seconds, timing line), ...]}``."""
    results: Dict[str, list] = {}
    for run in range(repeats):
        (work / f"run{run}").mkdir()
        for label, cmd, home in routes(weights, videos, work, bf16, run):
            if "compile" in label and not compiling:
                continue
            env = {**os.environ, "VIDEO3D_ZOO_HOME": str(home or work / "home")}
            if "built in process" in label:
                env["VIDEO3D_ZOO_COMPILE_IN_PROCESS"] = "1"
            results.setdefault(label, []).append(timed(cmd, work, env))
            wait_for_builds(home or work / "home")
    return results


def wait_for_builds(home: Path, limit_s: float = 900.0) -> None:
    """Until no background build (a request file in the compiled cache) is left running from the last
    route, so that it takes no cycles from the next one."""
    deadline = time.monotonic() + limit_s
    while list(home.glob("**/compiled/*.request.*.pt")) and time.monotonic() < deadline:
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video (default 10)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of every route, reported as the median (default 3; 1 with --tiny)")
    parser.add_argument("--csv", default=None, help="append the rows to this CSV file")
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if shutil.which("ffmpeg") is None:
        sys.exit("the original route needs the ffmpeg command (apt-get install ffmpeg)")
    import video3d_zoo
    from video3d_zoo.inference.compiled import available
    from video3d_zoo.inference.precision import bf16_supported

    repeats = args.repeats or (1 if args.tiny else 3)
    bf16 = bf16_supported(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "videos").mkdir()
        count = make_videos(work / "videos", args.tiny, args.seconds)
        name, kwargs = ("resnet3d_10", {"widen_factor": 0.125}) if args.tiny else ("resnet3d_50", {})
        torch.manual_seed(0)
        weights = video3d_zoo.save_pretrained(video3d_zoo.create_model(name, **kwargs), work / "weights")
        results = measure(weights, work / "videos", work, bf16, repeats, available())
    summary = {label: summarise(runs) for label, runs in results.items()}
    base = summary["original"][0]
    what = "tiny" if args.tiny else f"4 x 1280x720 + 8 x 640x272, {args.seconds:g} s, 30 fps, ~1.6 / 0.4 Mbit/s"
    print(f"{count} videos ({what}), {name}, {torch.get_num_threads()} threads; whole processes, wall time, "
          f"median of {repeats} interleaved run(s)")
    for label, (median, low, high, timing) in summary.items():
        print(f"  {label:34s} {median:7.2f} s ({low:.2f}-{high:.2f})   {base / median:5.2f}x the original route")
        if timing:
            print(f"    {timing}")
    fast = next((label for label in summary if label in ("zoo fast bf16", "zoo fast fp32")), None)
    for label in summary:
        if fast and "first run" in label:
            print(f"  {label}: {summary[label][0] / summary[fast][0]:.2f}x the time of {fast} (target 1.25x or less)")
    if args.csv:
        write_rows(Path(args.csv), name, count, repeats, summary)


def summarise(runs: list) -> tuple:
    """``(median, fastest, slowest seconds, the timing line of the median run)``."""
    ordered = sorted(runs, key=lambda r: r[0])
    timing = ordered[(len(ordered) - 1) // 2][1]
    return statistics.median(r[0] for r in runs), ordered[0][0], ordered[-1][0], timing


def write_rows(path: Path, model: str, videos: int, repeats: int, summary: dict) -> None:
    from video3d_zoo.inference.bench import machine_description

    new = not path.exists()
    base = summary["original"][0]
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["date", "machine", "torch", "model", "videos", "route", "runs", "wall_s", "wall_s_min",
                             "wall_s_max", "speedup_vs_original"])
        for label, (median, low, high, _) in summary.items():
            writer.writerow([datetime.date.today().isoformat(), f"{machine_description()}, "
                             f"{torch.get_num_threads()} threads", torch.__version__, model, videos, label, repeats,
                             f"{median:.2f}", f"{low:.2f}", f"{high:.2f}", f"{base / median:.3f}"])


if __name__ == "__main__":
    main()
