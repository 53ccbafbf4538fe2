#!/usr/bin/env python3
"""Cold start: fresh process -> pretrained model ready, zoo path vs the original-code path.

Measured side by side in one run, each variant in fresh subprocesses, interleaved, ``--repeats``
times (median reported; the machines are noisy, so read the ratios, not the absolute times):

* ``zoo``: ``import video3d_zoo; create_model(MODEL, pretrained=True)`` from a warm
  huggingface_hub cache (meta-device build, safetensors, ``load_state_dict(assign=True)``, size
  check + verified-hash marker, zero network requests: the local server is stopped first).
* ``zoo, full sha256``: the same with ``VIDEO3D_ZOO_VERIFY=always`` (hash the file on every load).
* ``reference``: random initialisation + ``torch.load`` of a ``.pth`` in the original 2020 layout
  (``{"epoch", "arch", "state_dict", "optimizer", "scheduler"}`` with SGD momentum buffers, as
  3D-ResNets-PyTorch ``main.py`` saves it) + ``load_state_dict``.
* ``reference, state_dict only``: the same ``.pth`` without optimizer and scheduler state.

The clock starts at the first line of the child (before ``import torch`` / ``import video3d_zoo``)
and stops when the model is ready in eval mode; the parent also reports whole-process wall time.

It also reports whether ``torch._dynamo`` gets imported: after ``import video3d_zoo``, after a
meta-device build with initialisation skipped, after a full pretrained load, and when the builder
runs *with* its initialisation code under ``torch.device("meta")`` (the trap in perf-facts.md).

    python benchmarks/cold_start.py [--model resnet3d_50] [--repeats 5]
    python benchmarks/cold_start.py --tiny     # resnet3d_10, one repeat (smoke run for the tests)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ZOO = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import sys
    import torch
    t_torch = time.perf_counter()
    import video3d_zoo
    model = video3d_zoo.create_model(sys.argv[1], pretrained=True)
    t1 = time.perf_counter()
    import json
    print(json.dumps({"seconds": t1 - t0, "beyond_torch": t1 - t_torch, "dynamo": "torch._dynamo" in sys.modules,
                      "params": sum(p.numel() for p in model.parameters())}))
""")

REFERENCE = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import sys
    import torch
    t_torch = time.perf_counter()
    import video3d_zoo
    model = video3d_zoo.create_model(sys.argv[1], num_classes=int(sys.argv[3]))  # random initialisation
    checkpoint = torch.load(sys.argv[2], map_location="cpu")
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    t1 = time.perf_counter()
    import json
    print(json.dumps({"seconds": t1 - t0, "beyond_torch": t1 - t_torch, "dynamo": "torch._dynamo" in sys.modules,
                      "params": sum(p.numel() for p in model.parameters())}))
""")

DYNAMO = textwrap.dedent("""
    import sys, json
    step = sys.argv[1]
    import torch
    import video3d_zoo
    from video3d_zoo.models.config import ModelConfig
    from video3d_zoo.models.registry import get_model_spec
    from video3d_zoo.weights.loading import build_empty
    if step == "meta_build_no_init":
        build_empty(ModelConfig(architecture=sys.argv[2], num_classes=700))
    elif step == "meta_build_with_init":
        with torch.device("meta"):
            get_model_spec(sys.argv[2]).builder(num_classes=700)
    elif step == "pretrained_load":
        video3d_zoo.create_model(sys.argv[2], pretrained=True)
    print(json.dumps({"dynamo": "torch._dynamo" in sys.modules}))
