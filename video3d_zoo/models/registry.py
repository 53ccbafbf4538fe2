"""The one model registry: names, aliases, builders and model families.

Model files register their factory functions with :func:`register_model` and, next to them,
what the zoo knows about their family with :func:`register_family` (a :class:`FamilySpec`:
docs title, stem and classifier names, tiny test arguments, how to recognise and read its
checkpoints).  Conversion, stem adaptation, the tests and the docs ask the registry; there is
no side table of families anywhere else.  The registry is
strict: registering a name or alias twice raises :class:`~video3d_zoo.errors.RegistryError`,
so every name means exactly one architecture.  It answers :func:`list_models`, feeds
``create_model``, ``hubconf.py``, the command line and the generated docs tables.

Builders only build architectures (random initialisation, no weights); loading weights is
the job of :mod:`video3d_zoo.weights.loading`.
"""

from __future__ import annotations

import fnmatch
import inspect
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from ..errors import CheckpointError, RegistryError, UnknownModelError
from .layout import KENSHOHARA2017, KENSHOHARA2020
from .suggest import suggest_names


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one registered architecture."""

    name: str
    family: str
    builder: Callable[..., Any]
    aliases: Tuple[str, ...] = ()
    input_preset: str = "kenshohara2020"
    origin: str = ""

    @property
    def description(self) -> str:
        """The docstring's first paragraph, on one line."""
        doc = inspect.getdoc(self.builder) or ""
        return " ".join(doc.split("\n\n")[0].split()) if doc else self.name


class ModelRegistry:
    """Name -> :class:`ModelSpec`, with explicit aliases and no silent overrides."""

    def __init__(self) -> None:
        self._specs: Dict[str, ModelSpec] = {}
        self._aliases: Dict[str, str] = {}

    def register(self, spec: ModelSpec) -> None:
        for taken in (spec.name,) + tuple(spec.aliases):
            if taken in self._specs or taken in self._aliases:
                owner = self._aliases.get(taken, taken)
                raise RegistryError(f"model name {taken!r} is already registered (by {owner!r})")
        if len(set(spec.aliases)) != len(spec.aliases) or spec.name in spec.aliases:
            raise RegistryError(f"model {spec.name!r} lists an alias twice or aliases itself")
        self._specs[spec.name] = spec
        for alias in spec.aliases:
            self._aliases[alias] = spec.name

    def resolve(self, name: str) -> str:
        """Canonical name for ``name`` or one of its aliases."""
        if name in self._specs:
            return name
        if name in self._aliases:
            return self._aliases[name]
        close = suggest_names(name.split(".")[0], self.names(include_aliases=True))
        hint = f"; similar: {close}" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint}. video3d_zoo.list_models() lists every model.")

    def spec(self, name: str) -> ModelSpec:
        return self._specs[self.resolve(name)]

    def names(self, pattern: str = "*", include_aliases: bool = False) -> List[str]:
        pool = list(self._specs)
        if include_aliases:
            pool += list(self._aliases)
        return sorted(n for n in pool if fnmatch.fnmatchcase(n, pattern))

    def aliases(self) -> Mapping[str, str]:
        return dict(self._aliases)

    def families(self) -> List[str]:
        return sorted({s.family for s in self._specs.values()})

    def __contains__(self, name: object) -> bool:
        return name in self._specs or name in self._aliases

    def __len__(self) -> int:
        return len(self._specs)


MODELS = ModelRegistry()


