"""Inference speed of the fast-path variants against plain eager fp32, side by side in one run.

    python benchmarks/inference_speed.py                 # the four reported models, full size
    python benchmarks/inference_speed.py --tiny          # seconds-long smoke run (used by CI)

Writes results/inference_<device>.csv (machine, torch version and date in every row).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from video3d_zoo.inference.bench import format_rows, run_benchmark, write_csv

REPORTED = ["r3d_18", "resnet3d_50", "r2plus1d_18", "resnext3d_101"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="small inputs, no compile: keeps the script working")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.tiny:
        rows = run_benchmark(["resnet3d_10"], batch_size=2, frames=4, size=32, repeats=1, compile=False)
    else:
        torch.set_num_threads(torch.get_num_threads())
        rows = run_benchmark(REPORTED, batch_size=8, frames=16, size=112, repeats=3)
    print(format_rows(rows))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out or f"results/inference_{device}{'_tiny' if args.tiny else ''}.csv")
    if not args.tiny or args.out:
        write_csv(rows, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
