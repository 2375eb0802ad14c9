"""Service kinds: one module each (postgres.py, redis.py, http.py, ...).

A kind module defines ``KIND``, an instance of :class:`Kind`, which says
everything that kind means: the values and URLs it derives, its secrets, and
how test workers are isolated on it. `stack.yml` names kinds; nothing outside
this package branches on a kind or a service name. A new kind is a new module
here plus its `stack.yml` and `compose.yaml` entries: it is found by name.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..basics import StackError
from .base import Kind, LocalRoute, LocalServer, Run, Service, Worker

__all__ = [
    "DEFAULT",
    "Kind",
    "LocalRoute",
    "LocalServer",
    "Run",
    "Service",
    "Worker",
    "check_declared",
    "get",
    "name_of",
    "names",
    "of",
    "secret_keys",
]

DEFAULT = "http"  # a service whose stack.yml entry names no kind

_LOADED: dict[str, Kind] = {}
_HERE = os.path.dirname(__file__)


def names() -> list[str]:
    """Every kind this package knows (its modules but base)."""
    return sorted(n[:-3] for n in os.listdir(_HERE) if n.endswith(".py") and not n.startswith("_") and n != "base.py")


def get(name: str) -> Kind:
    """The kind called `name`; StackError when there is no such module."""
    if name not in _LOADED:
        if name not in names():
            raise StackError(f"unknown kind {name!r}")
        kind = importlib.import_module(f"{__name__}.{name}").KIND
        if not isinstance(kind, Kind) or kind.name != name:
            raise StackError(f"kinds/{name}.py must define KIND = <a Kind named {name!r}>")
        _LOADED[name] = kind
    return _LOADED[name]


def name_of(service: Mapping[str, Any]) -> str:
    """The kind a stack.yml service entry names (DEFAULT when it names none)."""
    return str(service.get("kind", DEFAULT))


def of(service: Mapping[str, Any]) -> Kind:
    """The Kind of a stack.yml service entry."""
    return get(name_of(service))


def secret_keys(of_services: Iterable[Kind], stored: bool = False) -> list[str]:
    """The secret settings of these services' kinds (POSTGRES_PASSWORD, ...), each once, in order; `stored`: only
    those a service keeps in its volume (a lost one locks the data), not those it takes afresh at every start."""
    keys: list[str] = []
    for kind in of_services:
        for key in kind.secrets if not stored or kind.secrets_stored else ():
            if key not in keys:
                keys.append(key)
    return keys


def check_declared(fname: str, service: str, kind_name: object, seen: dict[str, str]) -> None:
    """Validate a service's `kind:` in stack.yml (`seen`: kind -> first service of it)."""
    where = f"{fname}: service {service!r}"
    if not isinstance(kind_name, str) or kind_name not in names():
        raise StackError(f"{where}: kind {kind_name!r} must be one of {', '.join(names())}")
    kind = get(kind_name)
    if kind.one_per_stack and kind_name in seen:
        raise StackError(
            f"{where}: a second service of kind {kind_name} (besides {seen[kind_name]!r}); its variables "
            f"({', '.join(kind.variables)}) would clash: one {kind_name} service per stack"
        )
    seen.setdefault(kind_name, service)
