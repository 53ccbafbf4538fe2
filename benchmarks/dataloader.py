"""Data-loader throughput against the model's training step rate, measured in one run.

Writes short-side-128 mp4s (the synthetic generator at 128x128, H.264), then measures

1. decoding + augmenting 16-frame training clips (PyAV decode at short side 128, temporal random
   crop, multi-scale corner crop to 112, flip, normalisation) in the main process: clips per
   second of one worker;
2. the same through ``torch.utils.data.DataLoader`` with N workers (total and per worker);
3. training steps (forward + backward + SGD) of the model on random clips of the same shape;

and prints how many loader workers it takes to keep the model busy.  Machines are noisy: compare
the numbers of one run with each other, not across runs.

    python benchmarks/dataloader.py [--model resnet3d_18] [--batch 8] [--workers 1 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet3d_18", help="registered model name")
    p.add_argument("--widen-factor", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=8, help="clips per training step")
    p.add_argument("--frames", type=int, default=16, help="clip length")
    p.add_argument("--crop", type=int, default=112)
    p.add_argument("--short-side", type=int, default=128, help="side of the generated (square) videos")
    p.add_argument("--video-frames", type=int, default=64, help="frames per generated video")
    p.add_argument("--videos", type=int, default=2, help="generated videos per class (8 classes)")
    p.add_argument("--clips", type=int, default=48, help="clips decoded per loader measurement")
    p.add_argument("--steps", type=int, default=4, help="timed training steps (after one warm-up step)")
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="DataLoader worker counts to time")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the model (0 = default)")
    p.add_argument("--data", help="use this folder of mp4s (folder-per-class layout) instead of generating")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run with tiny settings (CI)")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.widen_factor, args.batch, args.frames, args.crop = "resnet3d_10", 0.125, 2, 4, 32
        args.short_side, args.video_frames, args.videos, args.clips, args.steps = 48, 8, 1, 4, 1
        args.workers = [1]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from video3d_zoo import create_model
    from video3d_zoo.models.config import InputSpec
    from video3d_zoo.jobs.synthetic import make_synthetic
    from video3d_zoo.train.config_schema import DataSection
    from video3d_zoo.train.data import ShardedBatchSampler, TrainClips, collate_train, make_sampling, worker_init
    from video3d_zoo.train.readers import read_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    if args.data:
        root = Path(args.data)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="v3dz-bench-")
        root = make_synthetic(tmp.name, videos_per_class=args.videos, seed=0, size=args.short_side,
                              frames=args.video_frames, test_fraction=0.0)
    videos = read_folder(root, "train" if (root / "train.txt").is_file() else "all")
    spec = InputSpec(frames=args.frames, crop_size=args.crop, resize=args.short_side)
    sampling = make_sampling(DataSection(root=str(root), train_crop="corner", hflip=True), spec)
    dataset = TrainClips(videos, sampling, seed=0)
    n = len(videos)

    # 1. one worker = the main process, one clip at a time
    dataset[(0, 0)]  # warm-up (imports, codec init)
    t0 = time.perf_counter()
    for i in range(args.clips):
        dataset[(i % n, i // n)]
    main_rate = args.clips / (time.perf_counter() - t0)

    # 2. DataLoader with N workers
    loader_rates = {}
    for workers in args.workers:
        batch = max(1, min(args.batch, n))
        sampler = ShardedBatchSampler(n, batch, seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                             collate_fn=collate_train, worker_init_fn=worker_init,
                                             prefetch_factor=4 if workers else None)
        clips, epoch = 0, 0
        started = None
        while clips < args.clips:
            sampler.set_epoch(epoch)
            for b in loader:
                if started is None:  # exclude worker start-up and the first batch
                    started = time.perf_counter()
                    continue
                clips += len(b["label"])
                if clips >= args.clips:
                    break
            epoch += 1
        total = clips / (time.perf_counter() - started)
        loader_rates[workers] = {"clips_per_s": total, "clips_per_s_per_worker": total / max(1, workers)}

    # 3. the model's training steps on clips of the same shape
    model = create_model(args.model, num_classes=8, **({"widen_factor": args.widen_factor}
                                                        if args.widen_factor != 1.0 else {}))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, args.frames, args.crop, args.crop)
    y = torch.randint(0, 8, (args.batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_s = (time.perf_counter() - t0) / args.steps
    model_rate = args.batch / step_s

    result = {
        "videos": f"{n} mp4s, {args.short_side}x{args.short_side}, {args.video_frames} frames, H.264",
        "clip": f"{args.frames}x{args.crop}x{args.crop}",
        "torch_threads": torch.get_num_threads(),
        "loader_main_process_clips_per_s": round(main_rate, 2),
        "loader_workers": {str(k): {kk: round(vv, 2) for kk, vv in v.items()} for k, v in loader_rates.items()},
        "model": args.model + (f" widen {args.widen_factor}" if args.widen_factor != 1.0 else ""),
        "model_batch": args.batch,
        "model_step_s": round(step_s, 4),
        "model_clips_per_s": round(model_rate, 2),
        "workers_needed": round(model_rate / main_rate, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"videos: {result['videos']}; clips {result['clip']}; torch threads {result['torch_threads']}")
        print(f"data loader, one worker (main process): {main_rate:.1f} clips/s")
        for k, v in loader_rates.items():
            print(f"data loader, {k} worker(s): {v['clips_per_s']:.1f} clips/s in all, "
                  f"{v['clips_per_s_per_worker']:.1f} clips/s per worker")
        print(f"model {result['model']}, batch {args.batch}: {step_s * 1000:.0f} ms per training step = "
              f"{model_rate:.1f} clips/s")
        print(f"=> about {result['workers_needed']:.2f} loader worker(s) keep one training process busy "
              "(on a machine with spare cores for them)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
