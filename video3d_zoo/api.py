"""Public model construction: :func:`create_model` and one factory function per registered model.

``create_model("resnet3d_50")`` builds a randomly initialised network;
``create_model("resnet3d_50", pretrained=...)`` goes through :func:`video3d_zoo.weights.load_pretrained`,
the single path every pretrained load takes (factory functions and ``hubconf.py`` included).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

from torch import nn

from .config import ModelConfig, input_preset
from .errors import ConfigError
from .registry import MODELS, get_model_spec, list_models

PretrainedArg = Any  # None | bool | str (tag, alias or path)


def split_name(name: str):
    """``"resnext3d_101.k400_64f"`` -> (canonical model name, tag or None)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    base, _, tag = name.partition(".")
    return get_model_spec(base).name, (tag or None)


def create_model(name: str, pretrained: PretrainedArg = None, num_classes: Optional[int] = None,
                 in_chans: int = 3, allow_nonfinite: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered model, optionally with pretrained weights.

    Args:
        name: a registered name or alias (``list_models()``), optionally ``name.tag``; or
            ``hf-hub:ORG/REPO[@REVISION]`` for a zoo folder on the Hugging Face Hub.
            (:func:`video3d_zoo.resolve.load_model` reads every kind of reference, paths too.)
        pretrained: ``None``/``False`` for random weights; ``True`` for the default weights of
            the model (or of ``tag``); a tag (``"k400_64f"``) or alias (``"kinetics"``) from
            the weights manifest; or a path to a local checkpoint file or folder.
        num_classes: classifier size; with pretrained weights of another size the backbone is
            kept and the head is freshly initialised.  Default: 400 (or the weights' own).
        in_chans: input channels; pretrained RGB stems are adapted
            (:func:`video3d_zoo.layers.adapt_input_conv`).
        allow_nonfinite: load pretrained weights even if they hold NaN / inf values or negative
            BatchNorm running variances (refused by default: such weights give wrong answers).
            A loading option only: it never reaches the architecture builder.
        **kwargs: architecture arguments (e.g. ``shortcut_type="A"``, ``drop_rate=0.2``).

    The returned model carries ``model.config`` (a :class:`~video3d_zoo.config.ModelConfig`).
    """
    if isinstance(name, str) and name.startswith("hf-hub:"):
        if pretrained not in (None, True):
            raise ConfigError(f"{name!r} names its weights; pretrained={pretrained!r} cannot select others")
        from .resolve import load_model

        return load_model(name, num_classes=num_classes, in_chans=None if in_chans == 3 else in_chans,
                          allow_nonfinite=allow_nonfinite, **kwargs)
    canonical, tag = split_name(name)
    if tag is not None and pretrained in (None, False):
        pretrained = None
    elif tag is not None:
        if isinstance(pretrained, str):
            raise ConfigError(f"{name!r} names the tag {tag!r} and pretrained={pretrained!r} names "
                              "another; give only one")
        pretrained = tag
    if pretrained is None or pretrained is False:
        return _random_model(canonical, num_classes, in_chans, kwargs)
    from .weights import load_pretrained

    return load_pretrained(canonical, pretrained, num_classes=num_classes, in_chans=in_chans,
                           arch_kwargs=kwargs, allow_nonfinite=allow_nonfinite)


def _random_model(name: str, num_classes: Optional[int], in_chans: int, kwargs: Dict[str, Any]) -> nn.Module:
    spec = get_model_spec(name)
    num_classes = 400 if num_classes is None else num_classes
    try:
        model = spec.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:
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