""")


def run_child(code: str, args, env) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def prepare(work: Path, model_name: str):
    """Random weights -> converted folder served by a local Hub, a warm cache, and original .pth files."""
    import torch

    import video3d_zoo
    from hub_server import HubServer
    from video3d_zoo.weights.manifest import dumps
    from video3d_zoo.weights.loading import save_pretrained

    num_classes = 700
    model = video3d_zoo.create_model(model_name, num_classes=num_classes)
    folder = save_pretrained(model, work / "converted")
    data = (folder / "model.safetensors").read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    # original 2020 layout, with the SGD momentum buffers its main.py saves
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [50, 100, 150])
    arch = "resnet-" + model_name.rsplit("_", 1)[-1]
    full = work / "r3d_K_200ep.pth"
    torch.save({"epoch": 200, "arch": arch, "state_dict": sd, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, full)
    light = work / "r3d_K_200ep_state_dict_only.pth"
    torch.save({"epoch": 200, "arch": arch, "state_dict": sd}, light)

    server = HubServer().start()
    commit = server.add_file("bench/" + model_name, "model.safetensors", data)
    entry = {"model": model_name, "tag": "bench_16f", "default": True, "arch_kwargs": {},
             "num_classes": num_classes, "labels": None, "labels_source": "random weights",
             "input_spec": model.config.input_spec.to_dict(),
             "hub": {"repo_id": "bench/" + model_name, "filename": "model.safetensors", "revision": commit,
                     "sha256": sha, "size": len(data)}}
    manifest = work / "weights_manifest.json"
    manifest.write_text(dumps({"schema_version": 1, "entries": [entry]}), encoding="utf-8")
    env = {**os.environ, "HF_HOME": str(work / "hf_home"), "HF_ENDPOINT": server.endpoint,
           "VIDEO3D_ZOO_MANIFEST": str(manifest), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "NO_PROXY": "127.0.0.1,localhost", "PYTHONPATH": str(ROOT)}
    run_child(ZOO, [model_name], env)  # fills the cache and the verified-hash marker
    requests = server.count
    server.stop()  # from here on, nothing can be fetched: the warm path must not need the network
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    sizes = {"safetensors": len(data), "pth": full.stat().st_size, "pth_light": light.stat().st_size}
    return env, full, light, num_classes, sizes, requests


def write_rows(path: Path, model: str, repeats: int, seconds: dict, beyond: dict) -> None:
    import csv
    import datetime

    import torch

    from video3d_zoo.inference.bench import machine_description

    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["date", "machine", "torch", "model", "repeats", "variant", "seconds", "beyond_torch_s"])
        for name in seconds:
            writer.writerow([datetime.date.today().isoformat(), machine_description(),
                             torch.__version__, model, repeats, name, f"{seconds[name]:.4f}", f"{beyond[name]:.4f}"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet3d_50")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="resnet3d_10, one repeat: a smoke run (CI)")
    parser.add_argument("--csv", default=None, help="write the medians to this CSV file (replaced)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.repeats = "resnet3d_10", 1

    with tempfile.TemporaryDirectory(prefix="cold_start_") as tmp:
        work = Path(tmp)
        env, full, light, num_classes, sizes, requests = prepare(work, args.model)
        always = {**env, "VIDEO3D_ZOO_VERIFY": "always"}
        variants = {
            "zoo (warm cache, marker)": (ZOO, [args.model], env),
            "zoo (warm cache, full sha256)": (ZOO, [args.model], always),
            "reference (.pth with optimizer)": (REFERENCE, [args.model, full, num_classes], env),
            "reference (.pth state_dict only)": (REFERENCE, [args.model, light, num_classes], env),
        }
        if args.tiny:  # the two main variants only
            variants = {k: v for k, v in variants.items() if "full sha256" not in k and "only" not in k}
        results = {name: [] for name in variants}
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits every variant
            for name, (code, child_args, child_env) in variants.items():
                results[name].append(run_child(code, child_args, child_env))

        print(f"{args.model}: safetensors {sizes['safetensors'] / 1e6:.0f} MB, original .pth "
              f"{sizes['pth'] / 1e6:.0f} MB ({sizes['pth_light'] / 1e6:.0f} MB without optimizer state); "
              f"median of {args.repeats} fresh processes; cache filled with {requests} requests, then the "
              "server was stopped")
        print(f"{'variant':36s} {'import->ready':>14s} {'beyond torch':>13s} {'process wall':>13s}  "
              "torch._dynamo imported")
        med, beyond = {}, {}
        for name, runs in results.items():
            med[name] = statistics.median(r["seconds"] for r in runs)
            beyond[name] = statistics.median(r["beyond_torch"] for r in runs)
            wall = statistics.median(r["wall"] for r in runs)
            print(f"{name:36s} {med[name]:13.3f}s {beyond[name]:12.3f}s {wall:12.3f}s  "
                  f"{any(r['dynamo'] for r in runs)}")
        zoo, ref = med["zoo (warm cache, marker)"], med["reference (.pth with optimizer)"]
        print(f"ratio zoo / reference (.pth with optimizer): {zoo / ref:.2f}")
        ready = beyond["reference (.pth with optimizer)"] / beyond["zoo (warm cache, marker)"]
        print(f"beyond import torch, the zoo's model is ready {ready:.1f}x sooner than the reference's")
        if args.csv:
            write_rows(Path(args.csv), args.model, args.repeats, med, beyond)
        if not args.tiny:
            print(f"ratio zoo / reference (state_dict only):     {zoo / med['reference (.pth state_dict only)']:.2f}")
            print(f"ratio zoo full-sha256 / zoo marker:           {med['zoo (warm cache, full sha256)'] / zoo:.2f}")

        print("\ntorch._dynamo in sys.modules after (fresh process each):")
        for step in ("import_only", "meta_build_no_init", "meta_build_with_init", "pretrained_load"):
            print(f"  {step:22s} {run_child(DYNAMO, [step, args.model], env)['dynamo']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
