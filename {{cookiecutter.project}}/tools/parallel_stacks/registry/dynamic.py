"""A worktree's `.env.dynamic` (gitignored): the PORT_OFFSET=auto slot it remembers per ENV, and that slot's test ports,
so every later `make` call there agrees without asking the registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..basics import is_digits, var_name
from ..config import read_env_file

DYNAMIC = ".env.dynamic"


def dynamic_key(env_name: str) -> str:
    """`.env.dynamic` keeps one slot per environment: PORT_OFFSET_DEV, PORT_OFFSET_TEST, ..."""
    return "PORT_OFFSET_" + var_name(env_name)


def values(root: Path) -> dict[str, Any]:
    """Every line of the worktree's `.env.dynamic` ({} without one)."""
    path = root / DYNAMIC
    return read_env_file(path) if path.exists() else {}


def read_dynamic(root: Path, env_name: str) -> int | None:
    """This worktree's remembered slot for `env_name`, if any."""
    raw = values(root).get(dynamic_key(env_name), "")
    return int(raw) if is_digits(raw) else None


def read_dynamic_test_ports(root: Path, env_name: str) -> int | None:
    """The start of the test-port range the registry gave this worktree's slot for `env_name`, if any."""
    raw = values(root).get("TEST_PORTS_" + var_name(env_name), "")
    return int(raw) if is_digits(raw) else None


def write_dynamic(root: Path, env_name: str, offset: int | None, test_start: int | None = None) -> None:
    """Remember (or, with None, forget) this worktree's slot for `env_name`; no slots left, no file."""
    kept = {k: v for k, v in values(root).items() if k.startswith(("PORT_OFFSET_", "TEST_PORTS_"))}
    if offset is None:
        kept.pop(dynamic_key(env_name), None)
        kept.pop("TEST_PORTS_" + var_name(env_name), None)
    else:
        kept[dynamic_key(env_name)] = str(offset)
        if test_start is not None:
            kept["TEST_PORTS_" + var_name(env_name)] = str(test_start)
    path = root / DYNAMIC
    if not kept:
        if path.exists():
            path.unlink()
        return
    tmp = root / (DYNAMIC + ".tmp")
    tmp.write_text(
        "# Written by PORT_OFFSET=auto: this worktree's slots in the machine-wide registry, per ENV.\n"
        "# Gitignored. `make release` frees this ENV's slot.\n" + "".join(f"{k}={v}\n" for k, v in sorted(kept.items())),
        encoding="utf-8",
    )
    os.replace(tmp, path)
