"""The slot registry's file: the claims, as JSON in the state directory, changed only under an exclusive lock.

$XDG_STATE_HOME/parallel-stacks/registry.json (PARALLEL_STACKS_STATE_DIR
overrides), so concurrent claims never get the same slot. A corrupt file is
set aside and rebuilt from what is still true: the `.env.dynamic` of every
worktree Docker's labels name.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .. import engine as docker_state
from ..basics import StackError, is_digits
from . import dynamic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..settings import Settings

VERSION = 1


def state_dir(settings: Settings) -> Path:
    """Where the slot registry lives: PARALLEL_STACKS_STATE_DIR, else $XDG_STATE_HOME/parallel-stacks (~/.local/state)."""
    if settings.get("PARALLEL_STACKS_STATE_DIR"):
        return Path(settings.get("PARALLEL_STACKS_STATE_DIR"))
    return Path(settings.home_dir("XDG_STATE_HOME", os.path.join(".local", "state"))) / "parallel-stacks"


def claim_key(worktree: str, env_name: str) -> str:
    """A claim's key in the registry: the worktree and its ENV (a task id's or build number's adds `|<label>`)."""
    return f"{worktree}|{env_name}"


class Registry:
    """The registry file in the state directory of `settings`, open under an exclusive lock (use as a context manager)."""

    def __init__(self, settings: Settings, write: bool = True):
        self.settings = settings  # a corrupt file is rebuilt from what the engine's labels say
        self.dir = state_dir(settings)
        self.path = self.dir / "registry.json"
        self.claims: dict[str, dict[str, Any]] = {}
        self.recovered_from: str | None = None
        self.writable = write  # False: read what is there (shared lock), create and change nothing
        self._lock: Any = None

    def __enter__(self) -> Registry:
        import fcntl

        try:
            if self.writable:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._lock = open(self.dir / "registry.lock", "a")
            elif (self.dir / "registry.lock").exists():
                self._lock = open(self.dir / "registry.lock")
        except OSError as exc:
            raise StackError(f"cannot open the slot registry in {self.dir}: {exc.strerror}") from None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_EX if self.writable else fcntl.LOCK_SH)
        self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def _read(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StackError(f"cannot read the slot registry {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
            claims = data["claims"]
            if data.get("version") != VERSION or not isinstance(claims, dict):
                raise ValueError("unexpected structure")
            for key, claim in claims.items():
                if not (isinstance(claim, dict) and isinstance(claim.get("offset"), int) and isinstance(claim.get("worktree"), str)):
                    raise ValueError(f"bad claim {key!r}")
            self.claims = claims
        except (ValueError, KeyError, TypeError, AttributeError):
            if not self.writable:  # a reader makes do with what the worktrees and Docker say; the next claim repairs it
                self.claims = rebuild_claims(self.settings)
                return
            backup = self.path.with_name(f"registry.json.corrupt-{int(time.time())}")
            os.replace(self.path, backup)
            self.claims = rebuild_claims(self.settings)
            self.recovered_from = str(backup)
            self.write()
            print(
                f"warning: slot registry {self.path} was corrupt (kept as {backup.name}); "
                f"rebuilt {len(self.claims)} claim(s) from worktrees' {dynamic.DYNAMIC} and Docker labels",
                file=sys.stderr,
            )

    def write(self) -> None:
        """Replace the registry file atomically with the claims (only under the exclusive lock)."""
        if not self.writable:
            raise AssertionError("the registry was opened read-only")  # a bug, not a user's mistake
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": VERSION, "claims": self.claims}, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def rebuild_claims(settings: Settings) -> dict[str, Any]:
    """Claims that are still true: worktrees named by Docker labels that hold a .env.dynamic."""

    trees = set()
    try:
        for rec in docker_state.running_containers(settings):
            if rec.get("working_dir"):
                trees.add(rec["working_dir"])
        for name in docker_state.docker(settings, "volume", "ls", "-q", "--filter", f"label={docker_state.WORKTREE_LABEL}").split():
            rec = docker_state.volume(settings, name) or {}
            tree = (rec.get("Labels") or {}).get(docker_state.WORKTREE_LABEL)
            if tree:
                trees.add(tree)
    except StackError:
        pass  # engine down: rebuild from the caller's worktree alone
    claims = {}
    for tree in sorted(trees):
        try:
            values = dynamic.values(Path(tree))
        except StackError:
            continue
        for key, raw in values.items():
            if key.startswith("PORT_OFFSET_") and is_digits(raw):
                env_name = key[len("PORT_OFFSET_") :].lower().replace("_", "-")
                claims[claim_key(tree, env_name)] = {"offset": int(raw), "worktree": tree, "env": env_name}
    return claims
