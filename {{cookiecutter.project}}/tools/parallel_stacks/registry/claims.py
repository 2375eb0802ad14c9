"""Claiming a slot: ONE loop over the candidate offsets of every source, each candidate checked the same way.

The sources differ only in their candidates and in what they remember:

- PORT_OFFSET=auto (`auto_offsets`): AUTO_STEP, 2*AUTO_STEP, ...; the slot
  is remembered in `.env.dynamic` and never moves silently (taken since,
  it is an error naming `make release`);
- a task id or build number (`next_offsets`): seed 000's preferred offset,
  then the next ones in steps of task_step; keyed in the registry by its
  label, it moves to the next free one when taken.

Every candidate gets the same checks (`_Checks`): its ports within
1024-65535 and outside the ephemeral range, never the default copy's offset
0, no port of another claim (services and test ports), none published by a
running container of another copy, none held on the host the engine
publishes on (this machine's sockets for a local engine, a probe container
on the engine's host for a remote one), and, when claims go to the engine
(slots.engine_claims_on), not claimed there by anyone else.

`write=False` (deriving: `make env`, `make ports`) asks the same questions
and records nothing (no registry, no `.env.dynamic`, no claim on the engine):
the answer is the slot a claim would take now.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
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
from .store import Registry, claim_key
from .testports import allocate_test_ports, claimed_service_ports, footprints, remembered_test_start, service_ports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..settings import Settings

AUTO_STEP = 100  # default base ports differ by non-multiples of 100: copies never cross services
MAX_TRIES = 400
PROBE_BATCH = 25  # candidates whose ports one probe container on a remote engine's host tries at once


def _bases(stack: Mapping[str, Any]) -> dict[str, int]:
    return {name: svc["host_port"] for name, svc in stack["services"].items()}


def auto_offsets(stack: Mapping[str, Any]) -> Iterator[int]:
    """PORT_OFFSET=auto's candidates: AUTO_STEP, 2 * AUTO_STEP, ... (at most MAX_TRIES), while every port stays below 65536."""
    top = max(_bases(stack).values())
    for k in range(1, MAX_TRIES + 1):
        if top + k * AUTO_STEP > PORT_MAX:
            return
        yield k * AUTO_STEP


def next_offsets(preferred: int, stack: Mapping[str, Any]) -> Iterator[int]:
    """A task id's or build number's candidates: its `preferred` offset (seed 000's), then the next ones in steps
    of task_step, wrapping around below the highest offset that keeps every port legal."""
    step = stack.get("task_step", DEFAULT_TASK_STEP)
    span = (PORT_MAX - max(_bases(stack).values())) // step + 1
    for k in range(span):
        yield (preferred + k * step) % (span * step)


class _Ahead:
    """An iterator of candidates that can show the next few without consuming them (to probe them in one go)."""

    def __init__(self, items: Iterable[int]) -> None:
        self._items = iter(items)
        self._seen: deque[int] = deque()

    def __iter__(self) -> _Ahead:
        return self

    def __next__(self) -> int:
        return self._seen.popleft() if self._seen else next(self._items)

    def peek(self, count: int) -> list[int]:
        """The next `count` candidates (fewer at the end), still to come."""
        while len(self._seen) < count:
            try:
                self._seen.append(next(self._items))
            except StopIteration:
                break
        return list(self._seen)[:count]


