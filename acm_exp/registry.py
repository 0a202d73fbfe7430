"""One registry pattern for everything looked up by name: merge methods, task families, coefficient providers.

A ``Registry`` maps names to things. A thing gets there in one of two ways:

- registered: ``REGISTRY.add(name, thing)``, or ``@REGISTRY.register(name)`` on a class or function;
- declared by where it lives, and imported only when first looked up: ``"package.module:attribute"``
  (that attribute), or ``"package.module"`` (a module whose import registers the name itself).

Declaring is what keeps start-up fast: the CLI validates a config against the registries' names
without importing the modules behind them (which import torch). An unknown name raises the registry's
error with one line that lists the known names.

This module is a leaf: it imports nothing of acm_exp, so every layer may use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_UNKNOWN = "{kind} {name!r} is unknown; expected one of {known}"


def resolve_location(location: str) -> Any:
    """The object at ``"package.module:attribute"``, or the module ``"package.module"``, imported now."""
    module, _, attribute = location.partition(":")
    imported = importlib.import_module(module)
    return getattr(imported, attribute) if attribute else imported


class Registry(Generic[T]):
    """Name -> thing, registered or declared by location (see the module docstring).

    ``kind`` names the things in messages ("merge method"); ``error`` is the exception an unknown name
    raises (a configuration error for names users write); ``unknown`` formats its message from
    ``kind``, ``name`` and ``known`` (the sorted names, as a tuple). ``entries`` is the dict that holds
    the registered things, for a caller that keeps its own (by default a new one).
    """

    def __init__(
        self,
        kind: str,
        *,
        declared: Mapping[str, str] | None = None,
        error: type[Exception] = LookupError,
        unknown: str = DEFAULT_UNKNOWN,
        entries: dict[str, T] | None = None,
    ) -> None:
        self.kind = kind
        self.error = error
        self.unknown = unknown
        self.entries: dict[str, T] = {} if entries is None else entries
        self._declared: dict[str, str] = dict(declared or {})

    # -- registering

    def add(self, name: str, thing: T) -> T:
        """Register ``thing`` as ``name``; the same thing again is a no-op, another one under a taken name
        is a programming error (ValueError)."""
        if name in self.entries and self.entries[name] is not thing:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self.entries[name] = thing
        return thing

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``: ``@REGISTRY.register("name")`` above a class or function."""

        def decorate(thing: T) -> T:
            return self.add(name, thing)

        return decorate

    def declare(self, name: str, location: str) -> None:
        """Say where ``name`` lives (``"module:attribute"`` or ``"module"``) without importing it."""
        if name in self._declared and self._declared[name] != location:
            raise ValueError(f"{self.kind} {name!r} is already declared at {self._declared[name]}")
        self._declared[name] = location

    def remove(self, name: str) -> None:
        """Forget ``name``, registered or declared (tests that register a thing of their own)."""
        self.entries.pop(name, None)
        self._declared.pop(name, None)

    # -- looking up

    @property
    def declared(self) -> dict[str, str]:
        """Name -> location of the things declared (imported or not)."""
        return dict(self._declared)

    def names(self) -> tuple[str, ...]:
        """Every known name, sorted; imports nothing."""
        return tuple(sorted({*self.entries, *self._declared}))

    def __contains__(self, name: object) -> bool:
        return name in self.entries or name in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def get(self, name: str) -> T:
        """The thing registered as ``name``, importing its module on first use; ``error`` when unknown."""
        if name in self.entries:
            return self.entries[name]
        if name not in self._declared:
            known = self.names()
            raise self.error(self.unknown.format(kind=self.kind, name=name, known=known))
        location = self._declared[name]
        if ":" in location:
            return self.add(name, resolve_location(location))
        resolve_location(location)
        if name not in self.entries:
            raise RuntimeError(f"{self.kind} {name!r}: importing {location} did not register it")
        return self.entries[name]

    def as_dict(self) -> dict[str, T]:
        """Every thing by name, in alphabetical order (the declared ones imported now)."""
        return {name: self.get(name) for name in self.names()}


def lazy_attributes(module: str, locations: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``module`` that imports each name of ``locations``
    (name -> the module defining it) on first use: the package imports light, its heavy names stay
    reachable as ``package.name``."""

    def __getattr__(name: str) -> Any:
        if name in locations:
            return getattr(importlib.import_module(locations[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
