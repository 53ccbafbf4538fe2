#!/usr/bin/env python3
"""The same compiled library with its weights where AOTInductor puts them, and moved to aligned memory.

AOTInductor copies a CPU library's constants into one ``std::malloc`` block (16-byte aligned) at
64-byte offsets, and oneDNN reads the packed convolution weights straight from it; when the block
starts off a cache line, every weight load straddles two.  :class:`LibraryRunner` moves them to
aligned memory when it loads a library (:mod:`video3d_zoo.inference.compiled_call`).  This script
loads one library into several runners in one process: runners with the move switched off until one
lands off a cache line (malloc decides; usually the first or second), and one as shipped; then it
times them interleaved, call by call, and prints each one's median and the ratio.

    python benchmarks/aligned_weights.py                   # resnet3d_50, bf16, batch 8 x 16x112x112
    python benchmarks/aligned_weights.py --precision fp32
    python benchmarks/aligned_weights.py --tiny            # a narrow resnet3d_10 on small clips
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def runners(library, off_line_tries: int = 8):
    """(a runner whose weights sit off a cache line, or None, one whose weights were moved)."""
    from video3d_zoo.inference import compiled_call

    real = compiled_call.aligned_copies
    kept, off_line = [], None
    compiled_call.aligned_copies = lambda constants: None  # leave them where the library put them
    try:
        for _ in range(off_line_tries):  # each new malloc block may start elsewhere
            runner = compiled_call.LibraryRunner(library)
            kept.append(runner)
            if real(runner.constants()) is not None:
                off_line = runner
                break
    finally:
        compiled_call.aligned_copies = real
    return off_line, compiled_call.LibraryRunner(library)


def main() -> None:
    from video3d_zoo.cli.argtypes import int_in

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet3d_50")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--repeats", type=int_in(1, 1000), default=7, help="timed calls per runner, 1 to 1000")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()

    import video3d_zoo
    from video3d_zoo.inference import compiled
    from video3d_zoo.inference.bench import machine_description
    from video3d_zoo.inference.memory import reuse_freed_memory
    from video3d_zoo.inference.prepare import optimize_for_inference
    from video3d_zoo.models.registry import family_of

    reuse_freed_memory()  # as the video3d-zoo command does
    kwargs, batch, shape = {}, 8, (3, 16, 112, 112)
    if args.tiny:
        args.model, batch, shape, args.repeats = "resnet3d_10", 2, (3, 4, 32, 32), 2
        kwargs = dict(family_of(args.model).tiny_kwargs or {})
    torch.manual_seed(0)
    model = video3d_zoo.create_model(args.model, **kwargs).eval()
    fast = optimize_for_inference(model, precision=args.precision, compile=True, batch_size=batch)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    example = compiled.example_input(batch, shape, dtype)
    with tempfile.TemporaryDirectory() as home:
        built, _ = compiled.load_or_build(fast._network, "forward", example, home=Path(home),
                                          weights_digest=fast.weights_digest())
        print(f"{args.model}, compiled {args.precision}, batch {batch} x {'x'.join(map(str, shape[1:]))}; "
              f"{machine_description()}, {torch.get_num_threads()} threads")
        if not hasattr(built, "constants"):
            print("this torch's libraries are called through torch's runner: nothing to compare")
            return
        off_line, moved = runners(built.path)
        if off_line is None:
            print("every block malloc gave started on a cache line: nothing to compare")
            return
        times = {"weights where the library put them": [], "weights moved to aligned memory": []}
        with torch.inference_mode():
            expected = off_line.run([example])[0]
            same = torch.equal(moved.run([example])[0], expected)
            for _ in range(args.repeats):
                for (label, spent), runner in zip(times.items(), (off_line, moved)):
                    start = time.perf_counter()
                    runner.run([example])
                    spent.append(time.perf_counter() - start)
    medians = {label: statistics.median(spent) * 1000 for label, spent in times.items()}
    for label, ms in medians.items():
        print(f"  {label:36s} {ms:8.1f} ms per batch")
    slow, fast_ms = medians.values()
    print(f"  moved: {slow / fast_ms:.2f}x faster; outputs bit-identical: {same}")


if __name__ == "__main__":
    main()
