"""env/local.env: this worktree's generated secrets (mode 600, gitignored).

Imports nothing of the package but kinds (through derive's secret_keys), so
post_gen_project can call it before the virtualenv exists.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

__all__ = ["ensure_local_env"]

HEADER = (
    "# Per-machine settings and secrets for this worktree. Gitignored; never commit.\n"
    "# Set PORT_OFFSET here to give this worktree its own ports.\n"
)


def ensure_local_env(root: Path, env_name: str = "dev", keys: list[str] | None = None) -> Path:
    """Append a fresh value for every secret in `keys` (default: the stack's kinds' secrets) that env/local.env lacks
    (nor env/`env_name`.env sets)."""
    if keys is None:
        from .derive import secret_keys, services

        keys = secret_keys(services(root))
    path = root / "env" / "local.env"
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    # a committed value counts too: an adopted compose file's literal password, recorded in env/dev.env, is the one
    # its database was made with (a fresh one here would lock the app's own URL out)
    committed = root / "env" / f"{env_name}.env"
    known = existing + (committed.read_text(encoding="utf-8") if committed.is_file() else "")
    missing = [k for k in keys if not re.search(rf"^\s*(export\s+)?{re.escape(k)}\s*=\s*\S", known, re.M)]
    if not missing:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        if existing and not existing.endswith("\n"):
            handle.write("\n")
        handle.write(("" if existing else HEADER) + "".join(f"{k}={secrets.token_urlsafe(24)}\n" for k in missing))
    os.chmod(path, 0o600)
    return path
