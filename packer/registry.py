"""Registries of named backends (predictors, solvers), selectable by name or by passing an object.

An unknown name is an ``InputError`` listing the valid names, and for a backend whose optional
dependency is missing, the extra to install. A backend can be *declared* by the module that
registers it, so the registry lists it without importing that module (and its numba kernels or
solver libraries) until it is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from .errors import InputError

__all__ = ["Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    factory: Callable[..., T]
    requires: tuple[str, ...]   # importable modules the backend needs
    extra: str | None           # the pip extra that installs them
    summary: str


class Registry(Generic[T]):
    """Backends of one kind (``"predictor"``, ``"solver"``) registered by name."""

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self._entries: dict[str, _Entry[T]] = {}
        self._declared: dict[str, str] = {}  # name -> the module that registers it when imported

    def register(self, name: str, factory: Callable[..., T], *, summary: str = "",
                 requires: tuple[str, ...] = (), extra: str | None = None) -> None:
        """Register ``factory`` under ``name`` (a declared name is registered by its own module)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        module = self._declared.get(name)
        if module is not None and getattr(factory, "__module__", None) != module:
            raise ValueError(f"{self.kind} {name!r} is declared by {module}, not {factory.__module__}")
        self._entries[name] = _Entry(factory, tuple(requires), extra, summary)

    def declare(self, name: str, module: str) -> None:
        """List ``name`` now and import ``module``, which registers it, only when it is first used."""
        if name in self._entries or name in self._declared:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._declared[name] = module

    def _entry(self, name: str) -> _Entry[T] | None:
        if name not in self._entries and name in self._declared:
            importlib.import_module(self._declared[name])
            if name not in self._entries:
                raise RuntimeError(f"{self._declared[name]} does not register the {self.kind} {name!r} it declares")
        return self._entries.get(name)

    def names(self) -> list[str]:
        """Every registered or declared name, available or not (nothing is imported)."""
        return sorted(self._entries.keys() | self._declared.keys())

    def available(self, name: str) -> bool:
        e = self._entry(name)
        return e is not None and all(importlib.util.find_spec(m) is not None for m in e.requires)

    def summary(self, name: str) -> str:
        e = self._entry(name)
        if e is None:
            raise KeyError(name)
        return e.summary

    def get(self, spec: str | T, field: str | None = None, **options: Any) -> T:
        """The backend named ``spec`` (built with ``options``), or ``spec`` itself if it is a backend."""
        field = field or self.kind
        if isinstance(spec, self.base):
            if options:
                raise InputError(field, f"options {sorted(options)} apply only when the {self.kind} is given by name")
            return spec
        if not isinstance(spec, str):
            raise InputError(field, f"expected a {self.kind} name or a {self.base.__name__}, got {type(spec).__name__}")
        e = self._entry(spec)
        if e is None:
            raise InputError(field, f"unknown {self.kind} {spec!r}; valid: {', '.join(self.names())}")
        missing = [m for m in e.requires if importlib.util.find_spec(m) is None]
        if missing:
            how = f'pip install "packer[{e.extra}]"' if e.extra else f"pip install {' '.join(missing)}"
            raise InputError(field, f"{self.kind} {spec!r} needs {', '.join(missing)}; install it with: {how}")
        return e.factory(**options)

