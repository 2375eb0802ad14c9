"""Where the project is: STACK_ROOT (the Makefile sets it), else the nearest
directory at or above the working directory holding stack.yml. Only `os`:
the cached `make env` path uses it before anything else is imported."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["find"]


def find(settings: Settings, start: str | None = None) -> str | None:
    """The project directory, or None when there is none."""
    if settings.get("STACK_ROOT"):
        return os.path.realpath(settings.get("STACK_ROOT"))
    here = os.path.realpath(start or os.getcwd())
    while True:
        if os.path.isfile(os.path.join(here, "stack.yml")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent
