"""Side-by-side inference benchmark: every variant against plain eager float32, in one run.

For each model and variant it reports clips per second, the speed ratio against eager fp32 of
the same model measured in the same run, the latency of one clip per call (online use),
achieved GMAC/s, the fraction of the practical ceiling measured in the same run (the faster of
a matrix multiply and a 3x3x3 Conv3d, in fp32 for fp32 variants and bf16 for bf16 ones), the
fraction of *both* matrix-multiply peaks measured in the same run (fp32 and bf16: the machine's own
yardstick, whatever its instruction set) and peak memory.  Absolute times drift on shared machines;
ratios are the result.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch

from .prepare import optimize_for_inference
from .precision import bf16_supported

VARIANTS = ("eager_fp32", "fast_fp32", "fast_bf16", "compiled_fp32", "compiled_bf16")


@dataclass
class BenchRow:
    model: str
    variant: str
    batch_size: int
    frames: int
    size: int
    clips_per_s: float
    ratio_vs_eager: float
    #: one clip per call (online use), milliseconds
    latency_ms: float
    gmacs_per_clip: float
    achieved_gmac_s: float
    fraction_of_peak: float
    #: achieved FLOP/s over the fp32 / bf16 2048^3 matmul: the faster of the run's first measurement and the
    #: one timed between the variant's own calls (nan where not measured; see :func:`_time_beside`)
    of_fp32_matmul: float
    of_bf16_matmul: float
    peak_mem_mib: float
    threads: int
    torch_version: str
    machine: str
    date: str
    #: the yardsticks of ``of_fp32_matmul`` / ``of_bf16_matmul``, GFLOP/s
    fp32_matmul_gflops: float = float("nan")
    bf16_matmul_gflops: float = float("nan")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cpus"


def conv_peak_gflops(dtype: torch.dtype, device: torch.device, channels: int = 256, repeats: int = 3) -> float:
    """GFLOP/s of a 3x3x3 Conv3d (batch 8, 4x14x14, channels_last_3d): oneDNN / cuDNN at their best.

    Needed because a matrix multiply is not always the fastest kernel: on AMD CPUs torch's fp32
    matmul (MKL) reached 209 GFLOP/s where oneDNN's fp32 Conv3d reached 620.
    """
    x = torch.randn(8, channels, 4, 14, 14, device=device).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1, bias=False).to(device=device, dtype=dtype)
    conv = conv.to(memory_format=torch.channels_last_3d).eval()
    with torch.inference_mode():
        seconds = _time(lambda: conv(x), repeats, device)
    return 2 * 8 * channels * channels * 27 * 4 * 14 * 14 / seconds / 1e9


def _matmul(dtype: torch.dtype, device: torch.device, n: int = 2048) -> Tuple[Callable[[], object], float]:
    """A 2048^3 matrix multiply in ``dtype`` and its FLOP count (the yardstick of every "of ... matmul")."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return (lambda: a @ b), 2.0 * n ** 3


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    fn, flops = _matmul(dtype, device, n)
    return flops / _time(fn, repeats, device) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Seconds per call, the median of ``repeats`` timed calls (a shared machine's stalls hit single calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_beside(fn: Callable[[], object], yardsticks: Dict[str, Tuple[Callable[[], object], float]],
                 repeats: int, device: torch.device, warmup: int = 1) -> Tuple[float, Dict[str, float]]:
    """Median seconds per call of ``fn``, and the GFLOP/s of each yardstick timed between its calls.

    On a shared machine the matmul peak moves by a third within minutes (bf16 on AMX most: the tiles
    of a core are shared with whatever runs on its other hyper-thread), so a fraction of a peak measured
    minutes earlier says as much about the neighbours as about the model; measured call by call
    beside the model, both see the same machine.
    """
    for _ in range(warmup):
        fn()
    times: List[float] = []
    beside: Dict[str, List[float]] = {name: [] for name in yardsticks}
    for _ in range(repeats):
        for name, (stick, _) in yardsticks.items():  # a first call refills the caches the model emptied
            beside[name].append(_time(stick, 1, device, warmup=1))
        times.append(_time(fn, 1, device, warmup=0))
    rates = {name: yardsticks[name][1] / statistics.median(t) / 1e9 for name, t in beside.items()}
    return statistics.median(times), rates


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        with open("/proc/self/status") as fh:
            line = next(line for line in fh if line.startswith("VmHWM"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return float("nan")


def _variant_model(model, variant: str, device: torch.device, batch_size: int):
    if variant == "eager_fp32":
        return model
    precision = "bf16" if variant.endswith("bf16") else "fp32"
    if variant.startswith("compiled") and device.type != "cpu":
        # A second torch.compile of a copy of the same model can silently reuse the first graph and
        # skip freezing (perf-facts.md); start every compiled variant from empty dynamo caches.
        import torch._dynamo

        torch._dynamo.reset()
    return optimize_for_inference(model, precision=precision, compile=variant.startswith("compiled"),
                                  device=device, batch_size=batch_size)


def _latency_ms(model, variant: str, device: torch.device, clip: torch.Tensor, repeats: int) -> float:
    """Milliseconds per call with one clip; a compiled variant gets its own batch-1 library."""
    runner = _variant_model(model, variant, device, batch_size=1)
    with torch.inference_mode():
        return 1000 * _time(lambda: runner(clip), max(repeats, 3), device, warmup=2)


def available_variants(device: torch.device, compile: bool = True) -> List[str]:
    out = [v for v in VARIANTS if compile or not v.startswith("compiled")]
    if not bf16_supported(device):
        out = [v for v in out if not v.endswith("bf16")]
    return out


def benchmark_model(name: str, variants: Iterable[str], batch_size: int = 8, frames: int = 16, size: int = 112,
                    repeats: int = 3, device: Optional[str] = None,
                    peaks: Optional[Dict[str, float]] = None) -> List[BenchRow]:
    """Rows for one registered model; the first variant measured is always eager fp32."""
    from ..api import create_model

    variants = list(variants)
    from .profile import profile

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)  # the same weights every run: compiled libraries are cached by weights
    model = create_model(name).eval().to(device)
    gmacs = profile(model, frames=frames, size=size).gmacs
    peaks = peaks or {}
    sticks = {"matmul_fp32": _matmul(torch.float32, device)}
    if "matmul_bf16" in peaks or any(v.endswith("bf16") for v in variants):
        sticks["matmul_bf16"] = _matmul(torch.bfloat16, device)
    x = torch.randn(batch_size, model.in_chans, frames, size, size, device=device)
    stamp = _dt.date.today().isoformat()
    rows, eager_rate = [], None
    for variant in ["eager_fp32", *[v for v in variants if v != "eager_fp32"]]:
        runner = _variant_model(model, variant, device, batch_size)
        _reset_peak_memory(device)
        with torch.inference_mode():
            seconds, beside = _time_beside(lambda r=runner: r(x), sticks, repeats, device,
                                           warmup=2 if "compiled" in variant else 1)
        memory = _peak_memory_mib(device)
        del runner
        latency = _latency_ms(model, variant, device, x[:1], repeats)
        rate = batch_size / seconds
        eager_rate = eager_rate or rate
        flops = 2 * gmacs * rate
        # Each yardstick: the best of the run's first measurement and the one beside this variant, so that
        # neither a slow moment of the machine nor a matmul slowed by the model's calls around it flatters it.
        best = {key: max(beside.get(key, 0.0), peaks.get(key, 0.0)) or float("nan")
                for key in ("matmul_fp32", "matmul_bf16")}
        precision = "bf16" if variant.endswith("bf16") else "fp32"
        ceiling = max(best[f"matmul_{precision}"], peaks.get(precision, 0.0))  # or the run's Conv3d yardstick
        rows.append(BenchRow(name, variant, batch_size, frames, size, rate, rate / eager_rate, latency, gmacs,
                             gmacs * rate, flops / ceiling, flops / best["matmul_fp32"], flops / best["matmul_bf16"],
                             memory, torch.get_num_threads(), torch.__version__, machine_description(), stamp,
                             best["matmul_fp32"], best["matmul_bf16"]))
    return rows


def run_benchmark(models: Iterable[str], batch_size: int = 8, frames: Optional[int] = None,
                  size: Optional[int] = None, repeats: int = 3, variants: Optional[Iterable[str]] = None,
                  device: Optional[str] = None, compile: bool = True) -> List[BenchRow]:
    """Benchmark several models on clips of ``frames x size x size`` (default: each model's input preset); the
    yardsticks (:func:`_peaks`) are measured first, in the same process."""
    from ..devices import resolve_device
    from ..models.config import input_preset
    from ..models.registry import get_model_spec

    dev = resolve_device(device or "auto")
    chosen = list(variants) if variants else available_variants(dev, compile=compile)
    peaks = _peaks(dev, bf16=any(v.endswith("bf16") for v in chosen) or bf16_supported(dev))
    rows: List[BenchRow] = []
    for name in models:
        preset = input_preset(get_model_spec(name).input_preset)
        rows.extend(benchmark_model(name, chosen, batch_size, frames or preset.frames, size or preset.crop_size,
                                    repeats, str(dev), peaks))
    return rows


def _peaks(device: torch.device, bf16: bool) -> Dict[str, float]:
    """GFLOP/s yardsticks measured now: the plain 2048^3 matmul peaks, and each precision's practical
    ceiling, the faster of that matmul and a 3x3x3 Conv3d (oneDNN's conv can beat torch's matmul)."""
    peaks = {"matmul_fp32": matmul_peak_gflops(torch.float32, device)}
    peaks["fp32"] = max(peaks["matmul_fp32"], conv_peak_gflops(torch.float32, device))
    if bf16:
        peaks["matmul_bf16"] = matmul_peak_gflops(torch.bfloat16, device)
        peaks["bf16"] = max(peaks["matmul_bf16"], conv_peak_gflops(torch.bfloat16, device))
    return peaks


def format_rows(rows: List[BenchRow]) -> str:
    header = (f"{'model':<16} {'variant':<14} {'clips/s':>8} {'vs eager':>8} {'batch-1 ms':>10} {'GMAC/s':>8} "
              f"{'of ceil.':>8} {'of fp32 mm':>10} {'of bf16 mm':>10} {'peak MiB':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.model:<16} {r.variant:<14} {r.clips_per_s:8.2f} {r.ratio_vs_eager:7.2f}x "
                     f"{r.latency_ms:10.1f} {r.achieved_gmac_s:8.1f} {r.fraction_of_peak:8.1%} "
                     f"{r.of_fp32_matmul:10.1%} {r.of_bf16_matmul:10.1%} {r.peak_mem_mib:9.0f}")
    return "\n".join(lines)


def write_csv(rows: List[BenchRow], path) -> None:
    import csv

    from ..fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
