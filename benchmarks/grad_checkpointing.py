#!/usr/bin/env python3
"""Peak activation memory of one training step, with and without activation checkpointing.

    python benchmarks/grad_checkpointing.py            # resnet3d_50 (16 frames), resnext3d_101 (64 frames)
    python benchmarks/grad_checkpointing.py --tiny     # resnet3d_10 at tiny width (smoke run for the tests)

Each variant - ``off``, ``stage`` (``model.set_grad_checkpointing(True)``) and ``block``
(``set_grad_checkpointing(True, granularity="block")``) - runs in its own fresh process, all in
one run of this script.  A process builds the model in training mode, runs a warm-up step on
a small clip (libraries, thread pools and kernels initialise outside the measurement), keeps
every parameter's ``.grad`` allocated (so gradients are not counted), allocates the input and
target, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs one step (forward,
cross-entropy, backward, SGD update) and reads the peak (``VmHWM``).  *Activation memory* is
that peak minus the resident size just before the step: the activations kept for the backward
pass, the recomputed ones and the kernels' temporaries.  glibc is told to serve every allocation above 64 KiB with ``mmap``
(``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the resident set at once and RSS follows
the live tensors.  CPU only (on CUDA, ``torch.cuda.max_memory_allocated`` would be the measure).

Writes results/grad_checkpointing.csv (machine, torch version and date in every row).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("off", "stage", "block")
# model, batch size, frames, crop size, architecture arguments
FULL_CASES = [("resnet3d_50", 8, 16, 112, {}), ("resnext3d_101", 2, 64, 112, {})]
TINY_CASES = [("resnet3d_10", 2, 8, 32, {"widen_factor": 0.25})]
FIELDS = ["model", "variant", "batch_size", "frames", "size", "activation_mib", "saving_vs_off", "peak_rss_mib",
          "baseline_rss_mib", "step_s", "threads", "torch_version", "machine", "date"]


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak resident set size (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def child(case: dict) -> None:
    """One variant in this (fresh) process: print a JSON line with its measurements."""
    import gc

    import torch

    import video3d_zoo

    torch.manual_seed(0)
    model = video3d_zoo.create_model(case["model"], num_classes=400, **case["kwargs"]).train()
    if case["variant"] != "off":
        model.set_grad_checkpointing(True, granularity=case["variant"])
    x = torch.randn(case["batch"], 3, case["frames"], case["size"], case["size"])
    target = torch.randint(0, 400, (case["batch"],))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    # warm-up on a small clip: libraries, thread pools and kernels initialise outside the measurement
    mt, mh, mw = model.min_input_size
    small = torch.randn(2, 3, max(mt, 4), max(mh, 32), max(mw, 32))
    model(small).sum().backward()
    del small
    for p in model.parameters():
        p.grad.zero_()  # allocated now, so the measured step does not count gradients
    gc.collect()
    baseline = _rss_kib("VmRSS")
    exact = _reset_peak()
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    optimizer.step()
    elapsed = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    if not exact:  # without clear_refs the mark may hold an earlier peak; VmHWM >= the step's peak
        print("warning: /proc/self/clear_refs not writable; the peak may predate the step", file=sys.stderr)
    print(json.dumps({"baseline_rss_mib": baseline / 1024, "peak_rss_mib": peak / 1024,
                      "activation_mib": (peak - baseline) / 1024, "step_s": elapsed,
                      "threads": torch.get_num_threads(), "torch_version": torch.__version__,
                      "finite": bool(torch.isfinite(loss))}))


def run_variant(model: str, variant: str, batch: int, frames: int, size: int, kwargs: dict) -> dict:
    case = {"model": model, "variant": variant, "batch": batch, "frames": frames, "size": size, "kwargs": kwargs}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(case)], capture_output=True,
                            text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{model} / {variant} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if not measured.pop("finite"):
        raise RuntimeError(f"{model} / {variant}: non-finite loss")
    return {"model": model, "variant": variant, "batch_size": batch, "frames": frames, "size": size, **measured}


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cpus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="one tiny model, small clips: keeps the script working")
    parser.add_argument("--out", default=None, help="CSV to write (default: results/grad_checkpointing.csv, "
                        "not written with --tiny)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    rows = []
    for model, batch, frames, size, kwargs in (TINY_CASES if args.tiny else FULL_CASES):
        off = None
        for variant in VARIANTS:
            row = run_variant(model, variant, batch, frames, size, kwargs)
            off = row["activation_mib"] if variant == "off" else off
            row["saving_vs_off"] = 1.0 - row["activation_mib"] / off if off else 0.0
            row.update(machine=machine(), date=datetime.date.today().isoformat())
            rows.append(row)
            print(f"{model:>14} {batch}x3x{frames}x{size}x{size}  {variant:>5}: activations "
                  f"{row['activation_mib']:8.1f} MiB ({row['saving_vs_off']:+.0%} saved vs off), "
                  f"peak RSS {row['peak_rss_mib']:8.1f} MiB, step {row['step_s']:.2f} s", flush=True)
    if not args.tiny or args.out:
        out = Path(args.out or ROOT / "results" / "grad_checkpointing.csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
