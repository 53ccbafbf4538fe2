"""The model interface every zoo model implements: :class:`VideoClassifier` (see docs/model-interface.md)."""

from __future__ import annotations

import functools
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError, InputShapeError
from .features import FeatureInfo, FeatureInfoList, take_indices
from .regularize import PrunedModule, _checkpoint_contexts, _run_modules

Triple = Tuple[int, int, int]


def triple(value) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"expected an int or 3 ints, got {value!r}")
    return out  # type: ignore[return-value]


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


def out_length(ops: Sequence[Tuple[int, int, int]], n: int) -> int:
    """Length after every (kernel, stride, padding) op, from ``n``."""
    for kernel, stride, padding in ops:
        n = _out_len(n, kernel, stride, padding)
    return n


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
    directly follows the convolution, so inference can fold it (see ``video3d_zoo.inference.prepare``).

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
        if self.training and x.shape[0] == 1 and self._one_value_per_channel_at_the_end(t, h, w):
            raise InputShapeError(
                f"in training mode BatchNorm needs more than one value per channel, but one clip of {t} x {h} x "
                f"{w} reaches the last stage as 1 x 1 x 1; train on batches of 2 or more clips or on larger "
                "clips, or call model.eval() for inference")

    def _one_value_per_channel_at_the_end(self, t: int, h: int, w: int) -> bool:
        final = (out_length(self._ops_t, t), out_length(self._ops_s, h), out_length(self._ops_s, w))
        return final == (1, 1, 1) and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())

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
        :func:`video3d_zoo.train.param_groups.param_groups_layer_decay`."""
        raise NotImplementedError

    # -- metadata -----------------------------------------------------------------------------
    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        """What the weights are and how to feed them, derived from ``model.config`` (and, for
        weights from the manifest, its entry: licence, dataset, Hub location, upstream).  timm's
        keys (``mean`` / ``std`` on the 0-1 scale, ``input_size``, ``crop_pct``, ``interpolation``,
        ``label_names``) sit beside ``input_spec`` and ``value_scale``, which are exact."""
        config = self.__dict__.get("config")
        spec = config.input_spec if config is not None else None
        first_conv = next((name for name, m in self.named_modules() if isinstance(m, nn.Conv3d)), None)
        cfg: Dict[str, Any] = {
            "architecture": config.architecture if config is not None else type(self).__name__,
            "tag": config.tag if config is not None else None,
            "source": config.source if config is not None else None,
            "num_classes": self.num_classes,
            "labels": list(config.labels) if config is not None and config.labels else None,
            "label_names": list(config.labels) if config is not None and config.labels else None,
            "input_spec": spec.to_dict() if spec is not None else None,
            **(spec.timm_data_config(self.in_chans) if spec is not None else
               dict.fromkeys(("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation"))),
            "min_input_size": (self.in_chans,) + tuple(self.min_input_size),
            "value_scale": spec.value_scale if spec else None,
            "first_conv": first_conv,
            "classifier": self.head_name,
            "license": None,
        }
        cfg.update(self.weights_metadata)
        return cfg