def register_model(
    name: Optional[str] = None,
    *,
    family: str,
    aliases: Tuple[str, ...] = (),
    input_preset: str = "kenshohara2020",
    origin: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering an architecture builder under ``name`` (default: its ``__name__``).

    Register a ``def`` named like the model, so ``grep "def resnet3d_50"`` finds it.
    """

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        MODELS.register(ModelSpec(
            name=name or builder.__name__, family=family, builder=builder,
            aliases=tuple(aliases), input_preset=input_preset, origin=origin))
        return builder

    return decorate


def list_models(pattern: str = "*", include_aliases: bool = False) -> List[str]:
    """Sorted registered model names matching a shell-style ``pattern`` (e.g. ``"resnet3d_*"``)."""
    return MODELS.names(pattern, include_aliases=include_aliases)


def get_model_spec(name: str) -> ModelSpec:
    return MODELS.spec(name)


def build_model(name: str, **kwargs: Any):
    """Build the architecture ``name`` with random initialisation (no weights)."""
    spec = get_model_spec(name)
    return spec.builder(**kwargs)


# -- model families ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilySpec:
    """Everything the zoo knows about one model family beyond its builders.

    * ``name``: the ``family=`` its models register under.
    * ``title``: its section heading in ``docs/models.md``.
    * ``stem_conv``: module name of the convolution that sees the input channels (adapted
      when ``in_chans`` differs); a tuple when the family's architectures differ (the first
      name a model has is used).
    * ``classifier``: module name of the final linear layer (the models' ``head_name``).
    * ``tiny_kwargs``: architecture arguments that make every model of the family tiny (tests).
    * ``recognise(state_dict) -> bool``: is this zoo-layout state dict one of the family's?
      Families must not overlap: conversion needs exactly one family to say yes.
    * ``read_layout(state_dict) -> LayoutReading``: the registered model name, its arguments
      and depth (:class:`video3d_zoo.models.layout.LayoutReading`) read from names and shapes.
      Classes and input channels are read by the registry from ``classifier`` / ``stem_conv``.
    * ``layouts``: the checkpoint layouts (:mod:`video3d_zoo.weights.convert`) whose renamed state
      dicts are candidates for this family; the zoo's own layout is ``kenshohara2020``.
    * ``arch_names``: names the original training code stores in a checkpoint's ``arch``
      entry (``resnext`` of ``resnext-101``); a stored name must agree with the tensors.
    * ``module``: where the family is registered (filled in by :func:`register_family`).
    """

    name: str
    title: str = ""
    stem_conv: Union[str, Tuple[str, ...]] = ()
    classifier: str = ""
    tiny_kwargs: Optional[Mapping[str, Any]] = None
    recognise: Optional[Callable[[Mapping[str, Any]], bool]] = None
    read_layout: Optional[Callable[[Mapping[str, Any]], Any]] = None
    layouts: Tuple[str, ...] = (KENSHOHARA2017, KENSHOHARA2020)
    arch_names: Tuple[str, ...] = ()
    module: str = ""

    @property
    def stem_convs(self) -> Tuple[str, ...]:
        return (self.stem_conv,) if isinstance(self.stem_conv, str) else tuple(self.stem_conv)

    @property
    def source_file(self) -> str:
        """The file that registers the family, relative to the repository (for messages)."""
        return module_file(self.module)

    def missing(self) -> List[str]:
        """What the family does not register yet, each as a message naming the fix and its file."""
        wanted = (("title", "a title"), ("stem_conv", "stem_conv"), ("classifier", "a classifier"),
                  ("tiny_kwargs", "tiny_kwargs"), ("recognise", "recognise function"),
                  ("read_layout", "read_layout function"))
        return [f"family {self.name!r} registers no {label}: add {field_name}= to its FamilySpec in "
                f"{self.source_file}" for field_name, label in wanted if getattr(self, field_name) in (None, "", ())]


def module_file(module: str) -> str:
    """``video3d_zoo.models.x`` -> ``video3d_zoo/models/x.py`` (relative to the repository)."""
    file = getattr(sys.modules.get(module), "__file__", None)
    if not file:
        return module or "<unknown module>"
    path = Path(file).resolve()
    root = Path(__file__).resolve().parents[2]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


class FamilyRegistry:
    """Family name -> :class:`FamilySpec`, in registration order (the docs' section order)."""

    def __init__(self) -> None:
        self._families: Dict[str, FamilySpec] = {}

    def register(self, spec: FamilySpec) -> None:
        if not isinstance(spec.name, str) or not spec.name:
            raise RegistryError(f"a FamilySpec needs a name, got {spec.name!r}")
        if spec.name in self._families:
            raise RegistryError(f"family {spec.name!r} is already registered (in "
                                f"{self._families[spec.name].source_file})")
        for attr in ("recognise", "read_layout"):
            if getattr(spec, attr) is not None and not callable(getattr(spec, attr)):
                raise RegistryError(f"family {spec.name!r}: {attr} must be a function")
        self._families[spec.name] = spec

    def get(self, name: str) -> FamilySpec:
        if name not in self._families:
            raise RegistryError(f"family {name!r} is not registered; known: {list(self._families)}")
        return self._families[name]

    def all(self) -> List[FamilySpec]:
        return list(self._families.values())

    def __contains__(self, name: object) -> bool:
        return name in self._families


FAMILIES = FamilyRegistry()


def register_family(spec: FamilySpec) -> FamilySpec:
    """Register a model family (call it in the module that defines the family's factories)."""
    if not spec.module:
        spec = replace(spec, module=sys._getframe(1).f_globals.get("__name__", ""))
    FAMILIES.register(spec)
    return spec


def get_family(name: str) -> FamilySpec:
    return FAMILIES.get(name)


def list_families() -> List[FamilySpec]:
    """Every registered family, in registration order."""
    return FAMILIES.all()


def family_of(model_name: str) -> FamilySpec:
    """The :class:`FamilySpec` of a registered model (name or alias)."""
    spec = get_model_spec(model_name)
    if spec.family not in FAMILIES:
        raise RegistryError(_orphan(spec))
    return FAMILIES.get(spec.family)


def _orphan(spec: ModelSpec) -> str:
    return (f"model {spec.name!r} belongs to family {spec.family!r}, which has no FamilySpec: add "
            f"register_family(FamilySpec(name={spec.family!r}, ...)) to {module_file(spec.builder.__module__)}")


def family_problems() -> List[str]:
    """Every gap between registered models and families, as messages naming the file to fix."""
    specs = [MODELS.spec(name) for name in list_models()]
    problems = []
    for family in list_families():
        problems += family.missing()
        if not any(s.family == family.name for s in specs):
            problems.append(f"family {family.name!r} has no registered models: register its builders with "
                            f"@register_model(family={family.name!r}) in {family.source_file}")
    return problems + [_orphan(s) for s in specs if s.family not in FAMILIES]


def match_family(sd: Mapping[str, Any], layout: str) -> FamilySpec:
    """The one family that recognises a zoo-layout state dict converted from ``layout``.

    Candidates are the families listing ``layout``; exactly one must recognise the tensors.
    None or several is a :class:`CheckpointError` naming the candidates.
    """
    candidates = [f for f in list_families() if layout in f.layouts and f.recognise is not None]
    hits = [f for f in candidates if f.recognise(sd)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        tried = ", ".join(f.name for f in candidates) or "none"
        raise CheckpointError(
            f"unrecognised checkpoint layout: no model family recognises these {layout}-layout tensors "
            f"(families tried: {tried}); first keys: {list(sd)[:6]}")
    raise CheckpointError(
        f"ambiguous checkpoint: families {', '.join(f.name for f in hits)} all recognise these {layout}-layout "
        f"tensors; their recognise functions overlap (in {', '.join(sorted({f.source_file for f in hits}))})")
