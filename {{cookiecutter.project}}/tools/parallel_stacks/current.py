"""This copy's values, as `make env` derives them, served from the cache: what
`check-ports` and the pytest plugin start from."""

from __future__ import annotations

from .cache import REGISTRY_SOURCES, cached, inputs
from .root import find

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .settings import Settings

__all__ = ["values"]


def values(settings: Settings) -> tuple[dict[str, str], dict[str, Any]]:
    """(values, services) as derive.load() and derive.services() give them, cached like `make env`."""
    root = find(settings)

    def compute(recording: Settings) -> tuple[Any, bool]:
        from pathlib import Path

        from . import derive

        where = None if root is None else Path(root)
        result = derive.load(where, recording)
        return (result, derive.services(Path(result["STACK_WORKTREE"]))), result["PORT_OFFSET_SOURCE"].split(" ", 1)[
            0
        ] not in REGISTRY_SOURCES

    if root is None:
        return compute(settings)[0]  # type: ignore[no-any-return]
    return cached(root, inputs(root, "values", settings), settings, compute)  # type: ignore[no-any-return]
