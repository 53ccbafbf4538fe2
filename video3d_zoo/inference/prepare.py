"""Preparing a model for fast inference: one call, each step chosen by capability.

:func:`optimize_for_inference` returns an :class:`InferenceModel` wrapping a copy of the model:

* eval mode and ``torch.inference_mode``;
* BatchNorm folded into the convolution before it, wherever a model lists the pair in
  ``fusable_pairs`` (exact up to float rounding; pre-activation BNs stay as they are);
* ``channels_last_3d`` memory format, which lets oneDNN (CPU) / cuDNN run every convolution;
* optional reduced precision: ``"bf16"`` autocast on CPUs with AVX-512-BF16/AMX and on GPUs that
  support it, ``"fp16"`` on CUDA; outputs are returned as float32.  Cost: logits differ from
  float32 by about 1% of the largest logit (see docs/performance.md for measured figures).
  With bf16 on a CPU with AMX (and ``fold_bn``, the fast path), stem convolutions reading 3 channels
  at stride 2 run on 2x2 space-to-depth blocks (:mod:`.space_to_depth`: same parameters, 1.3-1.9x
  faster there);
* optional compilation with freezing, which pre-packs the folded weights.  On the CPU the
  entry points a job uses (``forward``, ``forward_features``) become AOTInductor libraries
  cached across runs (:mod:`video3d_zoo.inference.compiled`): the first run of a model, batch shape and
  precision compiles (tens of seconds on 2 cores), later runs load it in a fraction of a second.
  Batches are padded to one static size, so a run never compiles twice.  Elsewhere (CUDA) it is
  ``torch.compile``.  A compilation that fails falls back to the eager fast path, with a warning.

Float32 without compilation is the default and reproduces the float32 model within rounding.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn

from ..errors import ConfigError
from .precision import autocast, precision_dtype, resolve_precision
from .space_to_depth import rewrite_stems, use_space_to_depth


def fold_batchnorm(conv: nn.Conv3d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv3d:
    """A convolution computing ``bn(conv(x))`` of an eval-mode BatchNorm (new module, same device)."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    # Built on the meta device and given the folded tensors: a Conv3d built on a real device would
    # draw random weights only to overwrite them (0.2 s for a resnet3d_50).
    fused = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True, device="meta")
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1, 1))
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def fuse_conv_bn(model: nn.Module) -> int:
    """Fold every ``fusable_pairs`` BatchNorm of ``model`` in place; returns how many were folded."""
    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in getattr(module, "fusable_pairs", ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv3d) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
                setattr(module, conv_name, fold_batchnorm(conv, bn))
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


@dataclass(frozen=True)
class InferenceOptions:
    precision: str = "fp32"
    channels_last: bool = True
    fold_bn: bool = True
    compile: bool = False
    #: the static batch of compiled entry points (default: the first call's batch size)
    batch_size: Optional[int] = None


