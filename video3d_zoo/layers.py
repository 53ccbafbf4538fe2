"""Building blocks shared by every model family.

* :class:`VideoClassifier` - the model interface every zoo model implements, at timm's level
  (``forward`` / ``forward_features`` / ``forward_head`` / ``forward_intermediates`` /
  ``get_classifier`` / ``reset_classifier`` / ``set_grad_checkpointing`` / ``group_matcher`` /
  ``no_weight_decay`` / ``feature_info`` / ``pretrained_cfg`` / features-only backbones /
  input checking with a stated minimum size); see docs/model-interface.md.
* :class:`FeatureInfo` / :class:`FeatureInfoList` - what each stage outputs (channels, temporal
  and spatial reduction), with timm's ``channels()`` / ``reduction()`` accessors.
* :class:`DropPath` - stochastic depth for the residual families.
* :class:`ResNetTrunk` - stem + four residual stages + head, parametrised by a block factory;
  the ResNet, pre-activation ResNet and R(2+1)D families subclass it.
* :class:`ZeroPadShortcut` - the parameter-free shortcut "A" of the 2017 ResNet-18/34 weights.
* :func:`adapt_input_conv` - the rule that turns RGB stem weights into 1-, 2- or N-channel ones.

Parameter names follow the 2020 3D-ResNets-PyTorch layout (``conv1``, ``bn1``, ``layerN.M.*``,
``downsample.0/1``, ``fc``), so checkpoints of that release load without renaming.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import ConfigError, InputShapeError

Triple = Tuple[int, int, int]

# Block type and blocks per stage of the ResNet-style depths, shared by every residual family.
RESNET_DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


def triple(value) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"expected an int or 3 ints, got {value!r}")
    return out  # type: ignore[return-value]


_FEATURE_KEYS = ("module", "num_chs", "reduction", "reduction_t", "reduction_hw", "reduction_s", "index")


@dataclass(frozen=True)
class FeatureInfo:
    """One stage output of a model: module name, channels and cumulative reductions.

    ``reduction_t`` is the temporal stride from the input clip to this output, ``reduction_s``
    the spatial one (also readable as ``reduction_hw``, and as ``reduction`` - timm's name,
    which is spatial); ``index`` is the stage's position, what ``forward_intermediates(indices=)``
    and ``out_indices`` count.  Items also read like timm's dicts: ``info["num_chs"]``.
    """

    module: str
    num_chs: int
    reduction_t: int
    reduction_s: int
    index: int = 0

    @property
    def reduction_hw(self) -> int:
        return self.reduction_s

    @property
    def reduction(self) -> int:
        return self.reduction_s

    def __getitem__(self, key: str):
        if key not in _FEATURE_KEYS:
            raise KeyError(f"{key!r} is not a feature_info key; known: {', '.join(_FEATURE_KEYS)}")
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in _FEATURE_KEYS else default

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in _FEATURE_KEYS}


class FeatureInfoList(list):
    """``model.feature_info``: a list of :class:`FeatureInfo`, one per stage output, with timm's accessors.

    ``idx`` selects entries of this list: ``None`` all of them (a list comes back), an int one
    (its value), a sequence several (a list).  For a features-only backbone the list holds its
    outputs only (``out_indices``), in output order.
    """

    def get(self, key: str, idx: Union[None, int, Sequence[int]] = None):
        if key not in _FEATURE_KEYS:
            raise KeyError(f"{key!r} is not a feature_info key; known: {', '.join(_FEATURE_KEYS)}")
        if idx is None:
            return [getattr(info, key) for info in self]
        if isinstance(idx, int):
            return getattr(self[idx], key)
        return [getattr(self[i], key) for i in idx]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx: Union[None, int, Sequence[int]] = None):
        keys = tuple(keys or _FEATURE_KEYS)
        if isinstance(idx, int):
            return {k: self[idx][k] for k in keys}
        chosen = range(len(self)) if idx is None else idx
        return [{k: self[i][k] for k in keys} for i in chosen]

    def channels(self, idx: Union[None, int, Sequence[int]] = None):
        """Output channels (``num_chs``)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: Union[None, int, Sequence[int]] = None):
        """Spatial reduction (H and W stride), as timm's ``reduction()``; see :meth:`reduction_t`."""
        return self.get("reduction_s", idx)

    def reduction_hw(self, idx: Union[None, int, Sequence[int]] = None):
        return self.get("reduction_s", idx)

    def reduction_t(self, idx: Union[None, int, Sequence[int]] = None):
        """Temporal reduction (T stride)."""
        return self.get("reduction_t", idx)

    def module_name(self, idx: Union[None, int, Sequence[int]] = None):
        return self.get("module", idx)

    @property
    def out_indices(self) -> Tuple[int, ...]:
        """The stage index of every entry."""
        return tuple(info.index for info in self)


