"""Clip features the way most people extract them today, against ``video3d-zoo extract``, side by side.

The reference route follows the public description of v-iashin/video_features' R(2+1)D extractor
(written here from that description, not from its code): the whole video is decoded into memory,
every frame is scaled to 0-1, resized to 128x171, normalised with the Kinetics mean/std, centre
cropped to 112, and non-overlapping 16-frame stacks go through the model one at a time, eager fp32.

Every route is a whole process over the same videos (start-up, loading, decoding and writing
included); the network is the same seeded random model saved once with ``save_pretrained``, so the
features of all routes can be compared clip by clip (centred cosine against the reference route).
Routes: the reference; ``video3d-zoo extract`` with no speed flags; ``--fast --precision bf16``
(where the CPU runs bf16 natively); and, with ``--compile``, its first run (eager batches while
another process builds the library; the benchmark waits for that build before the next route,
untimed) and a run once the library is built.

    python benchmarks/video_features_route.py                   # r2plus1d_18 and resnet3d_50, 12 videos
    python benchmarks/video_features_route.py --models r2plus1d_18 --seconds 4
    python benchmarks/video_features_route.py --tiny            # seconds-long smoke run (CI)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from decode_pipeline import write_textured_video  # noqa: E402  (sibling benchmark scripts)
from extract_end_to_end import wait_for_builds  # noqa: E402

# The reference route, run as its own process: decode all, then stacks one at a time.
REFERENCE_CHILD = """
import sys, pathlib, numpy as np, torch, av
import torch.nn.functional as F
import video3d_zoo
model = video3d_zoo.from_pretrained({weights!r}).eval()
mean = torch.tensor([0.43216, 0.394666, 0.37645]).view(3, 1, 1, 1)
std = torch.tensor([0.22803, 0.22145, 0.216989]).view(3, 1, 1, 1)
out = pathlib.Path({out!r}); out.mkdir(parents=True, exist_ok=True)
for video in sorted(pathlib.Path({videos!r}).glob("*.mp4")):
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    clip_all = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0   # T x C x H x W
    clip_all = F.interpolate(clip_all, size=(128, 171), mode="bilinear", align_corners=False)
    clip_all = clip_all.permute(1, 0, 2, 3)                                               # C x T x H x W
    clip_all = (clip_all - mean) / std
    top, left = (128 - 112) // 2, (171 - 112) // 2
    clip_all = clip_all[:, :, top:top + 112, left:left + 112]
    feats = []
    for start in range(0, clip_all.shape[1] - 16 + 1, 16):
        with torch.inference_mode():
            x = clip_all[:, start:start + 16].unsqueeze(0).contiguous()
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True)[0].numpy())
    np.save(out / (video.stem + ".npy"), np.stack(feats))
