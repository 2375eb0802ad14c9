"""Claims on the Docker engine itself, for an engine several machines (or users) share.

When the engine is on another host (DOCKER_HOST / a docker context naming
one), each machine has its own registry file. Then a slot is also claimed
on the engine: a container that never runs, named
`parallel-stacks-slot-<offset>` (the engine refuses a second container of
one name, so two clients never get one slot), labelled with the claiming
host and worktree. SLOT_CLAIMS=engine does the same for a local engine
shared by several users.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .. import engine as docker_state
from .. import labels
from ..basics import StackError
from .store import state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..settings import Settings

SLOT_PREFIX = "parallel-stacks-slot-"
SLOT_LABEL = labels.SLOT
SLOT_HOST_LABEL = labels.SLOT_HOST
SLOT_MACHINE_LABEL = labels.SLOT_MACHINE
SLOT_TREE_LABEL = labels.SLOT_TREE
SLOT_ENV_LABEL = labels.SLOT_ENV
SLOT_IMAGE = "parallel-stacks/slot-claim:1"


def engine_claims_on(settings: Settings) -> bool:
    """Claims go to the engine too: it is on another host, or SLOT_CLAIMS=engine."""
    mode = settings.get("SLOT_CLAIMS").strip().lower()
    if mode not in ("", "engine", "local"):
        raise StackError(f"SLOT_CLAIMS={mode[:40]!r}: use engine (claims on the Docker engine too) or local (this machine's registry only)")
    return mode == "engine" or (mode == "" and docker_state.location(settings)[1] is not None)


def _slot_image(settings: Settings) -> None:
    """An image with no files for the claim containers (they are never started): made on the engine once."""
    if docker_state.missing_images(settings, [SLOT_IMAGE]):
        proc = docker_state.run_docker(
            settings, "import", "-c", f"LABEL {SLOT_LABEL}-image=1", "-", SLOT_IMAGE, stdin=b"\0" * 10240, check=False
        )
        if proc.returncode != 0:
            raise StackError(f"could not create {SLOT_IMAGE} on the engine: {proc.stderr.decode(errors='replace').strip()[-200:]}")


def _this_host() -> str:
    import socket

    return socket.gethostname()


def machine_id(settings: Settings) -> str:
    """This machine's (this state directory's) id for claims on a shared engine: random, made once."""
    import secrets

    path = state_dir(settings) / "machine-id"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()  # another process made it first
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(16) + "\n")
    return path.read_text(encoding="utf-8").strip()


def _is_mine(held: Mapping[str, str], worktree: str, settings: Settings) -> bool:
    return held.get(SLOT_MACHINE_LABEL) == machine_id(settings) and held.get(SLOT_TREE_LABEL) == worktree


def reserve_on_engine(offset: int, worktree: str, env_name: str, settings: Settings) -> dict[str, str] | None:
    """Claim slot `offset` on the engine for this machine's `worktree`: None when it is ours (now or before),
    else the labels of the claim that holds it."""
    name = f"{SLOT_PREFIX}{offset}"
    claim_labels = {
        SLOT_LABEL: str(offset),
        SLOT_HOST_LABEL: _this_host(),
        SLOT_MACHINE_LABEL: machine_id(settings),
        SLOT_TREE_LABEL: worktree,
        SLOT_ENV_LABEL: env_name,
    }
    _slot_image(settings)
    try:
        docker_state.docker(
            settings, "create", "--name", name, *[a for k, v in claim_labels.items() for a in ("--label", f"{k}={v}")], SLOT_IMAGE, "claim"
        )
        return None
    except StackError as exc:
        if "already in use" not in str(exc) and "Conflict" not in str(exc):
            raise
    held = engine_claim(settings, offset)
    if held is None:  # released between our attempt and the look: try once more
        return reserve_on_engine(offset, worktree, env_name, settings)
    if _is_mine(held, worktree, settings) and held.get(SLOT_ENV_LABEL) == env_name:
        return None
    return held


def engine_hold(offset: int, worktree: str, env_name: str, settings: Settings, write: bool) -> dict[str, str] | None:
    """Who holds slot `offset` on the engine, if not this worktree: `write` claims it for this worktree when free
    (reserve_on_engine); without, only looks (a free slot: None)."""
    if write:
        return reserve_on_engine(offset, worktree, env_name, settings)
    held = engine_claim(settings, offset)
    return None if held is None or (_is_mine(held, worktree, settings) and held.get(SLOT_ENV_LABEL) == env_name) else held


def engine_claim(settings: Settings, offset: int) -> dict[str, str] | None:
    """The labels of the engine's claim of slot `offset`, or None."""
    rec = docker_state.container(settings, f"{SLOT_PREFIX}{offset}")
    return None if rec is None else _labels(rec)


def _labels(rec: Mapping[str, Any]) -> dict[str, str]:
    return dict((rec.get("Config") or {}).get("Labels") or {})


def engine_claims(settings: Settings) -> dict[int, dict[str, str]]:
    """{offset: labels} of every slot claimed on the engine."""
    found = {}
    for name in docker_state.docker(settings, "ps", "-a", "--filter", f"label={SLOT_LABEL}", "--format", "{{.Names}}").split():
        slot = name[len(SLOT_PREFIX) :]
        if name.startswith(SLOT_PREFIX) and slot.isdigit():
            held = engine_claim(settings, int(slot))  # one by one: a claim released meanwhile is just not listed
            if held is not None:
                found[int(slot)] = held
    return found


def release_on_engine(offset: int, worktree: str, settings: Settings) -> bool:
    """Remove the engine's claim of `offset` if this machine's `worktree` holds it."""
    held = engine_claim(settings, offset)
    if held is None or not _is_mine(held, worktree, settings):
        return False
    docker_state.docker(settings, "rm", f"{SLOT_PREFIX}{offset}")
    return True


def holder(held: Mapping[str, str]) -> str:
    """Who holds an engine claim, in words: its worktree on its host."""
    return f"{held.get(SLOT_TREE_LABEL, '?')} on {held.get(SLOT_HOST_LABEL, '?')}"
