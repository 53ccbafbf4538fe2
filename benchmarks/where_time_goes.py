"""Where a compiled bf16 batch spends its time, convolution by convolution, against the bf16 matmul peak.

Runs one model's compiled entry point (AOTInductor, freezing, bf16: ``optimize_for_inference(...,
compile=True)``) with oneDNN's execution profile on (``ONEDNN_VERBOSE=profile_exec``) in a child
process, groups the primitives it ran by shape (input/output channels, kernel, output size, stride,
fused sum) and prints each group's milliseconds, its share of the batch and its GFLOP/s as a
fraction of the bf16 matmul peak measured in the same process (float32 on a CPU without bf16).  What is not oneDNN (pooling, the
input's cast and layout, inductor's own loops) is the difference between the batch's wall time and
the primitives' total.  ``--no-space-to-depth`` runs the stem as the plain convolution, for the
before/after of :mod:`video3d_zoo.inference.space_to_depth`.

    python benchmarks/where_time_goes.py                          # resnet3d_50, batch 8, 16x112x112
    python benchmarks/where_time_goes.py --model r2plus1d_18 --no-space-to-depth
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

CHILD = """
import sys, time, torch, video3d_zoo
from video3d_zoo.inference import prepare
from video3d_zoo.inference.bench import matmul_peak_gflops
from video3d_zoo.inference.memory import reuse_freed_memory
reuse_freed_memory()  # as the video3d-zoo command does: otherwise page faults land inside the primitives
if {plain}:
    prepare.use_space_to_depth = lambda device, precision: False
torch.manual_seed(0)
model = video3d_zoo.create_model({model!r}, **{kwargs!r}).eval()
fast = prepare.optimize_for_inference(model, precision={precision!r}, compile=True, batch_size={batch})
x = torch.randn({batch}, 3, {frames}, {size}, {size})
with torch.inference_mode():
    for _ in range(3):
        fast(x)
    peak = matmul_peak_gflops(torch.bfloat16 if {precision!r} == "bf16" else torch.float32, torch.device("cpu"))
    print("=====START", flush=True)
    start = time.perf_counter()
    fast(x)
    wall = time.perf_counter() - start
print(f"=====END {{wall * 1000:.3f}} {{peak:.1f}}", flush=True)
"""

_SHAPE = re.compile(r"mb(\d+)_ic(\d+)oc(\d+)_id\d+od(\d+)kd(\d+)sd(\d+).*?_ih\d+oh(\d+)kh(\d+)sh(\d+)"
                    r".*?_iw\d+ow(\d+)kw(\d+)")


def profile(args) -> str:
    code = CHILD.format(plain=args.no_space_to_depth, model=args.model, batch=args.batch_size,
                        frames=args.frames, size=args.size, kwargs=args.model_kwargs, precision=args.precision)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ONEDNN_VERBOSE": "profile_exec", "VIDEO3D_ZOO_HOME": home,
               "VIDEO3D_ZOO_COMPILE_IN_PROCESS": "1"}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return result.stdout


def groups(log: str):
    """(label, count, milliseconds, multiply-adds) per shape of the primitives run in the timed call."""
    timed = log.split("=====START", 1)[1].split("=====END", 1)[0]
    table = collections.OrderedDict()
    for line in timed.splitlines():
        if not line.startswith("onednn_verbose") or ",exec," not in line:
            continue
        fields = line.split(",")
        ms, desc = float(fields[-1]), fields[-2]
        match = _SHAPE.search(desc) if fields[5] == "convolution" else None
        if match:
            mb, ic, oc, od, kd, sd, oh, kh, sh, ow, kw = map(int, match.groups())
            label = (f"conv {ic}->{oc} k{kd}x{kh}x{kw} s{sd}x{sh} out {od}x{oh}x{ow}"
                     + (" +sum" if "sum" in line.split("post-ops:")[-1] else ""))
            macs = mb * ic * oc * od * oh * ow * kd * kh * kw
        else:
            label, macs = f"{fields[5]} {desc[:40]}", 0
        entry = table.setdefault(label, [0, 0.0, 0])
        entry[0] += 1
        entry[1] += ms
        entry[2] += macs
    return [(label, n, ms, macs) for label, (n, ms, macs) in table.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet3d_50")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--no-space-to-depth", action="store_true", help="the stem as a plain convolution")
    parser.add_argument("--tiny", action="store_true", help="a narrow resnet3d_18 on small clips (smoke run)")
    args = parser.parse_args()
    import torch

    from video3d_zoo.inference.precision import bf16_supported
    from video3d_zoo.models.registry import family_of

    args.model_kwargs = {}
    if args.tiny:
        args.model, args.batch_size, args.frames, args.size = "resnet3d_18", 2, 8, 56
        args.model_kwargs = dict(family_of(args.model).tiny_kwargs or {})
    # bf16 is what this measures; a CPU without it gets the float32 breakdown, said so below
    args.precision = "bf16" if bf16_supported(torch.device("cpu")) else "fp32"
    log = profile(args)
    wall_ms, peak = map(float, log.split("=====END", 1)[1].split()[:2])
    rows = groups(log)
    onednn = sum(ms for _, _, ms, _ in rows)
    from video3d_zoo.inference.bench import machine_description

    print(f"{args.model}, compiled {args.precision}, batch {args.batch_size} x {args.frames}x{args.size}x{args.size}; "
          f"{machine_description()}; {args.precision} matmul peak {peak:.0f} GFLOP/s (same process)")
    print(f"batch {wall_ms:.1f} ms: oneDNN primitives {onednn:.1f} ms, the rest {wall_ms - onednn:.1f} ms")
    print(f"{'primitive group':58s} {'n':>3s} {'ms':>7s} {'share':>6s} {'GFLOP/s':>8s} {'of peak':>7s}")
    for label, n, ms, macs in sorted(rows, key=lambda r: -r[2]):
        rate = 2 * macs / ms / 1e6 if macs else float("nan")
        print(f"{label:58s} {n:3d} {ms:7.2f} {ms / wall_ms:6.1%} {rate:8.0f} {rate / peak:7.1%}")
    print("by kind: " + ", ".join(f"{kind} x{n} {ms:.1f} ms ({ms / wall_ms:.0%}, {2 * macs / ms / 1e6:.0f} GFLOP/s)"
                                  for kind, (n, ms, macs) in by_kind(rows).items() if macs)
          + f", not oneDNN {wall_ms - onednn:.1f} ms ({(wall_ms - onednn) / wall_ms:.0%})")


def by_kind(rows):
    """(count, milliseconds, multiply-adds) of the stem (the first primitive run), and of the other
    convolutions by kernel size."""
    kinds = collections.OrderedDict()
    for index, (label, n, ms, macs) in enumerate(rows):
        kernel = re.search(r" k(\d+x\d+x\d+) ", label)
        kind = "stem" if index == 0 else (kernel.group(1) if kernel else label.split()[0])
        count, total, work = kinds.get(kind, (0, 0.0, 0))
        kinds[kind] = (count + n, total + ms, work + macs)
    return kinds


if __name__ == "__main__":
    main()