class _Checks:
    """The questions every candidate offset of every source is asked, with the engine's answers gathered once."""

    def __init__(self, stack: Mapping[str, Any], env_name: str, worktree: str, bind: str, settings: Settings, write: bool) -> None:
        self.stack, self.env_name, self.worktree, self.bind = stack, env_name, worktree, bind
        self.settings, self.write = settings, write
        self.bases = _bases(stack)
        self.eph = ephemeral_range()
        self.on_engine = engine_claims_on(settings)
        # the host the copy's ports are on: this machine's sockets say nothing of a remote engine's host
        self.remote = docker_state.location(settings)[1]
        self.hosts = [] if self.remote else check_ports.addresses(bind)
        try:
            running = docker_state.running_containers(settings)
        except StackError:
            running = []
        mine = [rec for rec in running if rec.get("working_dir") and os.path.realpath(rec["working_dir"]) == worktree]
        self.ours = {rec.get("project") for rec in mine}  # compose projects of this worktree's running copies
        self.own_containers = {rec.get("name") for rec in mine}
        self.published = check_ports.published_by(running)
        self.busy: dict[int, bool] = {}  # a remote host's ports, as its probe found them
        self.probe_failed: str | None = None

    def project(self, offset: int) -> str:
        """The compose project of this worktree's copy at `offset`."""
        return compose_project_name(self.stack["project"], self.env_name, offset)

    def unusable(self, offset: int, used: set[int], ahead: _Ahead | None = None, name_owners: bool = False) -> str | None:
        """None when this worktree may take `offset`, else why not; `used`: every port other claims use."""
        if offset == 0:
            return "the default copy's"
        ports = service_ports(self.bases, offset)
        project = self.project(offset)
        running_here = project in self.ours  # this worktree's copy already runs there: its ports are its own
        published = self.published
        if running_here:  # its own containers' ports are not a conflict; another worktree's of the same name are
            published = {
                p: rec for p, rec in published.items() if not (rec.get("project") == project and rec.get("name") in self.own_containers)
            }
        hosts = [] if running_here else self.hosts
        why = check_ports.unusable(ports, published, hosts, used, self.eph, name_owners=name_owners)
        if why is None and self.remote and not running_here:
            why = self._remote_busy(offset, ahead)
        if why is None and self.on_engine:
            held = engine_hold(offset, self.worktree, self.env_name, self.settings, self.write)
            why = None if held is None else f"claimed on the engine by {holder(held)}"
        return why

    def _remote_busy(self, offset: int, ahead: _Ahead | None) -> str | None:
        """Why `offset` is unusable on the remote engine's host (a port a probe there could not bind), else None."""
        ports = service_ports(self.bases, offset)
        if any(port not in self.busy for port in ports) and self.probe_failed is None:
            batch = [offset, *(ahead.peek(PROBE_BATCH - 1) if ahead is not None else [])]
            wanted = sorted({p for cand in batch for p in service_ports(self.bases, cand) if cand} - set(self.busy))
            wanted = [p for p in wanted if PORT_MIN <= p <= PORT_MAX]
            try:
                found = self._probe(wanted)
            except StackError as exc:
                self.probe_failed = str(exc)
                if self.write:
                    print(f"warning: could not probe the ports of {self.remote} ({exc}); checked its containers only", file=sys.stderr)
                return None
            self.busy.update({port: port in found for port in wanted})
        for port in ports:
            if self.busy.get(port):
                return f"port {port} is held by a process on the engine's host {self.remote}"
        return None

    def _probe(self, ports: list[int]) -> set[int]:
        """Ports of `ports` something holds on the engine's host (probe.remote_busy_ports), without pulling its image."""
        image = self.settings.get("PROBE_IMAGE") or self.settings.get("PYTHON_IMAGE") or "python:3.12-slim"
        if docker_state.missing_images(self.settings, [image]):
            raise StackError(f"the probe image {image} is not on the engine (PROBE_IMAGE)")
        return check_ports.remote_busy_ports(self.bind, ports, self.settings)


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


def claim(
    root: Path,
    env_name: str,
    stack: dict[str, Any],
    bind: str,
    settings: Settings,
    candidates: Iterable[int],
    label: str | None = None,
    write: bool = True,
) -> tuple[int, int, bool]:
    """This worktree's slot: (offset, test-port range start, whether it is claimed).

    `label` None is PORT_OFFSET=auto: the slot `.env.dynamic` (or the registry) remembers if still valid, else
    the first usable of `candidates` (auto_offsets). A task id or build number (`label`, e.g.
    TASK_ID=task-a-1000) keeps the slot its label holds in the registry, else takes the first usable of
    `candidates` (next_offsets: its preferred offset first). `write=False` (deriving, `make env`): the same
    answer, nothing recorded."""

    worktree = str(root.resolve())
    key = claim_key(worktree, env_name) + ("" if label is None else f"|{label}")
    checks = _Checks(stack, env_name, worktree, bind, settings, write)
    bases = checks.bases
    with Registry(settings, write) as reg:
        others = {k: c for k, c in reg.claims.items() if k != key}
        used = footprints(others, bases)
        before = reg.claims.get(key) or {}
        offset = _kept(root, env_name, label, before, claimed_service_ports(others.values(), bases), checks)
        if offset is None:
            offset = _first_usable(_Ahead(candidates), checks, used, label, len(others), stack)
        test_start = allocate_test_ports(offset, service_ports(bases, offset), used, remembered_test_start(before, offset))
        if not write:
            return offset, test_start, before.get("offset") == offset
        entry = _entry(before, offset, worktree, env_name, stack, bases, test_start, **({} if label is None else {"label": label}))
        if entry != before:
            reg.claims[key] = entry
            reg.write()
        if label is None:
            write_dynamic(root, env_name, offset, test_start)
    return offset, test_start, True