def take_indices(num_stages: int, indices: Union[None, int, Sequence[int]] = None) -> List[int]:
    """Stage indices, sorted and distinct, that ``indices`` selects out of ``num_stages``.

    ``None``: every stage; an int ``n``: the last ``n`` stages (timm's rule); a sequence: those
    indices, negative ones counting from the end.  Anything else is a :class:`ConfigError`.
    """
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, bool):
        raise ConfigError(f"indices must be None, an int or a sequence of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ConfigError(f"indices={indices}: an int takes the last n stages, 1 <= n <= {num_stages}")
        return list(range(num_stages - indices, num_stages))
    try:
        items = list(indices)
    except TypeError:
        raise ConfigError(f"indices must be None, an int or a sequence of ints, got {indices!r}") from None
    out = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise TypeError
            index = operator.index(item)
        except TypeError:
            raise ConfigError(f"stage indices must be integers, got {item!r} in {indices!r}") from None
        resolved = index + num_stages if index < 0 else index
        if not 0 <= resolved < num_stages:
            raise ConfigError(f"stage index {index} is out of range: this model has {num_stages} stages "
                              f"(0..{num_stages - 1}, or -{num_stages}..-1)")
        out.append(resolved)
    if not out:
        raise ConfigError("indices selects no stage")
    return sorted(set(out))


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch of a random subset of samples, scaling the
    kept ones by ``1 / (1 - drop_prob)`` so the expectation is unchanged.  Identity in eval."""
    if drop_prob <= 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth of one residual branch (Huang et al. 2016); see :func:`drop_path`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def make_drop_path(drop_prob: float) -> nn.Module:
    """A :class:`DropPath`, or ``nn.Identity`` at rate 0 (so rate 0 runs exactly the original ops)."""
    return DropPath(drop_prob) if drop_prob > 0 else nn.Identity()


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> List[float]:
    """Per-block stochastic-depth rates rising linearly from 0 (first block) to ``drop_path_rate`` (last)."""
    rate = float(drop_path_rate)
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
    if num_blocks <= 1:
        return [rate] * num_blocks
    return [rate * i / (num_blocks - 1) for i in range(num_blocks)]


class _RecomputeKeepsBatchNormStats:
    """Entered while activation checkpointing recomputes a segment in the backward pass.

    BatchNorm layers of the segment that are in training mode normalise with the batch
    statistics again (bit for bit the first forward's, saving the same tensors), but leave
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` as the first forward left them:
    without this a checkpointed step would apply the momentum update twice.  The recompute
    runs with momentum 0 (``0 * batch + 1 * running`` is ``running`` exactly) and the batch
    counter is put back afterwards.
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.modules = tuple(modules)
        self.saved: List[Tuple[nn.Module, Optional[float], Optional[torch.Tensor]]] = []

    def __enter__(self) -> "_RecomputeKeepsBatchNormStats":
        for root in self.modules:
            for m in root.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
                    counter = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
                    self.saved.append((m, m.momentum, counter))
                    m.momentum = 0.0
        return self

    def __exit__(self, *exc_info) -> bool:
        for m, momentum, counter in self.saved:
            m.momentum = momentum
            if counter is not None:
                m.num_batches_tracked.copy_(counter)
        self.saved = []
        return False


def _checkpoint_contexts(modules):
    return contextlib.nullcontext(), _RecomputeKeepsBatchNormStats(modules)


def _run_modules(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in modules:
        x = module(x)
    return x


class PrunedModule(nn.Module):
    """Stands where a features-only backbone dropped a stage (or the final norm) it does not need;
    calling it says so instead of silently passing the input through."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError(f"{self.name} was pruned: this model is a features-only backbone that stops at an "
                          "earlier stage; build it without features_only to run the full network")

    def extra_repr(self) -> str:
        return f"pruned {self.name!r}"


POOL_TYPES = ("avg", "max", "avgmax", "")
KEEP = "keep"


def check_global_pool(global_pool: Optional[str]) -> str:
    """``"avg"``, ``"max"``, ``"avgmax"`` or ``""`` (``None`` means ``""``: no pooling, dense outputs)."""
    if global_pool is None:
        return ""
    if global_pool not in POOL_TYPES:
        raise ConfigError(f"global_pool must be 'avg', 'max', 'avgmax', or '' / None for dense "
                          f"(unpooled) outputs; got {global_pool!r}")
    return global_pool


def _out_len(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def min_length(ops: Sequence[Tuple[int, int, int]], limit: int = 4096) -> int:
    """Smallest input length for which every (kernel, stride, padding) op yields >= 1."""
    for n in range(1, limit):
        size, ok = n, True
        for kernel, stride, padding in ops:
            size = _out_len(size, kernel, stride, padding)
            if size < 1:
                ok = False
                break
        if ok:
            return n
    raise ValueError("no input length up to the limit fits these operations")


class VideoClassifier(nn.Module):
    """Base class: a clip (N x C x T x H x W) in, class logits out.

    Any module may list ``fusable_pairs``: ``(conv, bn)`` attribute names where the BatchNorm
    directly follows the convolution, so inference can fold it (see ``video3d_zoo.inference``).

    Subclasses build their layers, call :meth:`_spine_op` for every op that changes the
    size of the feature map (in forward order) and :meth:`_add_stage` after each stage,
    then :meth:`_init_head`.  They implement :meth:`forward_stem` (and :meth:`forward_norm` if
    the network normalises after its last stage); the stages, checkpointing, intermediates,
    pooling and head live here.  See docs/model-interface.md for every verb against timm.
    """

    head_name = "fc"
    #: modules of the final normalisation (after the last stage), pruned by features-only backbones
    norm_modules: Tuple[str, ...] = ()

    def __init__(self, in_chans: int = 3, drop_rate: float = 0.0, global_pool: Optional[str] = "avg") -> None:
        super().__init__()
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        self.global_pool = check_global_pool(global_pool)
        self.num_classes = 0
        self.num_features = 0
        self.feature_info = FeatureInfoList()
        self._stage_info = self.feature_info  # every stage, also once a backbone keeps fewer outputs
        self._stages: List[Tuple[str, ...]] = []  # modules run for each stage, in forward order
        self._kept_stages = 0
        self._ops_t: List[Tuple[int, int, int]] = []
        self._ops_s: List[Tuple[int, int, int]] = []
        self._reduction = [1, 1]
        self.min_input_size: Triple = (1, 1, 1)
        self.grad_checkpointing = False
        self.checkpoint_granularity = "stage"
        self.features_only = False
        self.out_indices: Optional[Tuple[int, ...]] = None
        self._features_norm = False
        self.weights_metadata: Dict[str, Any] = {}

    # -- construction helpers -------------------------------------------------------------
    def _spine_op(self, kernel, stride, padding) -> None:
        k, s, p = triple(kernel), triple(stride), triple(padding)
        self._ops_t.append((k[0], s[0], p[0]))
        self._ops_s.append((k[1], s[1], p[1]))
        self._reduction[0] *= s[0]
        self._reduction[1] *= s[1]

    def _add_stage(self, module: str, num_chs: int, parts: Optional[Sequence[str]] = None) -> None:
        """Record a stage whose output is that of ``module``.

        ``parts``: the modules the stage runs, in order, ending with ``module`` (default: just it),
        e.g. a DenseNet transition then its dense block.  The last part is the stage's container
        of blocks; block-level checkpointing recomputes its children one at a time.
        """
        parts = tuple(parts) if parts else (module,)
        if parts[-1] != module:
            raise ValueError(f"the parts of stage {module!r} must end with it, got {parts}")
        self._stage_info.append(FeatureInfo(module, num_chs, self._reduction[0], self._reduction[1],
                                            len(self._stage_info)))
        self._stages.append(parts)
        self._kept_stages = len(self._stages)

    def _init_head(self, num_features: int, num_classes: int) -> None:
        self.num_features = num_features
        self.head_hidden_size = num_features
        self.min_input_size = (min_length(self._ops_t), min_length(self._ops_s), min_length(self._ops_s))
        self.head_drop = nn.Dropout(self.drop_rate) if self.drop_rate > 0 else nn.Identity()
        self.reset_classifier(num_classes)

    def _module(self, name: str) -> nn.Module:
        module: nn.Module = self
        for part in name.split("."):
            module = getattr(module, part)
        return module

    def _set_module(self, name: str, new: nn.Module) -> None:
        parent, _, leaf = name.rpartition(".")
        setattr(self._module(parent) if parent else self, leaf, new)

    # -- interface ----------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` (a ``ValueError``) unless ``x`` fits the model."""
        expected = f"N x C x T x H x W with C={self.in_chans}"
        if x.dim() != 5:
            raise InputShapeError(
                f"expected a 5-D clip tensor {expected}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise InputShapeError(
                f"expected {self.in_chans} input channels ({expected}), got {x.shape[1]} in "
                f"shape {tuple(x.shape)}; for T x H x W x C or T x C x H x W data permute it first")
        if not x.is_floating_point():
            hint = (" (uint8 frames: preprocess them first, e.g. video3d_zoo.io.ClipPreprocessor(model.config.input_spec),"
                    " which scales, normalises and puts channels first)") if x.dtype == torch.uint8 else ""
            raise InputShapeError(f"expected a floating-point clip tensor, got dtype {x.dtype}{hint}")
        t, h, w = x.shape[2], x.shape[3], x.shape[4]
        mt, mh, mw = self.min_input_size
        if t < mt or h < mh or w < mw:
            raise InputShapeError(
                f"input T x H x W = {t} x {h} x {w} is below this model's minimum "
                f"{mt} x {mh} x {mw} (shape {tuple(x.shape)})")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the first stage."""
        raise NotImplementedError

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The normalisation after the last stage (none in the residual families)."""
        return x

    def stage_blocks(self, index: int) -> List[nn.Module]:
        """The modules of stage ``index`` in forward order, its block container expanded into its blocks."""
        parts = self._stages[index]
        modules = [self._module(name) for name in parts[:-1]]
        return modules + list(self._module(parts[-1]).children())

    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and self.training and torch.is_grad_enabled()

    def _run_stem(self, x: torch.Tensor) -> torch.Tensor:
        if self._checkpointing():  # the stem runs at full resolution: its activations are large
            return checkpoint(self.forward_stem, x, use_reentrant=False,
                              context_fn=functools.partial(_checkpoint_contexts, (self,)))
        return self.forward_stem(x)

    def _forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self._checkpointing():
            if self.checkpoint_granularity == "block":
                segments = [(block,) for block in self.stage_blocks(index)]
            else:
                segments = [tuple(self._module(name) for name in self._stages[index])]
            for modules in segments:
                x = checkpoint(_run_modules, modules, x, use_reentrant=False,
                               context_fn=functools.partial(_checkpoint_contexts, modules))
            return x
        for name in self._stages[index]:
            x = self._module(name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map of the last stage, N x num_features x t x h x w."""
        self.check_input(x)
        x = self._run_stem(x)
        for index in range(len(self._stages)):
            x = self._forward_stage(index, x)
        return self.forward_norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Union[None, int, Sequence[int]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCTHW",
                              intermediates_only: bool = False):
        """Stage outputs, each N x C x T x H x W as ``feature_info`` describes it.

        Args:
            indices: the stages to return (:func:`take_indices`: ``None`` all, an int ``n`` the
                last ``n``, or a sequence of stage indices); they come back in stage order.
            norm: apply the final normalisation (DenseNet's ``norm5`` + ReLU; the residual
                families have none) to the last stage's output when it is returned.
            stop_early: do not run the stages after the last one returned.
            output_fmt: ``"NCTHW"``, the only layout.
            intermediates_only: return only the list.

        The result is the list of stage outputs with ``intermediates_only``, else ``(final, list)``
        where ``final`` equals ``forward_features(x)`` (the last stage run, when ``stop_early``
        cut the network short).
        """
        if output_fmt != "NCTHW":
            raise ConfigError(f"output_fmt must be 'NCTHW', got {output_fmt!r}")
        take = take_indices(len(self._stages), indices)
        if take[-1] >= self._kept_stages:
            raise ConfigError(f"stage {take[-1]} was pruned from this features-only backbone (it keeps stages "
                              f"0..{self._kept_stages - 1})")
        last = len(self._stages) - 1
        stop = take[-1] if stop_early or intermediates_only else min(last, self._kept_stages - 1)
        self.check_input(x)
        intermediates = []
        x = self._run_stem(x)
        for index in range(stop + 1):
            x = self._forward_stage(index, x)
            if index in take:
                intermediates.append(self.forward_norm(x) if norm and index == last else x)
        if intermediates_only:
            return intermediates
        return (self.forward_norm(x) if stop == last else x), intermediates

    def prune_intermediate_layers(self, indices: Union[None, int, Sequence[int]] = None, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the final norm / the classifier).

        Pruned stages are replaced by :class:`PrunedModule`, which refuses to run.  Returns the
        resolved stage indices.
        """
        take = take_indices(len(self._stages), indices)
        for index in range(take[-1] + 1, self._kept_stages):
            for name in self._stages[index]:
                self._set_module(name, PrunedModule(name))
        self._kept_stages = min(self._kept_stages, take[-1] + 1)
        if prune_norm:
            for name in self.norm_modules:
                self._set_module(name, PrunedModule(name))
        if prune_head:
            self.reset_classifier(0)
        return take

    def as_backbone(self, out_indices: Union[None, int, Sequence[int]] = None, norm: bool = False,
                    prune: bool = True) -> "VideoClassifier":
        """Turn this model (in place) into a features-only backbone; returns it.

        ``model(x)`` then returns the list of the ``out_indices`` stage outputs (all stages by
        default), ``feature_info`` describes those outputs only, the classifier is dropped and,
        with ``prune``, so are the stages after the last output.  Parameter names stay those of
        the full model.  ``create_model(..., features_only=True)`` calls this after loading weights.
        """
        take = (self.prune_intermediate_layers(out_indices, prune_norm=not norm, prune_head=True) if prune
                else take_indices(len(self._stages), out_indices))
        if not prune:
            self.reset_classifier(0)
        self.features_only = True
        self.out_indices = tuple(take)
        self._features_norm = bool(norm)
        self.feature_info = FeatureInfoList(self._stage_info[i] for i in take)
        return self

    def set_grad_checkpointing(self, enable: bool = True, granularity: str = "stage") -> None:
        """Activation checkpointing in training (``torch.utils.checkpoint``, non-reentrant).

        ``granularity="stage"`` keeps only each stage's input and recomputes the whole stage in
        the backward pass; ``"block"`` checkpoints every block (and DenseNet transition) on its
        own: more tensors kept, a smaller recompute peak.  The stem (before the first stage, at
        full resolution) is one more checkpointed segment in both; the head is not checkpointed.
        Gradients equal the plain model's, and BatchNorm running statistics are updated once
        per step, as without checkpointing (the recompute uses batch statistics and leaves the
        buffers alone).  Has no effect in eval mode or under ``torch.no_grad``.
        """
        if granularity not in ("stage", "block"):
            raise ConfigError(f"granularity must be 'stage' or 'block', got {granularity!r}")
        self.grad_checkpointing = bool(enable)
        self.checkpoint_granularity = granularity

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global pooling over T, H, W as ``global_pool`` says (``""``: the map unchanged)."""
        if self.global_pool == "avg":
            return F.adaptive_avg_pool3d(x, 1).flatten(1)
        if self.global_pool == "max":
            return F.adaptive_max_pool3d(x, 1).flatten(1)
        if self.global_pool == "avgmax":
            return 0.5 * (F.adaptive_avg_pool3d(x, 1) + F.adaptive_max_pool3d(x, 1)).flatten(1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pooling (``global_pool``, average by default), dropout, classifier.

        ``pre_logits`` returns the pooled vector.  With ``global_pool=""`` nothing is pooled and
        the classifier is applied at every position: N x classes x t x h x w (dense outputs).
        """
        x = self.head_drop(self.pool(x))
        if pre_logits:
            return x
        head = getattr(self, self.head_name)
        if self.global_pool:
            return head(x)
        return head(x.movedim(1, -1)).movedim(-1, 1)

    def forward(self, x: torch.Tensor):
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices, norm=self._features_norm, stop_early=True,
                                              intermediates_only=True)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when ``num_classes`` is 0)."""
        return getattr(self, self.head_name)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = KEEP) -> None:
        """Replace the final linear layer by a freshly initialised one (``0``: no classifier).

        ``global_pool``: ``"avg"``, ``"max"``, ``"avgmax"`` (mean of both), or ``""`` / ``None``
        for dense outputs (N x classes x t x h x w); by default the current pooling stays.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if global_pool != KEEP:
            self.global_pool = check_global_pool(global_pool)
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        setattr(self, self.head_name, head)

    # -- optimiser set-up ---------------------------------------------------------------------
    def no_weight_decay(self) -> set:
        """Names of the parameters usually kept out of weight decay: every 0-/1-D tensor
        (BatchNorm weights and biases, the classifier bias)."""
        return {name for name, p in self.named_parameters() if p.dim() <= 1}

    def _stem_matcher(self) -> str:
        """Regex of the parameters before the first stage (whatever holds no stage, norm or head)."""
        later = [name for parts in self._stages for name in parts] + list(self.norm_modules) + [self.head_name]
        owners = []
        for name, _ in self.named_parameters():
            owner = name.rsplit(".", 1)[0]
            if not any(owner == m or owner.startswith(m + ".") for m in later) and owner not in owners:
                owners.append(owner)
        return r"^(?:" + "|".join(re.escape(o) for o in owners) + r")\."

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameter names for layer-wise learning-rate decay, in timm's format:
        ``{"stem": regex, "blocks": regex or [(regex, suffix), ...]}``; the numbers a regex captures
        order the groups (one per stage when ``coarse``, else one per block); parameters matched by
        neither (the classifier, a final norm) form the last group.  See
        :func:`video3d_zoo.param_groups.param_groups_layer_decay`."""
        raise NotImplementedError

    # -- metadata -----------------------------------------------------------------------------
    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        """What the weights are and how to feed them, derived from ``model.config`` (and, for
        weights from the manifest, its entry: licence, dataset, Hub location, upstream)."""
        config = self.__dict__.get("config")
        spec = config.input_spec if config is not None else None
        first_conv = next((name for name, m in self.named_modules() if isinstance(m, nn.Conv3d)), None)
        cfg: Dict[str, Any] = {
            "architecture": config.architecture if config is not None else type(self).__name__,
            "tag": config.tag if config is not None else None,
            "source": config.source if config is not None else None,
            "num_classes": self.num_classes,
            "labels": list(config.labels) if config is not None and config.labels else None,
            "input_spec": spec.to_dict() if spec is not None else None,
            "input_size": (self.in_chans, spec.frames, spec.crop_size, spec.crop_size) if spec else None,
            "min_input_size": (self.in_chans,) + tuple(self.min_input_size),
            "mean": spec.mean if spec else None,
            "std": spec.std if spec else None,
            "value_scale": spec.value_scale if spec else None,
            "first_conv": first_conv,
            "classifier": self.head_name,
            "license": None,
        }
        cfg.update(self.weights_metadata)
        return cfg


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions and unit BatchNorm, as the original code does."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm3d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ZeroPadShortcut(nn.Module):
    """Shortcut type A: subsample by ``stride`` and append zero channels (no parameters)."""

    def __init__(self, out_channels: int, stride: Triple) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st, sh, sw = self.stride
        x = x[:, :, ::st, ::sh, ::sw]
        extra = self.out_channels - x.shape[1]
        if extra > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, extra))
        return x