class InferenceModel(nn.Module):
    """A model prepared by :func:`optimize_for_inference`: the model's call interface (float32 outputs)
    and what describes it (``config``, ``feature_info``, ``pretrained_cfg``...), nothing more.

    The prepared network inside is private: callers use these methods and properties, so the
    fast path (autocast, memory format, compiled entry points) is never bypassed.  It is prepared
    for one device and one precision; :meth:`to` refuses to change either.
    """

    def __init__(self, network: nn.Module, options: InferenceOptions, device: torch.device) -> None:
        super().__init__()
        self._network = network
        self._options = options
        self._device = device
        self._compiled: Dict[tuple, Callable] = {}  # (entry point, clip shape) -> compiled callable
        self._batches = {"eager": 0, "compiled": 0}  # calls of forward / forward_features, with compile=True
        self._digest: Optional[str] = None

    @property
    def options(self) -> InferenceOptions:
        return self._options

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def config(self):
        return getattr(self._network, "config", None)

    @property
    def num_features(self) -> Optional[int]:
        return getattr(self._network, "num_features", None)

    @property
    def feature_info(self):
        return getattr(self._network, "feature_info", [])

    @property
    def pretrained_cfg(self) -> dict:
        return self._network.pretrained_cfg

    @property
    def network_name(self) -> str:
        """The class name of the prepared network (what a config-less model is called in records)."""
        return type(self._network).__name__

    @property
    def compiled_entries(self) -> tuple:
        """``(entry point, clip shape)`` of each entry compiled (or loaded) so far."""
        return tuple(self._compiled)

    def batches_run(self) -> Dict[str, int]:
        """How many calls of ``forward`` / ``forward_features`` ran eagerly and how many compiled (with
        ``compile=True``; a background build serves the first batches eagerly)."""
        return dict(self._batches)

    def builds_running(self) -> List[int]:
        """Process ids of background builds of this model's libraries still running (they finish on their
        own, at the lowest priority, and the next run with ``compile=True`` loads what they built)."""
        from .background import SwitchWhenBuilt

        return [fn.build.process.pid for fn in self._compiled.values()
                if isinstance(fn, SwitchWhenBuilt) and fn.build is not None and fn.build.poll() is None]

    def to(self, *args, **kwargs) -> "InferenceModel":
        """Itself, when asked for the device and precision it was prepared for; anything else is refused."""
        device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None and torch.device(device) != self._device:
            raise ConfigError(f"this fast-path model was prepared for {self._device}; call "
                              f"optimize_for_inference(..., device={str(device)!r}) to run it there")
        if dtype is not None or memory_format is not None:
            raise ConfigError("the precision and memory format of a fast-path model are chosen by "
                              "optimize_for_inference(precision=..., channels_last=...)")
        return self

    def weights_digest(self) -> str:
        """sha256 of the prepared network's state (:func:`video3d_zoo.jobs.provenance.weights_digest`),
        computed once."""
        if self._digest is None:
            from ..jobs.provenance import weights_digest

            self._digest = weights_digest(self._network)
        return self._digest

    def _autocast(self):
        return autocast(self.device, precision_dtype(self.options.precision))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.options.channels_last and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def _run(self, fn, x: torch.Tensor, *args, **kwargs):
        with torch.inference_mode(), self._autocast():
            out = fn(self._prepare(x), *args, **kwargs)
        if isinstance(out, (list, tuple)):  # a features-only backbone, or intermediates
            return type(out)(o.float() if isinstance(o, torch.Tensor) else [t.float() for t in o] for o in out)
        return out.float()

    def _entry(self, name: str, x: torch.Tensor) -> Callable:
        """The callable running ``model.<name>``: compiled once per entry point and clip shape when asked for
        (a library has static shapes; clips of another length or size get their own)."""
        if not self.options.compile:
            return getattr(self._network, name)
        key = (name, tuple(x.shape[1:]))
        if key not in self._compiled:
            self._compiled[key] = self._compile(name, x)
        return self._compiled[key]

    def _compile(self, name: str, x: torch.Tensor, background: bool = False) -> Callable:
        from . import compiled

        if self.device.type != "cpu" or not compiled.available():
            return _torch_compiled(getattr(self._network, name))
        batch = max(self.options.batch_size or 0, x.shape[0])
        dtype = precision_dtype(self.options.precision) or torch.float32
        try:
            if background:
                switching = self._compile_in_background(name, compiled.example_input(batch, x.shape[1:], dtype))
                if switching is not None:
                    return switching
            return compiled.compile_entry(self._network, name, batch, tuple(x.shape[1:]), dtype,
                                          weights_digest=self.weights_digest())
        except compiled.CompileError as exc:
            warnings.warn(f"compilation unavailable, running the eager fast path: {exc}", RuntimeWarning,
                          stacklevel=3)
            return getattr(self._network, name)

    def _compile_in_background(self, name: str, example: torch.Tensor) -> Optional[Callable]:
        """The cached library, or the eager entry until a child process has built it (``None`` where no
        process can be started: the caller builds here)."""
        from . import background, compiled

        def load():
            runner = compiled.load_cached(self._network, name, example, weights_digest=self.weights_digest())
            return None if runner is None else compiled.StaticBatchRunner(runner, example)

        ready = load()
        if ready is not None:
            return ready
        build = background.start(self._network, name, example, self.weights_digest())
        return None if build is None else background.SwitchWhenBuilt(getattr(self._network, name), build, load)

    def warm_up(self, entry: str, clip_shape, background: bool = False) -> bool:
        """Compile or load ``entry`` (``"forward"``, ``"forward_features"``) for clips of ``clip_shape``
        (C, T, H, W) now instead of at the first batch; a job calls it while its first clips decode.
        With ``background``, a library not yet in the cache is built by another process while the
        batches run eagerly (:mod:`video3d_zoo.inference.background`).  Returns whether there was
        anything to prepare."""
        if not self.options.compile or entry not in ("forward", "forward_features"):
            return False
        key = (entry, tuple(clip_shape))
        if key not in self._compiled:
            x = torch.empty(self.options.batch_size or 1, *clip_shape, device="meta")
            self._compiled[key] = self._compile(entry, x, background=background)
        return True

    def _call(self, name: str, x: torch.Tensor) -> torch.Tensor:
        from .background import SwitchWhenBuilt

        fn = self._entry(name, x)
        if isinstance(fn, SwitchWhenBuilt):
            fn = fn.current()
        if self.options.compile:
            self._batches["eager" if fn == getattr(self._network, name) else "compiled"] += 1
        return self._run(fn, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._call("forward", x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._call("forward_features", x)

    def forward_intermediates(self, x: torch.Tensor, *args, **kwargs):
        """``model.forward_intermediates`` on the fast path (float32 outputs)."""
        return self._run(self._network.forward_intermediates, x, *args, **kwargs)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            return self._network.forward_head(x.to(self._device), pre_logits=pre_logits).float()


def _torch_compiled(fn: Callable) -> Callable:
    compiled = torch.compile(fn)

    def run(x: torch.Tensor):
        import torch._inductor.config as inductor_config

        # Freezing only takes effect when set around the compiling call (perf-facts.md).
        with inductor_config.patch(freezing=True):
            return compiled(x)
    return run


def prepare_network(model: nn.Module, device: Optional[Union[torch.device, str]] = None, channels_last: bool = True,
                    fold_bn: bool = True, copy_model: bool = True) -> nn.Module:
    """The network :func:`optimize_for_inference` runs: eval mode, on ``device``, BatchNorm folded,
    channels-last, no gradients (a copy unless ``copy_model=False``)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prepared = copy.deepcopy(model) if copy_model else model
    prepared = prepared.eval().to(device)
    if fold_bn:
        fuse_conv_bn(prepared)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last_3d)
    for p in prepared.parameters():
        p.requires_grad_(False)
    return prepared


def optimize_for_inference(model: nn.Module, precision: str = "fp32", channels_last: bool = True,
                           fold_bn: bool = True, compile: bool = False,
                           device: Optional[Union[torch.device, str]] = None, copy_model: bool = True,
                           batch_size: Optional[int] = None) -> InferenceModel:
    """Prepare ``model`` for inference (see the module docstring for each step and its cost).

    ``batch_size`` is the static batch of compiled entry points (the largest batch the job
    sends; default: the first call's).  The original model is left untouched unless
    ``copy_model=False``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    options = InferenceOptions(resolve_precision(precision, device), channels_last, fold_bn, compile, batch_size)
    network = prepare_network(model, device, channels_last, fold_bn, copy_model)
    if fold_bn and use_space_to_depth(device, options.precision):
        rewrite_stems(network)
    return InferenceModel(network, options, device)
