"""The one model registry: names, aliases, builders and model families.

Model files register their factory functions with :func:`register_model` and, next to them,
what the zoo knows about their family with :func:`register_family` (a :class:`FamilySpec`,
the family contract: docs title, stem and classifier names, tiny test arguments, regularisers
and, optionally, how to recognise and read its checkpoints).  Conversion, stem adaptation,
the tests and the docs ask the registry; there is no side table of families anywhere else.
The registry is strict: registering a name or alias twice raises :class:`~video3d_zoo.errors.RegistryError`,
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
    """The family contract: everything the zoo knows about one model family beyond its builders.

    A family is one module in ``video3d_zoo/models/`` that registers its builders
    (``@register_model(family=NAME)``) and one ``register_family(FamilySpec(...))``, plus one
    import line in ``video3d_zoo/models/__init__.py``.  Its models are
    :class:`~video3d_zoo.layers.VideoClassifier` subclasses: they declare their stages
    (``_add_stage``: names, channels, strides, the transitions a stage runs first) and every
    verb of docs/model-interface.md, so nothing about stages is repeated here.

    Required (:meth:`missing` names what is absent, with the file to fix):

    * ``name``: the ``family=`` its models register under.
    * ``title``: its section heading in ``docs/models.md`` and its row in the README.
    * ``stem_conv``: module name of the ``Conv3d`` that sees the input channels (adapted when
      ``in_chans`` differs); a tuple when the family's architectures differ (the first name a
      model has is used).
    * ``classifier``: module name of the final linear layer (the models' ``head_name``).
    * ``tiny_kwargs``: architecture arguments that make every model of the family tiny; the
      registry-wide tests build every registered model with them (keep a forward + backward of
      a minimum-size clip in milliseconds).

    Knobs the registry-wide tests read:

    * ``regularisers``: the architecture arguments taking a rate in [0, 1) that add randomness
      inside the stages while training (``drop_path_rate``, DenseNet's ``block_drop_rate``, ...)
      and change nothing in eval mode.  The tests set these, and only these, on the family's
      models; a regulariser another family lists must be refused by this one's models unless it
      lists it too (so DenseNet's ``block_drop_rate`` is never set on a ResNet).

    Optional, all or nothing - reading checkpoints without a config (:meth:`reads_checkpoints`).
    A family with foreign checkpoints to read (another code base's files, bare state dicts)
    gives both functions; a family without them writes no readers: its models load from the
    files ``save_pretrained`` writes (they carry their config) and architecture inference does
    not apply to them.

    * ``recognise(state_dict) -> bool``: is this zoo-layout state dict one of the family's?
      Families must not overlap: conversion needs exactly one family to say yes.
    * ``read_layout(state_dict) -> LayoutReading``: the registered model name, its arguments
      and depth (:class:`video3d_zoo.models.layout.LayoutReading`) read from names and shapes.
      Classes and input channels are read by the registry from ``classifier`` / ``stem_conv``.
    * ``layouts``: the checkpoint layouts (:mod:`video3d_zoo.weights.convert`) whose renamed state
      dicts are candidates for this family; the zoo's own layout is ``kenshohara2020``.
    * ``arch_names``: names the original training code stores in a checkpoint's ``arch``
      entry (``resnext`` of ``resnext-101``); a stored name must agree with the tensors.

    ``module``: where the family is registered (filled in by :func:`register_family`).
    """

    name: str
    title: str = ""
    stem_conv: Union[str, Tuple[str, ...]] = ()
    classifier: str = ""
    tiny_kwargs: Optional[Mapping[str, Any]] = None
    regularisers: Tuple[str, ...] = ()
    recognise: Optional[Callable[[Mapping[str, Any]], bool]] = None
    read_layout: Optional[Callable[[Mapping[str, Any]], Any]] = None
    layouts: Tuple[str, ...] = (KENSHOHARA2017, KENSHOHARA2020)
    arch_names: Tuple[str, ...] = ()
    module: str = ""

    @property
    def stem_convs(self) -> Tuple[str, ...]:
        return (self.stem_conv,) if isinstance(self.stem_conv, str) else tuple(self.stem_conv)

    @property
    def reads_checkpoints(self) -> bool:
        """Whether the family reads checkpoints without a config (it gives ``recognise`` and ``read_layout``)."""
        return self.recognise is not None and self.read_layout is not None

    @property
    def source_file(self) -> str:
        """The file that registers the family, relative to the repository (for messages)."""
        return module_file(self.module)

    def missing(self) -> List[str]:
        """What the family does not register yet, each as a message naming the fix and its file."""
        where = f"its FamilySpec in {self.source_file}"
        problems = [f"family {self.name!r} registers no {required}: add {required}= to {where}"
                    for required in ("title", "stem_conv", "classifier", "tiny_kwargs")
                    if getattr(self, required) in (None, "", ())]
        given = [f for f in ("recognise", "read_layout") if getattr(self, f) is not None]
        if len(given) == 1:
            other = "read_layout" if given == ["recognise"] else "recognise"
            problems.append(f"family {self.name!r} gives {given[0]} but no {other}: a family that reads "
                            f"checkpoints gives both, one that does not gives neither; fix {where}")
        if self.arch_names and not self.reads_checkpoints:
            problems.append(f"family {self.name!r} lists arch_names but reads no checkpoints (no recognise / "
                            f"read_layout): drop arch_names or add the readers to {where}")
        return problems


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
        if spec.tiny_kwargs is not None and not isinstance(spec.tiny_kwargs, Mapping):
            raise RegistryError(f"family {spec.name!r}: tiny_kwargs must be a dict of architecture arguments, "
                                f"got {spec.tiny_kwargs!r}")
        if isinstance(spec.regularisers, str) or not all(isinstance(r, str) for r in spec.regularisers):
            raise RegistryError(f"family {spec.name!r}: regularisers must be a tuple of argument names, "
                                f"got {spec.regularisers!r}")
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


def family_problems(models: Optional[ModelRegistry] = None, families: Optional[FamilyRegistry] = None) -> List[str]:
    """Every gap between registered models and families, as messages naming the file to fix.

    ``models`` / ``families``: the registries to check (default: the global ones).
    """
    models = MODELS if models is None else models
    families = FAMILIES if families is None else families
    specs = [models.spec(name) for name in models.names()]
    problems = []
    for family in families.all():
        problems += family.missing()
        if not any(s.family == family.name for s in specs):
            problems.append(f"family {family.name!r} has no registered models: register its builders with "
                            f"@register_model(family={family.name!r}) in {family.source_file}")
    return problems + [_orphan(s) for s in specs if s.family not in families]


def match_family(sd: Mapping[str, Any], layout: str, families: Optional[FamilyRegistry] = None) -> FamilySpec:
    """The one family that recognises a zoo-layout state dict converted from ``layout``.

    Candidates are the families that read checkpoints (:attr:`FamilySpec.reads_checkpoints`) of
    ``layout``; exactly one must recognise the tensors.  None or several is a
    :class:`CheckpointError` naming the candidates (and the families that read none).
    """
    everyone = (FAMILIES if families is None else families).all()
    candidates = [f for f in everyone if f.reads_checkpoints and layout in f.layouts]
    hits = [f for f in candidates if f.recognise(sd)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        tried = ", ".join(f.name for f in candidates) or "none"
        readerless = [f.name for f in everyone if not f.reads_checkpoints]
        hint = (f"; the families {', '.join(readerless)} read no checkpoints without a config: load their models "
                f"from files save_pretrained wrote" if readerless else "")
        raise CheckpointError(
            f"unrecognised checkpoint layout: no model family recognises these {layout}-layout tensors "
            f"(families tried: {tried}); first keys: {list(sd)[:6]}{hint}")
    raise CheckpointError(
        f"ambiguous checkpoint: families {', '.join(f.name for f in hits)} all recognise these {layout}-layout "
        f"tensors; their recognise functions overlap (in {', '.join(sorted({f.source_file for f in hits}))})")