class ConvBnShortcut(nn.Sequential):
    """Shortcut type B: 1x1x1 convolution (strided) followed by BatchNorm (keys ``0.*``, ``1.*``)."""

    fusable_pairs = (("0", "1"),)

    def __init__(self, in_planes: int, out_planes: int, stride: Triple) -> None:
        super().__init__(nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm3d(out_planes))


def conv_bn_shortcut(in_planes: int, out_planes: int, stride: Triple) -> nn.Sequential:
    return ConvBnShortcut(in_planes, out_planes, stride)


def make_shortcut(shortcut_type: str, in_planes: int, out_planes: int, stride: Triple) -> Optional[nn.Module]:
    if shortcut_type not in ("A", "B"):
        raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}")
    if stride == (1, 1, 1) and in_planes == out_planes:
        return None
    if shortcut_type == "A":
        return ZeroPadShortcut(out_planes, stride)
    return conv_bn_shortcut(in_planes, out_planes, stride)


class ResNetTrunk(VideoClassifier):
    """Stem, four residual stages ``layer1..layer4`` and a linear head.

    ``drop_path_rate``: stochastic depth of the residual branches, rising linearly from 0 at the
    first block to this rate at the last (identity in eval mode; 0 builds no extra op).
    Subclasses provide ``expansion`` (output channels per ``planes``), :meth:`make_stem`
    and :meth:`make_block`.  Stage ``i`` (0-based) has ``planes = stage_widths[i]``,
    spatial stride 1 then 2, and temporal stride ``stage_stride_t[i]``.
    """

    expansion = 1
    fusable_pairs: Tuple[Tuple[str, str], ...] = (("conv1", "bn1"),)
    #: constructor arguments every registered name of the family fixes (create_model refuses them)
    fixed_by_name: Tuple[str, ...] = ("block", "layers")

    def __init__(self, layers: Sequence[int], stage_widths: Sequence[int], stem_width: int,
                 num_classes: int = 400, in_chans: int = 3, shortcut_type: str = "B",
                 stage_stride_t: Sequence[int] = (1, 2, 2, 2), drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: Optional[str] = "avg",
                 init_weights: bool = True) -> None:
        super().__init__(in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        if len(layers) != 4 or len(stage_widths) != 4 or len(stage_stride_t) != 4:
            raise ValueError("layers, stage_widths and stage_stride_t need 4 entries each")
        if any(int(n) < 1 for n in layers):
            raise ValueError(f"every stage needs at least one block, got layers={tuple(layers)}")
        self.shortcut_type = shortcut_type
        self.drop_path_rate = float(drop_path_rate)
        rates = drop_path_rates(drop_path_rate, sum(int(n) for n in layers))
        self.make_stem(in_chans, stem_width)
        in_planes = stem_width
        for i, (blocks, planes) in enumerate(zip(layers, stage_widths)):
            stride = (int(stage_stride_t[i]), 1 if i == 0 else 2, 1 if i == 0 else 2)
            stage_rates, rates = rates[:int(blocks)], rates[int(blocks):]
            stage, in_planes = self._make_stage(i, in_planes, int(planes), int(blocks), stride, stage_rates)
            setattr(self, f"layer{i + 1}", stage)
            self._spine_op((3, 3, 3), stride, (1, 1, 1))
            self._add_stage(f"layer{i + 1}", in_planes)
        self._init_head(in_planes, num_classes)
        if init_weights:
            init_conv_bn(self)

    def make_stem(self, in_chans: int, width: int) -> None:
        raise NotImplementedError

    def make_block(self, stage: int, in_planes: int, planes: int, stride: Triple,
                   downsample: Optional[nn.Module], drop_path: float = 0.0) -> nn.Module:
        """One residual block; ``drop_path`` is its stochastic-depth rate (see :func:`make_drop_path`)."""
        raise NotImplementedError

    def _make_stage(self, stage: int, in_planes: int, planes: int, blocks: int, stride: Triple,
                    rates: Sequence[float]):
        out_planes = planes * self.expansion
        downsample = make_shortcut(self.shortcut_type, in_planes, out_planes, stride)
        modules = [self.make_block(stage, in_planes, planes, stride, downsample, drop_path=rates[0])]
        for j in range(1, blocks):
            modules.append(self.make_block(stage, out_planes, planes, (1, 1, 1), None, drop_path=rates[j]))
        return nn.Sequential(*modules), out_planes

    def add_standard_stem(self, in_chans: int, width: int, kernel_t: int, stride_t: int,
                          max_pool: bool, pool_kernel_t: int = 3) -> None:
        """conv (kt x 7 x 7, stride t x 2 x 2) + BN + ReLU [+ max-pool], as ``conv1``/``bn1``/``maxpool``."""
        self.conv1 = nn.Conv3d(in_chans, width, kernel_size=(kernel_t, 7, 7), stride=(stride_t, 2, 2),
                               padding=(kernel_t // 2, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self._spine_op((kernel_t, 7, 7), (stride_t, 2, 2), (kernel_t // 2, 3, 3))
        self.maxpool = self._make_max_pool(max_pool, pool_kernel_t)

    def _make_max_pool(self, enabled: bool, kernel_t: int) -> nn.Module:
        if not enabled:
            return nn.Identity()
        kernel, stride, padding = (kernel_t, 3, 3), (min(2, kernel_t), 2, 2), (kernel_t // 2, 1, 1)
        self._spine_op(kernel, stride, padding)
        return nn.MaxPool3d(kernel_size=kernel, stride=stride, padding=padding)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return {"stem": self._stem_matcher(),
                "blocks": r"^layer(\d+)\." if coarse else r"^layer(\d+)\.(\d+)\."}


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Stem weights for ``in_chans`` input channels from weights trained on RGB.

    Rule: every new input channel gets the mean of the three RGB filters, scaled by
    ``3 / in_chans``.  A clip whose channels are all equal therefore produces exactly the
    response the RGB model gives to the matching gray clip: for 1 channel (grayscale, depth)
    this is the sum of the RGB filters; for 2 channels (optical flow x/y) each gets 1.5x the
    mean filter.  ``in_chans == 3`` returns the weights unchanged.
    """
    if weight.dim() != 5:
        raise ValueError(f"expected a 5-D Conv3d weight, got shape {tuple(weight.shape)}")
    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] != 3:
        raise ValueError(f"can adapt RGB stem weights only, these take {weight.shape[1]} channels")
    mean = weight.mean(dim=1, keepdim=True) * (3.0 / in_chans)
    return mean.expand(-1, in_chans, -1, -1, -1).contiguous()
