"""This copy's values, as `make env` derives them, served from the cache: what
`check-ports` and the pytest plugin start from."""

from __future__ import annotations

import os

from .cache import REGISTRY_SOURCES, Recorder, cached, inputs
from .root import find

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["values"]


def values(environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """(values, services) as derive.load() and derive.services() give them, cached like `make env`."""
    environ = os.environ if environ is None else environ
    root = find(environ)

    def compute(recorder: Recorder) -> tuple[Any, bool]:
        from pathlib import Path

        from . import derive

        where = None if root is None else Path(root)
        result = derive.load(where, recorder)
        return (result, derive.services(Path(result["STACK_WORKTREE"]))), result["PORT_OFFSET_SOURCE"].split(" ", 1)[
            0
        ] not in REGISTRY_SOURCES

    if root is None:
        return compute(Recorder(environ))[0]  # type: ignore[no-any-return]
    return cached(root, inputs(root, "values"), environ, compute)  # type: ignore[no-any-return]
