"""Post-training int8 quantization on the CPU against the compiled bf16 fast path, side by side in one run.

Paths, all computing the pooled features ``forward_head(forward_features(x), pre_logits=True)``:

* ``eager_fp32``     - the plain model, the reference for speed ratios and for accuracy;
* ``fast_bf16``      - ``optimize_for_inference(precision="bf16")`` (BN folded, channels_last_3d, autocast);
* ``compiled_bf16``  - the same with ``compile=True`` (inductor, freezing);
* ``int8_pt2e``      - PT2E static quantization with torchao's ``X86InductorQuantizer`` (default config:
  per-channel symmetric int8 weights, per-tensor uint8 activations, min/max observers), calibrated
  on decoded clips, then ``torch.compile`` with freezing - the documented oneDNN int8 route;
* ``int8_conv3d``    - the BN-folded model with every Conv3d hand-lowered to oneDNN's int8 convolution
  (``onednn::qconv_pointwise``, min/max-calibrated per-tensor uint8 activations, per-channel int8
  weights), because neither torchao's quantizer nor inductor's lowering handles Conv3d (see
  docs/int8.md).  The convolution is an opaque custom op (``onednn::qconv_prepack`` has no fake-tensor
  support), so ``torch.compile`` with freezing fuses the quantize step into the ReLU/residual-add
  kernels around it.  A feasibility probe, not a library path.

Random-init weights (nothing pretrained is downloadable here) have BatchNorm running statistics of
an untrained net; they are first re-estimated in train mode on clips of textured moving video, so
activation ranges resemble a trained model's.  Calibration, BN re-estimation and evaluation use
separate videos.  Accuracy: per-clip cosine of centred pooled features (the fp32 per-dimension mean
over the evaluation clips subtracted from both), min and mean.

    python benchmarks/int8_evaluation.py                      # resnet3d_50, batch 8, 3x16x112x112
    python benchmarks/int8_evaluation.py --models resnet3d_18 r2plus1d_18 --csv
    python benchmarks/int8_evaluation.py --tiny               # seconds-long smoke run (CI)
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as _dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import av
import numpy as np
import torch
import torch._dynamo
from torch import nn

from video3d_zoo.api import create_model
from video3d_zoo.inference.bench import machine_description
from video3d_zoo.inference.prepare import fuse_conv_bn, optimize_for_inference
from video3d_zoo.io import iter_video_clips


class PooledFeatures(nn.Module):
    """``forward`` = pooled pre-logit features, so every path (and compile) computes the same thing."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


# ----------------------------------------------------------------------------- real-looking clips

def _pink_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """RGB 1/f noise (natural-image spectrum), uint8."""
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width)) ** 1.1
    out = []
    for _ in range(3):
        phase = np.exp(2j * np.pi * rng.random((height, width)))
        channel = np.real(np.fft.ifft2(amplitude * phase))
        out.append((channel - channel.mean()) / (channel.std() + 1e-8))
    image = np.stack(out, -1) @ rng.normal(0.0, 0.5, (3, 3)) + rng.normal(0.0, 0.4, 3)
    return np.clip(127.5 + 45.0 * image, 0, 255).astype(np.uint8)


def write_textured_video(path: Path, seed: int, frames: int, width: int = 320, height: int = 240,
                         fps: int = 25) -> Path:
    """H.264 video: a panning 1/f-noise background with two textured objects moving across it."""
    rng = np.random.default_rng(seed)
    background = _pink_texture(rng, height + 64, width + 64)
    objects = [(_pink_texture(rng, 72, 72), rng.uniform(0, width - 72, 2), rng.uniform(-4, 4, 2)) for _ in range(2)]
    pan = rng.uniform(-2, 2, 2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            oy, ox = (np.array([32, 32]) + pan * i).astype(int) % 64
            image = background[oy:oy + height, ox:ox + width].copy()
            for texture, start, velocity in objects:
                x, y = ((start + velocity * i) % (np.array([width, height]) - 72)).astype(int)
                image[y:y + 72, x:x + 72] = texture
            gain = 0.85 + 0.15 * np.sin(i / 9.0 + seed)
            frame = av.VideoFrame.from_ndarray(np.clip(image * gain, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_clips(model: nn.Module, workdir: Path, seeds: range, frames: int) -> torch.Tensor:
    """Every 16-frame clip of one video per seed, decoded and preprocessed by the zoo's reader."""
    clips = []
    for seed in seeds:
        video = write_textured_video(workdir / f"video_{seed}.mp4", seed, frames)
        with iter_video_clips(video, model.config.input_spec) as stream:
            clips.extend(clip.tensor for clip in stream)
    return torch.stack(clips)


# ----------------------------------------------------------------------------- model preparation

@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, clips: torch.Tensor, batch_size: int) -> None:
    """Re-estimate BN running statistics (cumulative average over ``clips``, train mode)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for start in range(0, len(clips), batch_size):
        model(clips[start:start + batch_size])
    model.eval()


def _batches(clips: torch.Tensor, batch_size: int):
    return [clips[i:i + batch_size] for i in range(0, len(clips), batch_size)]


def quantize_pt2e(model: nn.Module, calibration: torch.Tensor, batch_size: int) -> nn.Module:
    """torchao PT2E: export -> prepare (X86InductorQuantizer default config) -> calibrate -> convert."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = calibration[:batch_size].contiguous(memory_format=torch.channels_last_3d)
    exported = torch.export.export(PooledFeatures(model).eval(), (example,)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in _batches(calibration, batch_size):
            prepared(batch.contiguous(memory_format=torch.channels_last_3d))
    return convert_pt2e(prepared)


def count_quantized(graph_module: nn.Module) -> Dict[str, int]:
    """Convolutions in the converted graph, and how many of them read a dequantized (int8) input."""
    convs = [n for n in graph_module.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    quantized = [n for n in convs if "dequantize" in str(getattr(n.args[0], "target", ""))]
    return {"convs": len(convs), "int8_convs": len(quantized)}


_PACKED: List[torch.Tensor] = []  # oneDNN-packed int8 weights, indexed by Int8Conv3d.key
_KERNELS: List[tuple] = []  # their kernel sizes (the packed tensor's shape is opaque)


@torch.library.custom_op("video3d_int8_bench::qconv3d", mutates_args=())
def qconv3d(q: torch.Tensor, key: int, x_scale: float, x_zp: int, w_scales: torch.Tensor, bias: torch.Tensor,
            stride: List[int], padding: List[int], dilation: List[int], groups: int) -> torch.Tensor:
    """oneDNN int8 Conv3d of a uint8 channels_last_3d input; fp32 output.  An opaque op to dynamo:
    ``onednn::qconv_prepack`` has no fake-tensor support, so the packed weight stays outside the graph."""
    zps = torch.zeros(len(w_scales), dtype=torch.int64)
    return torch.ops.onednn.qconv_pointwise(q, x_scale, x_zp, _PACKED[key], w_scales, zps, bias, stride, padding,
                                            dilation, groups, 1.0, 0, torch.float32, "none", [], "")


@qconv3d.register_fake
def _qconv3d_fake(q, key, x_scale, x_zp, w_scales, bias, stride, padding, dilation, groups):
    kernel = _KERNELS[key]
    spatial = [(size + 2 * p - d * (k - 1) - 1) // s + 1
               for size, k, s, p, d in zip(q.shape[2:], kernel, stride, padding, dilation)]
    return torch.empty((q.shape[0], len(w_scales), *spatial), dtype=torch.float32, device=q.device,
                       memory_format=torch.channels_last_3d)


class Int8Conv3d(nn.Module):
    """A (BN-folded) Conv3d run by oneDNN in int8: uint8 activations (static per-tensor scale from
    calibration), int8 per-output-channel symmetric weights, fp32 bias and output."""

    def __init__(self, conv: nn.Conv3d, x_min: float, x_max: float) -> None:
        super().__init__()
        x_min, x_max = min(x_min, 0.0), max(x_max, 0.0)
        self.x_scale = max((x_max - x_min) / 255.0, 1e-8)
        self.x_zp = int(min(255, max(0, round(-x_min / self.x_scale))))
        w = conv.weight.detach().float()
        scales = (w.abs().amax(dim=(1, 2, 3, 4)) / 127.0).clamp_min(1e-12)
        self.register_buffer("w_scales", scales)
        q_w = torch.round(w / scales.view(-1, 1, 1, 1, 1)).clamp(-128, 127).to(torch.int8)
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(len(scales))
        self.register_buffer("bias", bias)
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups = conv.groups
        self.key = len(_PACKED)
        _KERNELS.append(tuple(conv.kernel_size))
        _PACKED.append(torch.ops.onednn.qconv_prepack(q_w, scales, self.x_scale, self.x_zp, self.stride,
                                                      self.padding, self.dilation, self.groups, None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(x.float() * (1.0 / self.x_scale)) + self.x_zp, 0, 255).to(torch.uint8)
        q = q.contiguous(memory_format=torch.channels_last_3d)
        return qconv3d(q, self.key, self.x_scale, self.x_zp, self.w_scales, self.bias, self.stride, self.padding,
                       self.dilation, self.groups)


def quantize_conv3d_onednn(model: nn.Module, calibration: torch.Tensor, batch_size: int) -> nn.Module:
    """BN-folded copy of ``model`` with every Conv3d replaced by :class:`Int8Conv3d` (min/max calibrated)."""
    m = copy.deepcopy(model).eval()
    fuse_conv_bn(m)
    m = m.to(memory_format=torch.channels_last_3d)
    ranges: Dict[str, List[float]] = {}

    def observe(name):
        def hook(_module, inputs):
            x = inputs[0].detach()
            lo, hi = ranges.get(name, (float("inf"), float("-inf")))
            ranges[name] = [min(lo, x.min().item()), max(hi, x.max().item())]
        return hook

    convs = {name: mod for name, mod in m.named_modules() if isinstance(mod, nn.Conv3d)}
    handles = [mod.register_forward_pre_hook(observe(name)) for name, mod in convs.items()]
    with torch.no_grad():
        for batch in _batches(calibration, batch_size):
            PooledFeatures(m)(batch.contiguous(memory_format=torch.channels_last_3d))
    for handle in handles:
        handle.remove()
    for name, conv in convs.items():
        parent_name, _, attr = name.rpartition(".")
        setattr(m.get_submodule(parent_name) if parent_name else m, attr, Int8Conv3d(conv, *ranges[name]))
    return PooledFeatures(m)


def compiled_frozen(module: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    compiled = torch.compile(module)
    with torch.no_grad(), inductor_config.patch(freezing=True):
        compiled(example)  # the compiling call: freezing only takes effect here

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return compiled(x.contiguous(memory_format=torch.channels_last_3d))
    return run


# ----------------------------------------------------------------------------- measurement

def centred_cosine(features: torch.Tensor, reference: torch.Tensor) -> tuple:
    mean = reference.mean(dim=0, keepdim=True)
    cos = nn.functional.cosine_similarity((features - mean).double(), (reference - mean).double(), dim=1)
    return cos.min().item(), cos.mean().item()


def interleaved_seconds(runners: Dict[str, Callable], x: torch.Tensor, rounds: int) -> Dict[str, float]:
    """Median seconds per batch of each runner, timed in alternating rounds (drift hits all alike)."""
    times: Dict[str, List[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for name, run in runners.items():
            run(x)  # warm-up
        for _ in range(rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def torchao_version():
    try:
        import torchao
    except Exception as exc:  # ImportError, or a torchao built for another torch
        return None, f"{type(exc).__name__}: {exc}"
    return torchao.__version__, ""


def evaluate(name: str, args, workdir: Path, kwargs: dict) -> List[dict]:
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    n = args.frames_per_video
    bn_clips = decoded_clips(model, workdir, range(0, args.videos), n)
    calib_clips = decoded_clips(model, workdir, range(100, 100 + args.videos), n)
    eval_clips = decoded_clips(model, workdir, range(200, 200 + args.videos), n)
    recalibrate_batchnorm(model, bn_clips, args.batch_size)
    reference_model = PooledFeatures(model).eval()
    with torch.no_grad():
        reference = torch.cat([reference_model(b) for b in _batches(eval_clips, args.batch_size)])

    x = eval_clips[:args.batch_size]
    runners: Dict[str, Callable] = {"eager_fp32": reference_model}
    runners["fast_bf16"] = optimize_for_inference(reference_model, precision="bf16")
    notes: Dict[str, str] = {}
    if not args.tiny:
        torch._dynamo.reset()  # a second compile must not reuse an earlier graph (and skip freezing)
        runners["compiled_bf16"] = optimize_for_inference(reference_model, precision="bf16", compile=True)
    version, why = torchao_version()
    if version is None:
        notes["int8_pt2e"] = f"skipped: torchao unavailable ({why})"
    else:
        try:
            converted = quantize_pt2e(model, calib_clips, args.batch_size)
        except Exception as exc:  # a torchao release whose PT2E API does not fit this torch
            notes["int8_pt2e"] = f"skipped: torchao {version} PT2E failed ({type(exc).__name__}: {exc})"
        else:
            counts = count_quantized(converted)
            notes["int8_pt2e"] = f"torchao {version}; {counts['int8_convs']}/{counts['convs']} convs int8 in the graph"
            runners["int8_pt2e"] = converted if args.tiny else compiled_frozen(converted, x.contiguous(
                memory_format=torch.channels_last_3d))
    int8_conv3d = quantize_conv3d_onednn(model, calib_clips, args.batch_size)
    runners["int8_conv3d"] = int8_conv3d if args.tiny else compiled_frozen(int8_conv3d, x.contiguous(
        memory_format=torch.channels_last_3d))
    notes["int8_conv3d"] = "hand-lowered onednn::qconv_pointwise, per-tensor uint8 acts, per-channel int8 weights"

    seconds = interleaved_seconds(runners, x, args.rounds)
    features = {}
    with torch.no_grad():
        for path, run in runners.items():
            features[path] = torch.cat([run(b).float() for b in _batches(eval_clips, args.batch_size)])
    # How much clips differ, relative to their common feature: small spread = centring amplifies noise.
    spread = ((reference - reference.mean(0)).norm(dim=1) / reference.mean(0).norm()).mean().item()
    rows = []
    for path in runners:
        cos_min, cos_mean = centred_cosine(features[path], reference)
        base = seconds.get("compiled_bf16", seconds["fast_bf16"])
        rows.append({"model": name, "path": path, "batch_size": args.batch_size, "eval_clips": len(eval_clips),
                     "calib_clips": len(calib_clips), "bn_clips": len(bn_clips),
                     "vs_eager_fp32": seconds["eager_fp32"] / seconds[path],
                     "vs_compiled_bf16": base / seconds[path], "centred_cos_min": cos_min,
                     "centred_cos_mean": cos_mean,
                     "raw_cos_min": nn.functional.cosine_similarity(features[path], reference, dim=1).min().item(),
                     "clip_spread": spread, "note": notes.get(path, ""), "threads": torch.get_num_threads(),
                     "torch_version": torch.__version__, "torchao_version": version or "",
                     "machine": machine_description(), "date": _dt.date.today().isoformat()})
    for path, note in notes.items():
        if path not in runners:
            rows.append({"model": name, "path": path, "note": note})
    return rows


def format_rows(rows: List[dict], baseline: str) -> str:
    header = (f"{'model':<14} {'path':<14} {'vs eager fp32':>13} {'vs ' + baseline:>17} "
              f"{'cos min':>8} {'cos mean':>8} {'raw min':>8}  note")
    lines = [header, "-" * len(header)]
    for r in rows:
        if "vs_eager_fp32" not in r:
            dashes = f"{'-':>13} {'-':>17} {'-':>8} {'-':>8} {'-':>8}"
            lines.append(f"{r['model']:<14} {r['path']:<14} {dashes}  {r['note']}")
            continue
        lines.append(f"{r['model']:<14} {r['path']:<14} {r['vs_eager_fp32']:12.2f}x {r['vs_compiled_bf16']:16.2f}x "
                     f"{r['centred_cos_min']:8.4f} {r['centred_cos_mean']:8.4f} {r['raw_cos_min']:8.4f}  {r['note']}")
    return "\n".join(lines)


def append_csv(rows: List[dict], path: Path) -> None:
    rows = [r for r in rows if "vs_eager_fp32" in r]
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet3d_50"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--videos", type=int, default=4, help="videos per set (BN, calibration, evaluation)")
    parser.add_argument("--frames-per-video", type=int, default=128, help="128 frames = 8 clips of 16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny model, no compile: seconds-long smoke run")
    parser.add_argument("--csv", nargs="?", const="results/int8_evaluation.csv", default=None,
                        help="append rows to this CSV (default results/int8_evaluation.csv)")
    args = parser.parse_args()
    kwargs = {}
    if args.tiny:
        args.models, args.batch_size, args.videos, args.frames_per_video, args.rounds = (
            ["resnet3d_10"], 2, 1, 32, 1)
        kwargs = {"widen_factor": 0.125}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.extend(evaluate(name, args, Path(tmp), kwargs))
    print(format_rows(rows, "fast_bf16" if args.tiny else "compiled_bf16"))
    for name in args.models:
        spread = next((r["clip_spread"] for r in rows if r["model"] == name and "clip_spread" in r), float("nan"))
        print(f"{name}: clip spread (mean |f - mean f| / |mean f|, fp32) = {spread:.3f}")
    if args.csv:
        append_csv(rows, Path(args.csv))
        print(f"appended to {args.csv}")


if __name__ == "__main__":
    sys.exit(main())