"""

def make_videos(root: Path, tiny: bool, seconds: float) -> list:
    sizes = [(64, 48)] * 2 if tiny else [(1280, 720)] * 4 + [(640, 272)] * 6 + [(176, 144)] * 2
    for i, (width, height) in enumerate(sizes):
        write_textured_video(root / f"v{i:02d}_{width}x{height}.mp4", 1.0 if tiny else seconds, width, height,
                             seed=i)
    return sizes


def save_model(name: str, kwargs: dict, folder: Path) -> Path:
    import video3d_zoo

    torch.manual_seed(0)
    model = video3d_zoo.create_model(name, **kwargs)
    # torchvision's preset is the reference route's input: 0-1, 128x171, crop 112, Kinetics mean/std
    model.config = model.config.replace(input_spec=video3d_zoo.INPUT_PRESETS["torchvision"])
    return video3d_zoo.save_pretrained(model, folder)


def routes(weights: Path, videos: Path, out: Path, bf16: bool, compiling: bool):
    extract = [sys.executable, "-m", "video3d_zoo", "extract", str(videos), "--weights", str(weights), "--quiet",
               "--last", "drop", "--clip-len", "16", "--stride", "16"]
    yield "reference (decode all, 1 stack at a time, eager fp32)", [
        sys.executable, "-c", REFERENCE_CHILD.format(weights=str(weights), videos=str(videos),
                                                     out=str(out / "reference"))], "reference"
    yield "zoo, no speed flags", extract + ["-o", str(out / "plain")], "plain"
    best = ["--fast"] + (["--precision", "bf16"] if bf16 else [])
    yield "zoo --fast" + (" --precision bf16" if bf16 else ""), extract + ["-o", str(out / "fast")] + best, "fast"
    if compiling:
        compiled = extract + best + ["--compile"]
        yield "zoo best flags + --compile (building)", compiled + ["-o", str(out / "build")], None
        yield "zoo best flags + --compile (library built)", compiled + ["-o", str(out / "compiled")], "compiled"


def run_timed(cmd, env) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))[:200]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def centred_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).min())


def compare(out: Path, key: str) -> tuple:
    """Smallest per-clip centred cosine of route ``key`` against the reference, and the clip count."""
    worst, clips = 1.0, 0
    for ref in sorted((out / "reference").glob("*.npy")):
        expected = np.load(ref)
        with np.load(out / key / (ref.stem + ".mp4.npz")) as data:  # extract names a file after its video
            got = data["features"]
        if got.shape != expected.shape:
            raise SystemExit(f"{key}: {ref.stem} has {got.shape} features, the reference {expected.shape}")
        worst, clips = min(worst, centred_cosine(got, expected)), clips + len(got)
    return worst, clips


def measure(name: str, kwargs: dict, work: Path, videos: Path, repeats: int, bf16: bool, compiling: bool):
    weights = save_model(name, kwargs, work / f"weights_{name}")
    rows = {}
    for run in range(repeats):
        out = work / f"{name}_run{run}"
        env = {**os.environ, "VIDEO3D_ZOO_HOME": str(work / f"home_{name}_{run}")}
        for label, cmd, key in routes(weights, videos, out, bf16, compiling):
            # The first --compile run is what a user gets: eager batches while another process builds the
            # library.  A build still running when the run ends is waited for (untimed), so that it takes
            # no cycles from the next route, which then finds the library.
            rows.setdefault(label, {"times": [], "key": key})["times"].append(run_timed(cmd, env))
            wait_for_builds(Path(env["VIDEO3D_ZOO_HOME"]))
        for row in rows.values():
            if row["key"] and row["key"] != "reference":
                row["cos"], row["clips"] = compare(out, row["key"])
    return rows


def report(name: str, rows: dict, csv_path, machine: str) -> None:
    base = statistics.median(next(iter(rows.values()))["times"])
    for label, row in rows.items():
        median = statistics.median(row["times"])
        cos = f"   centred cosine >= {row['cos']:.5f} over {row['clips']} clips" if "cos" in row else ""
        print(f"  {label:48s} {median:7.2f} s  {base / median:5.2f}x{cos}")
        if csv_path:
            new = not Path(csv_path).exists()
            with open(csv_path, "a", newline="") as fh:
                writer = csv.writer(fh)
                if new:
                    writer.writerow(["date", "machine", "torch", "model", "route", "runs", "wall_s",
                                     "speedup_vs_reference", "min_centred_cosine"])
                writer.writerow([datetime.date.today().isoformat(), machine, torch.__version__, name, label,
                                 len(row["times"]), f"{median:.2f}", f"{base / median:.3f}",
                                 f"{row['cos']:.6f}" if "cos" in row else ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--models", default="r2plus1d_18,resnet3d_50", help="comma-separated model names")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video (default 10)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of every route (median; default 3, 1 tiny)")
    parser.add_argument("--no-compile", action="store_true", help="skip the --compile routes")
    parser.add_argument("--csv", default=None, help="append the rows to this CSV file")
    args = parser.parse_args()
    if args.repeats is not None and not 1 <= args.repeats <= 20:
        parser.error(f"--repeats must be between 1 and 20, got {args.repeats}")
    if not 0.5 <= args.seconds <= 600:
        parser.error(f"--seconds must be between 0.5 and 600, got {args.seconds}")
    from video3d_zoo.inference.bench import machine_description
    from video3d_zoo.inference.compiled import available
    from video3d_zoo.inference.precision import bf16_supported

    repeats = args.repeats or (1 if args.tiny else 3)
    bf16 = bf16_supported(torch.device("cpu"))
    models = ["r2plus1d_18"] if args.tiny else [m.strip() for m in args.models.split(",") if m.strip()]
    machine = f"{machine_description()}, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "videos").mkdir()
        sizes = make_videos(work / "videos", args.tiny, args.seconds)
        print(f"{len(sizes)} videos ({', '.join(sorted({f'{w}x{h}' for w, h in sizes}))}; "
              f"{'1' if args.tiny else f'{args.seconds:g}'} s at 30 fps); {machine}; whole processes, "
              f"median of {repeats} run(s); speed-up against the reference route")
        for name in models:
            kwargs = {"widen_factor": 0.125} if args.tiny and name.startswith("resnet") else {}
            print(f"{name}:")
            rows = measure(name, kwargs, work, work / "videos", repeats, bf16,
                           available() and not args.no_compile and not args.tiny)
            report(name, rows, args.csv, machine)


if __name__ == "__main__":
    main()
