"""Public model construction: :func:`create_model`, :func:`load_model` and one factory function per registered model.

``create_model("resnet3d_50")`` builds a randomly initialised network;
``create_model("resnet3d_50", pretrained=...)`` goes through :func:`video3d_zoo.weights.loading.load_pretrained`,
the single path every pretrained load takes (factory functions and ``hubconf.py`` included).
:func:`load_model` takes any reference (name, path or ``hf-hub:``).  Every reference is read by
:func:`~video3d_zoo.weights.resolve.parse_model_ref` first.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import limits
from .models.config import ARCH_SIZE_BOUNDS, ModelConfig, check_arch_sizes, input_preset
from .errors import ConfigError
from .models.registry import MODELS, get_model_spec, list_models
from .weights.loading import from_pretrained, load_pretrained
from .weights.resolve import ModelRef, parse_model_ref

PretrainedArg = Any  # None | bool | str (tag, alias or path)


def split_name(name: str):
    """``"resnext3d_101.k400_64f"`` -> (canonical model name, tag or None)."""
    ref = parse_model_ref(name)
    if ref.kind != "name":
        raise ConfigError(f"{ref.text!r} is a checkpoint {'path' if ref.kind == 'path' else 'on the Hub'}, not a "
                          f"model name: load it with load_model({ref.text!r}), or pass it as pretrained= of "
                          "create_model(NAME, ...)")
    return ref.name, ref.tag


#: create_model's own keyword arguments (everything else goes to the architecture)
CREATE_MODEL_ARGS = ("pretrained", "num_classes", "in_chans", "allow_nonfinite", "checkpoint_path",
                     "features_only", "out_indices")
#: arguments create_model owns although every model class takes them too
_OWNED_ARCH_ARGS = ("self", "num_classes", "in_chans")


def create_model(name: str, pretrained: PretrainedArg = None, num_classes: Optional[int] = None,
                 in_chans: int = 3, allow_nonfinite: bool = False, *,
                 checkpoint_path: Optional[Union[str, os.PathLike]] = None, features_only: bool = False,
                 out_indices: Union[None, int, Sequence[int]] = None, **kwargs: Any) -> nn.Module:
    """Build a registered model, optionally with pretrained weights.

    Args:
        name: a registered name or alias (``list_models()``), optionally ``name.tag``; or
            ``hf-hub:ORG/REPO[@REVISION]`` for a zoo folder on the Hugging Face Hub.
            (:func:`load_model` reads every kind of reference, paths too.)
        pretrained: ``None``/``False`` for random weights; ``True`` for the default weights of
            the model (or of ``tag``); a tag (``"k400_64f"``) or alias (``"kinetics"``) from
            the weights manifest; a path to a local checkpoint file or folder (text that looks
            like a path, or ends in a checkpoint suffix, is one: a missing file is an error that
            says so); or ``hf-hub:ORG/REPO[@REVISION]`` (a zoo folder of this architecture).
        num_classes: classifier size; with pretrained weights of another size the backbone is
            kept and the head is freshly initialised.  Default: 400 (or the weights' own).
        in_chans: input channels; pretrained RGB stems are adapted
            (:func:`video3d_zoo.layers.adapt_input_conv`).
        allow_nonfinite: load pretrained weights even if they hold NaN / inf values or negative
            BatchNorm running variances (refused by default: such weights give wrong answers).
            A loading option only: it never reaches the architecture builder.
        checkpoint_path: a checkpoint file or folder to load, as timm spells it; the same as
            ``pretrained=<path>`` (give one of the two).
        features_only: return a backbone whose ``model(x)`` is the list of the ``out_indices``
            stage outputs (N x C x T x H x W each); the classifier and the stages after the last
            output are dropped after the weights are loaded (``VideoClassifier.as_backbone``).
        out_indices: stages a features-only backbone returns: a sequence of stage indices
            (negative ones count from the end) or an int ``n`` for the last ``n``; default all.
        **kwargs: architecture arguments (e.g. ``shortcut_type="A"``, ``drop_rate=0.2``,
            ``drop_path_rate=0.1``, ``global_pool="max"``); an unknown one is a
            :class:`~video3d_zoo.errors.ConfigError` listing every accepted argument.

    The returned model carries ``model.config`` (a :class:`~video3d_zoo.models.config.ModelConfig`)
    and ``model.pretrained_cfg`` (the weights' metadata as a dict).
    """
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices selects the outputs of a backbone; pass features_only=True with it")
    load_options = {"features_only": features_only, "out_indices": out_indices} if features_only else {}
    if isinstance(name, str) and parse_model_ref(name).kind == "hf-hub":
        if pretrained not in (None, True) or checkpoint_path is not None:
            selected = f"checkpoint_path={os.fspath(checkpoint_path)!r}" if checkpoint_path is not None \
                else f"pretrained={pretrained!r}"
            raise ConfigError(f"{name!r} names its weights; {selected} cannot select others")
        return load_model(name, num_classes=num_classes, in_chans=None if in_chans == 3 else in_chans,
                          allow_nonfinite=allow_nonfinite, **load_options, **kwargs)
    if checkpoint_path is not None:
        if pretrained not in (None, False):
            raise ConfigError(f"checkpoint_path={os.fspath(checkpoint_path)!r} and pretrained={pretrained!r} both "
                              "name weights; give only one")
        pretrained = Path(os.fspath(checkpoint_path))
    canonical, tag = split_name(name)
    if kwargs:
        check_arch_kwargs(canonical, kwargs)
    if tag is not None and isinstance(pretrained, Path):
        raise ConfigError(f"{name!r} names the tag {tag!r} and checkpoint_path names other weights; give only one")
    if tag is not None and pretrained in (None, False):
        pretrained = None
    elif tag is not None:
        if isinstance(pretrained, (str, os.PathLike)):
            raise ConfigError(f"{name!r} names the tag {tag!r} and pretrained={pretrained!r} names "
                              "another; give only one")
        pretrained = tag
    if pretrained is None or pretrained is False:
        model = _random_model(canonical, num_classes, in_chans, kwargs)
        if features_only:
            model.as_backbone(out_indices)
        return model
    return load_pretrained(canonical, pretrained, num_classes=num_classes, in_chans=in_chans,
                           arch_kwargs=kwargs, allow_nonfinite=allow_nonfinite, **load_options)


def load_model(ref: Any, *, pretrained: bool = True, num_classes: Optional[int] = None,
               in_chans: Optional[int] = None, allow_nonfinite: bool = False, features_only: bool = False,
               out_indices=None, **kwargs: Any) -> nn.Module:
    """The model ``ref`` names, ready in eval mode: a registered name (``NAME`` or ``NAME.TAG``: its
    pretrained weights), a checkpoint file or folder, or ``hf-hub:ORG/REPO[@REVISION]`` (the rules:
    :mod:`video3d_zoo.weights.resolve`).

    ``pretrained=False`` is only meaningful for a bare registered name (random weights).
    ``num_classes`` / ``in_chans`` adapt the head / stem as in
    :func:`~video3d_zoo.weights.loading.from_pretrained`; ``kwargs`` go to :func:`create_model` for
    registered names, and are refused for files.  ``allow_nonfinite=True`` loads weights holding
    NaN / inf (refused by default).  ``features_only`` / ``out_indices``: a backbone returning stage
    outputs, applied after the weights are loaded (see :func:`create_model`).
    """
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices selects the outputs of a backbone; pass features_only=True with it")
    parsed = parse_model_ref(ref)
    if parsed.kind == "name":
        options = dict(kwargs, allow_nonfinite=allow_nonfinite)
        if features_only:
            options.update(features_only=True, out_indices=out_indices)
        return _load_named(parsed, pretrained, num_classes, in_chans, options)
    if not pretrained:
        raise ConfigError(f"{parsed.describe()} is a checkpoint; pretrained=False only applies to a model name")
    if kwargs:
        raise ConfigError(f"architecture arguments {sorted(kwargs)} cannot be applied to the checkpoint "
                          f"{parsed.describe()}: its config says what to build")
    return from_pretrained(parsed, num_classes=num_classes, in_chans=in_chans, allow_nonfinite=allow_nonfinite,
                           features_only=features_only, out_indices=out_indices).eval()


def _load_named(parsed: ModelRef, pretrained: bool, num_classes, in_chans, kwargs) -> nn.Module:
    if not pretrained and parsed.tag:
        raise ConfigError(f"{parsed.text!r} names the weights {parsed.tag!r}; drop the tag for random weights")
    weights = (parsed.tag or True) if pretrained else None
    model = create_model(parsed.name, pretrained=weights, num_classes=num_classes,
                         in_chans=3 if in_chans is None else in_chans, **kwargs)
    return model.eval()


@functools.lru_cache(maxsize=None)
def _architecture_class(name: str) -> type:
    """The class ``name``'s builder returns (built once on the meta device, no memory)."""
    with torch.device("meta"):
        return type(get_model_spec(name).builder(init_weights=False))


def architecture_arguments(name: str) -> Optional[Tuple[List[str], List[str]]]:
    """``(accepted, fixed)``: the architecture arguments ``create_model(name, ...)`` passes on to the
    model's class, and the class arguments the model name itself fixes (e.g. ``layers``).

    ``None`` when they cannot be known (a builder that does not build on the meta device, or a
    class taking ``**kwargs``): the builder then checks its arguments itself.
    """
    try:
        cls = _architecture_class(get_model_spec(name).name)
        signature = inspect.signature(cls.__init__)
    except Exception:  # a foreign builder: leave the checking to it
        return None
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    params = [p for p in signature.parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _OWNED_ARCH_ARGS]
    fixed = [p.name for p in params if p.name in getattr(cls, "fixed_by_name", ())]
    return [p.name for p in params if p.name not in fixed], fixed


def check_arch_kwargs(name: str, kwargs: Dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming ``create_model`` and every accepted argument when ``kwargs``
    holds one that the architecture ``name`` does not take."""
    known = architecture_arguments(name)
    if known is None:
        return
    accepted, fixed = known
    unknown = [k for k in kwargs if k not in accepted]
    if not unknown:
        return
    parts = []
    for key in unknown:
        if key in fixed:
            parts.append(f"{key!r} is fixed by the model name {name!r} (pick another registered depth or family)")
        else:
            close = difflib.get_close_matches(key, accepted + list(CREATE_MODEL_ARGS), n=2)
            parts.append(f"unknown argument {key!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)"
                                                        if close else ""))
    raise ConfigError(f"create_model({name!r}): {'; '.join(parts)}. Accepted: create_model's own "
                      f"({', '.join(CREATE_MODEL_ARGS)}) and {name}'s architecture arguments "
                      f"({', '.join(accepted)})")


def _check_model_memory(name: str, builder: Callable[..., nn.Module], kwargs: Dict[str, Any]) -> None:
    """Refuse sizes (widths, depths, classes) past their bounds, or whose weights would not fit in memory,
    measured on the meta device (nothing allocated) where the arguments are larger than the registered
    models' (the first meta build imports torch's meta kernels, about 4 s, so small models skip it)."""
    check_arch_sizes(kwargs, f"create_model({name!r})")
    sizes = [v for key in ARCH_SIZE_BOUNDS if key != "widen_factor"
             for v in (kwargs.get(key) if isinstance(kwargs.get(key), (list, tuple)) else [kwargs.get(key)])
             if isinstance(v, (int, float))]
    widen = kwargs.get("widen_factor")
    if not ((isinstance(widen, (int, float)) and widen > 1) or any(v > 2048 for v in sizes)
            or kwargs["num_classes"] > 1000 or kwargs["in_chans"] > 64):
        return
    try:
        with torch.device("meta"):
            meta = builder(**kwargs)
    except Exception:  # pylint: disable=broad-except - the real build reports a bad argument
        return
    tensors = [*meta.parameters(), *meta.buffers()]
    limits.check_memory(f"create_model({name!r}) with {kwargs}", sum(t.numel() * t.element_size() for t in tensors),
                        "use smaller architecture arguments")


def _random_model(name: str, num_classes: Optional[int], in_chans: int, kwargs: Dict[str, Any]) -> nn.Module:
    spec = get_model_spec(name)
    num_classes = 400 if num_classes is None else num_classes
    _check_model_memory(name, spec.builder, {"num_classes": num_classes, "in_chans": in_chans, **kwargs})
    try:
        model = spec.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        check_arch_kwargs(name, kwargs)  # names create_model and the accepted arguments
        raise ConfigError(f"{name}: {exc}") from exc
    except ValueError as exc:  # an argument value the architecture refuses (layers and models raise ValueError)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{name}: {exc}") from exc
    recorded = {k: v for k, v in kwargs.items() if k != "init_weights"}  # not part of the architecture
    model.config = ModelConfig(architecture=name, num_classes=num_classes, arch_kwargs=recorded,
                               in_chans=in_chans, input_spec=input_preset(spec.input_preset))
    return model


def _public_factory(name: str, exported_as: str) -> Callable[..., nn.Module]:
    spec = MODELS.spec(name)

    @functools.wraps(spec.builder)
    def factory(pretrained: PretrainedArg = None, num_classes: Optional[int] = None, in_chans: int = 3,
                **kwargs: Any) -> nn.Module:
        return create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                            **kwargs)

    factory.__name__ = factory.__qualname__ = exported_as
    factory.__module__ = "video3d_zoo"
    factory.__doc__ = (f"{spec.description}\n\nSame as ``create_model({name!r}, pretrained, num_classes, "
                       f"in_chans, **kwargs)``.")
    del factory.__wrapped__
    return factory


def public_factories(include_aliases: bool = False) -> Dict[str, Callable[..., nn.Module]]:
    """``{name: factory}`` for every registered model (and alias, for ``hubconf.py``)."""
    out = {name: _public_factory(name, name) for name in list_models()}
    if include_aliases:
        out.update({alias: _public_factory(target, alias) for alias, target in MODELS.aliases().items()})
    return out
