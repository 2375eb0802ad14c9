"""Claiming a slot: this worktree's offset from the registry, checked against every other claim and the ports in use.

PORT_OFFSET=auto takes the first free slot in steps of AUTO_STEP and
remembers it in `.env.dynamic`; a task id or build number takes seed 000's
slot, or the next free one. `make release` frees a worktree's claims.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import engine as docker_state
from .. import probe as check_ports
from ..basics import PORT_MAX, PORT_MIN, StackError
from ..config import DEFAULT_TASK_STEP
from ..formula import compose_project_name, worker_port_range
from ..probe import ephemeral_range
from .dynamic import read_dynamic, write_dynamic
from .slots import engine_claims_on, engine_hold, holder, release_on_engine
from .store import Registry, claim_key, state_dir
from .testports import allocate_test_ports, footprints, remembered_test_start, service_ports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..settings import Settings

AUTO_STEP = 100  # default base ports differ by non-multiples of 100: copies never cross services
MAX_TRIES = 400


def _entry(
    before: Mapping[str, Any],
    offset: int,
    worktree: str,
    env_name: str,
    stack: Mapping[str, Any],
    bases: dict[str, int],
    test_start: int,
    **extra: str,
) -> dict[str, Any]:
    """A claim as the registry stores it; `before` (the same key's previous claim) keeps its claim time."""
    return {
        "offset": offset,
        "worktree": worktree,
        "env": env_name,
        **extra,
        "project": stack["project"],
        "compose_project": compose_project_name(stack["project"], env_name, offset),
        "ports": service_ports(bases, offset),
        "test_ports": [test_start, test_start + len(worker_port_range(offset)) - 1],
        "claimed": before.get("claimed") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "claimed_at": before.get("claimed_at") or time.time(),
    }


def claim(root: Path, env_name: str, stack: dict[str, Any], bind: str, settings: Settings, write: bool = True) -> tuple[int, int, bool]:
    """This worktree's slot: its remembered one if still valid, else the first free one; (offset, test-port range
    start, whether it is claimed). `write=False` (deriving, `make env`): the same answer, nothing recorded."""

    worktree = str(root.resolve())
    key = claim_key(worktree, env_name)
    bases = {name: svc["host_port"] for name, svc in stack["services"].items()}
    eph = ephemeral_range()
    on_engine = engine_claims_on(settings)
    # this machine's sockets say nothing of a remote engine's host: its containers' ports (and the engine's claims) do
    hosts = [] if docker_state.location(settings.env)[1] else check_ports.addresses(bind)
    try:
        published = check_ports.published_by(docker_state.running_containers())
    except StackError:
        published = {}
    with Registry(state_dir(settings), settings, write) as reg:
        others = {k: c for k, c in reg.claims.items() if k != key}
        taken = {p for c in others.values() for p in c.get("ports") or service_ports(bases, c["offset"])}
        used = footprints(others, bases)
        remembered = read_dynamic(root, env_name)
        if remembered is None and key in reg.claims:
            remembered = reg.claims[key]["offset"]
        if remembered is not None:
            held = engine_hold(remembered, worktree, env_name, settings, write) if on_engine else None
            if held is not None:
                raise StackError(
                    f"this worktree's remembered slot PORT_OFFSET={remembered} is claimed on the engine by {holder(held)}; "
                    "`make release` here, then PORT_OFFSET=auto again"
                )
            if not taken & set(service_ports(bases, remembered)):
                offset = remembered  # ours: its ports may well be held by our own running copy
            else:
                raise StackError(
                    f"this worktree's remembered slot PORT_OFFSET={remembered} is now claimed by another copy; "
                    "`make release` here, then PORT_OFFSET=auto again"
                )
        else:
            found: int | None = None
            skipped = []
            for k in range(1, MAX_TRIES + 1):
                cand = k * AUTO_STEP
                why = check_ports.unusable(service_ports(bases, cand), published, hosts, used, eph)
                if why is None and on_engine:
                    held = engine_hold(cand, worktree, env_name, settings, write)
                    why = None if held is None else "claimed by another copy"
                if why is None:
                    found = cand
                    break
                if "claimed by another copy" not in why:
                    skipped.append(f"{cand} ({why})")
                if "out of range" in why or (min(bases.values()) + cand > PORT_MAX):
                    break
            for line in skipped[:10] if write else ():
                print(f"auto: skipped PORT_OFFSET={line}", file=sys.stderr)
            if found is None:
                raise StackError(
                    f"no free slot for PORT_OFFSET=auto below the ephemeral range {eph[0]}-{eph[1]} "
                    f"({len(others)} claimed); `make gc` or `make release` in unused worktrees"
                )
            offset = found
        before = reg.claims.get(key) or {}
        test_start = allocate_test_ports(offset, service_ports(bases, offset), used, remembered_test_start(before, offset))
        if not write:
            return offset, test_start, key in reg.claims and reg.claims[key]["offset"] == offset
        reg.claims[key] = _entry(before, offset, worktree, env_name, stack, bases, test_start)
        reg.write()
        write_dynamic(root, env_name, offset, test_start)
    return offset, test_start, True


def claim_derived(
    root: Path,
    env_name: str,
    stack: dict[str, Any],
    bind: str,
    settings: Settings,
    preferred: int,
    label: str,
    write: bool = True,
) -> tuple[int, int, bool]:
    """(offset, test-port range start) of a task id or build number (`label`, e.g. TASK_ID=task-a-1000).

    Seed 000's formula gives the `preferred` offset; when that is 0 (the
    default copy), claimed by another copy or its ports are busy, the next
    one in steps of task_step is taken instead, and the claim is recorded
    like an auto claim, so the same id keeps its slot and two ids never share one.
    """

    worktree = str(root.resolve())
    key = claim_key(worktree, env_name) + "|" + label
    bases = {name: svc["host_port"] for name, svc in stack["services"].items()}
    step = stack.get("task_step", DEFAULT_TASK_STEP)
    high = PORT_MAX - max(bases.values())
    hosts = check_ports.addresses(bind)
    try:
        running = docker_state.running_containers()
    except StackError:
        running = []
    ours = {rec.get("project") for rec in running if rec.get("working_dir") and os.path.realpath(rec["working_dir"]) == worktree}
    published = check_ports.published_by([rec for rec in running if rec.get("project") not in ours])
    with Registry(state_dir(settings), settings, write) as reg:
        others = {k: c for k, c in reg.claims.items() if k != key}
        taken = {p for c in others.values() for p in c.get("ports") or service_ports(bases, c["offset"])}
        used = footprints(others, bases)
        offset: int | None = reg.claims[key]["offset"] if key in reg.claims else None
        if offset is not None and taken & set(service_ports(bases, offset)):
            offset = None  # another copy took it since (a registry rebuilt without us): find another
        if offset is None:
            span = high // step + 1
            for k in range(span):
                cand = (preferred + k * step) % (span * step)
                if cand == 0 or cand > high or min(bases.values()) + cand < PORT_MIN:
                    continue
                if compose_project_name(stack["project"], env_name, cand) in ours:
                    offset = cand  # this worktree's copy already runs there
                    break
                if check_ports.unusable(service_ports(bases, cand), published, hosts, used, name_owners=False) is None:
                    offset = cand
                    break
            if offset is None:
                raise StackError(f"no free slot for {label}: every offset in steps of {step} is taken; `make gc`, or set PORT_OFFSET")
            if offset != preferred and write:
                why = "the default copy's" if preferred == 0 else "taken"
                print(f"{label}: preferred PORT_OFFSET={preferred} is {why}; using PORT_OFFSET={offset}", file=sys.stderr)
        assert offset is not None
        before = reg.claims.get(key) or {}
        test_start = allocate_test_ports(offset, service_ports(bases, offset), used, remembered_test_start(before, offset))
        if not write:
            return offset, test_start, before.get("offset") == offset
        entry = _entry(before, offset, worktree, env_name, stack, bases, test_start, label=label)
        if entry != before:
            reg.claims[key] = entry
            reg.write()
    return offset, test_start, True


def release(root: Path, env_name: str, settings: Settings) -> int | None:
    """Free this worktree's claims for `env_name` (auto, task ids, build numbers) and forget its auto slot; return the auto offset."""
    worktree = str(root.resolve())
    key = claim_key(worktree, env_name)
    with Registry(state_dir(settings), settings) as reg:
        for derived in [k for k in reg.claims if k.startswith(key + "|")]:
            del reg.claims[derived]  # task id and build number slots of this worktree and ENV
        freed = reg.claims.pop(key, None)
        reg.write()
    remembered = read_dynamic(root, env_name)
    write_dynamic(root, env_name, None)
    if engine_claims_on(settings):
        for offset in {int(freed["offset"]) if freed else None, remembered} - {None}:
            release_on_engine(int(offset), worktree, settings)  # type: ignore[arg-type]
    if freed:
        return int(freed["offset"])
    return remembered
