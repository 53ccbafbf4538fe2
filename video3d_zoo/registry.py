"""The one model registry: names, aliases and builders.

Model files register their factory functions with :func:`register_model`.  The registry is
strict: registering a name or alias twice raises :class:`~video3d_zoo.errors.RegistryError`,
so every name means exactly one architecture.  It answers :func:`list_models`, feeds
``create_model``, ``hubconf.py``, the command line and the generated docs tables.

Builders only build architectures (random initialisation, no weights); loading weights is
the job of :mod:`video3d_zoo.weights`.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .errors import RegistryError, UnknownModelError


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
        close = fnmatch.filter(self.names(include_aliases=True), f"*{name.split('.')[0][:6]}*")[:8]
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