def _kept(root: Path, env_name: str, label: str | None, before: Mapping[str, Any], taken: set[int], checks: _Checks) -> int | None:
    """The slot this claim already holds, if no other claim took its ports since and the engine has not given it to
    another (with write: claims it there); None: find one. An auto slot taken since is an error, not a move."""
    remembered = read_dynamic(root, env_name) if label is None else None
    if remembered is None and before:
        remembered = int(before["offset"])
    if remembered is None:
        return None
    conflict = bool(taken & set(service_ports(checks.bases, remembered)))
    held = engine_hold(remembered, checks.worktree, env_name, checks.settings, checks.write) if checks.on_engine and not conflict else None
    if not conflict and held is None:
        return remembered  # ours: its ports may well be held by our own running copy
    if label is not None:
        return None  # a task id's slot moves to the next free one
    if held is not None:
        raise StackError(
            f"this worktree's remembered slot PORT_OFFSET={remembered} is claimed on the engine by {holder(held)}; "
            "`make release` here, then PORT_OFFSET=auto again"
        )
    raise StackError(
        f"this worktree's remembered slot PORT_OFFSET={remembered} is now claimed by another copy; "
        "`make release` here, then PORT_OFFSET=auto again"
    )


def _first_usable(candidates: _Ahead, checks: _Checks, used: set[int], label: str | None, claimed: int, stack: Mapping[str, Any]) -> int:
    """THE claim loop: the first candidate every check passes; the skipped ones said (auto) or the move (task ids)."""
    found: int | None = None
    first: tuple[int, str] | None = None
    skipped = []
    for cand in candidates:
        why = checks.unusable(cand, used, candidates, name_owners=checks.write and label is None)
        if why is None:
            found = cand
            break
        first = first or (cand, why)
        if "claimed" not in why and "the default copy's" not in why:
            skipped.append(f"{cand} ({why})")
    if found is None:
        if label is None:
            low, high = checks.eph
            raise StackError(
                f"no free slot for PORT_OFFSET=auto below the ephemeral range {low}-{high} "
                f"({claimed} claimed); `make gc` or `make release` in unused worktrees"
            )
        step = stack.get("task_step", DEFAULT_TASK_STEP)
        raise StackError(f"no free slot for {label}: every offset in steps of {step} is taken; `make gc`, or set PORT_OFFSET")
    if checks.write and label is None:
        for line in skipped[:10]:
            print(f"auto: skipped PORT_OFFSET={line}", file=sys.stderr)
    elif checks.write and first is not None:
        preferred, why = first
        said = "the default copy's" if why == "the default copy's" else "taken"
        print(f"{label}: preferred PORT_OFFSET={preferred} is {said}; using PORT_OFFSET={found}", file=sys.stderr)
    return found


def release(root: Path, env_name: str, settings: Settings) -> int | None:
    """Free this worktree's claims for `env_name` (auto, task ids, build numbers: in the registry, and on the engine when
    claims go there) and forget its auto slot; return the auto offset."""
    worktree = str(root.resolve())
    key = claim_key(worktree, env_name)
    with Registry(settings) as reg:
        derived = [reg.claims.pop(k) for k in [k for k in reg.claims if k.startswith(key + "|")]]  # task id and build number slots
        freed = reg.claims.pop(key, None)
        reg.write()
    remembered = read_dynamic(root, env_name)
    write_dynamic(root, env_name, None)
    if engine_claims_on(settings):
        offsets = {int(c["offset"]) for c in [*derived, *([freed] if freed else [])]} | ({remembered} if remembered is not None else set())
        for offset in sorted(offsets):
            release_on_engine(offset, worktree, settings)
    if freed:
        return int(freed["offset"])
    return remembered
