"""PORT_OFFSET=auto: claim a free slot in a machine-wide registry, race-free.

The registry is a JSON file under the user's state directory
($XDG_STATE_HOME/parallel-stacks/registry.json), changed only under an
exclusive lock, so concurrent claims never get the same slot. A worktree
remembers its slot in its gitignored `.env.dynamic`, so every later `make`
call there agrees. `make release` frees the claim.

When the engine is on another host (DOCKER_HOST / a docker context naming
one), several machines may share it, and each has its own registry file.
Then a slot is also claimed on the engine itself: a container that never
runs, named `parallel-stacks-slot-<offset>` (the engine refuses a second
container of one name, so two clients never get one slot), labelled with
the claiming host and worktree. SLOT_CLAIMS=engine does the same for a
local engine shared by several users.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import engine as docker_state
from . import labels
from . import probe as check_ports
from .basics import PORT_MAX, PORT_MIN, StackError, is_digits, var_name
from .config import DEFAULT_TASK_STEP, read_env_file
from .formula import compose_project_name, host_ports, worker_port_range
from .probe import ephemeral_range
from .settings import Settings

AUTO_STEP = 100  # default base ports differ by non-multiples of 100: copies never cross services
MAX_TRIES = 400
DYNAMIC = ".env.dynamic"
VERSION = 1


def state_dir(settings: Settings) -> Path:
    """Where the slot registry lives: PARALLEL_STACKS_STATE_DIR, else $XDG_STATE_HOME/parallel-stacks (~/.local/state)."""
    if settings.get("PARALLEL_STACKS_STATE_DIR"):
        return Path(settings.get("PARALLEL_STACKS_STATE_DIR"))
    base = settings.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "parallel-stacks"


class Registry:
    """The registry file in the state directory of `settings`, open under an exclusive lock (use as a context manager)."""

    def __init__(self, settings: Settings, write: bool = True):
        self.settings = settings
        directory = state_dir(settings)
        self.dir = directory
        self.path = directory / "registry.json"
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
                f"rebuilt {len(self.claims)} claim(s) from worktrees' {DYNAMIC} and Docker labels",
                file=sys.stderr,
            )

    def write(self) -> None:
        """Replace the registry file atomically with the claims (only under the exclusive lock)."""
        if not self.writable:
            raise AssertionError("the registry was opened read-only")  # a bug, not a user's mistake
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": VERSION, "claims": self.claims}, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def claim_key(worktree: str, env_name: str) -> str:
    """A claim's key in the registry: the worktree and its ENV."""
    return f"{worktree}|{env_name}"


def dynamic_key(env_name: str) -> str:
    """`.env.dynamic` keeps one slot per environment: PORT_OFFSET_DEV, PORT_OFFSET_TEST, ..."""
    return "PORT_OFFSET_" + var_name(env_name)


def _dynamic_values(root: Path) -> dict[str, Any]:
    path = root / DYNAMIC
    return read_env_file(path) if path.exists() else {}


def read_dynamic(root: Path, env_name: str) -> int | None:
    """This worktree's remembered slot for `env_name`, if any."""
    raw = _dynamic_values(root).get(dynamic_key(env_name), "")
    return int(raw) if is_digits(raw) else None


def read_dynamic_test_ports(root: Path, env_name: str) -> int | None:
    """The start of the test-port range the registry gave this worktree's slot for `env_name`, if any."""
    raw = _dynamic_values(root).get("TEST_PORTS_" + var_name(env_name), "")
    return int(raw) if is_digits(raw) else None


def write_dynamic(root: Path, env_name: str, offset: int | None, test_start: int | None = None) -> None:
    """Remember (or, with None, forget) this worktree's slot for `env_name`; no slots left, no file."""
    values = {k: v for k, v in _dynamic_values(root).items() if k.startswith(("PORT_OFFSET_", "TEST_PORTS_"))}
    if offset is None:
        values.pop(dynamic_key(env_name), None)
        values.pop("TEST_PORTS_" + var_name(env_name), None)
    else:
        values[dynamic_key(env_name)] = str(offset)
        if test_start is not None:
            values["TEST_PORTS_" + var_name(env_name)] = str(test_start)
    path = root / DYNAMIC
    if not values:
        if path.exists():
            path.unlink()
        return
    tmp = root / (DYNAMIC + ".tmp")
    tmp.write_text(
        "# Written by PORT_OFFSET=auto: this worktree's slots in the machine-wide registry, per ENV.\n"
        "# Gitignored. `make release` frees this ENV's slot.\n" + "".join(f"{k}={v}\n" for k, v in sorted(values.items())),
        encoding="utf-8",
    )
    os.replace(tmp, path)


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
            values = _dynamic_values(Path(tree))
        except StackError:
            continue
        for key, raw in values.items():
            if key.startswith("PORT_OFFSET_") and is_digits(raw):
                env_name = key[len("PORT_OFFSET_") :].lower().replace("_", "-")
                claims[claim_key(tree, env_name)] = {"offset": int(raw), "worktree": tree, "env": env_name}
    return claims


def _ports(bases: dict[str, int], offset: int) -> list[int]:
    return host_ports(bases.values(), offset)


def _test_ports(claim: Mapping[str, Any]) -> range:
    """A claim's test-port range: the one the registry gave it, else the formula's."""
    given = claim.get("test_ports")
    if isinstance(given, list) and len(given) == 2 and all(isinstance(p, int) for p in given):
        return range(given[0], given[1] + 1)
    return worker_port_range(int(claim["offset"]))


def _footprints(claims: Mapping[str, Mapping[str, Any]], bases: dict[str, int]) -> set[int]:
    """Every port the copies of `claims` and the default copy (offset 0) use: services and test ports."""
    taken = set(_ports(bases, 0)) | set(worker_port_range(0))
    for c in claims.values():
        taken.update(c.get("ports") or _ports(bases, c["offset"]))
        taken.update(_test_ports(c))
    return taken


def allocate_test_ports(offset: int, own: list[int], taken: set[int], current: int | None = None) -> int:
    """The start of a claimed copy's test-port range: `current` (its remembered one) or the formula's
    (`worker_port_range`) when no other claimed copy uses one of its ports, else the next free range
    above it. Services keep seed 000's offsets exactly; only test ports move (they hold no data)."""
    formula = worker_port_range(offset)
    width = len(formula)
    starts = ([current] if current is not None else []) + list(range(formula.start, PORT_MAX - width + 2, width))
    for start in starts:
        ports = range(start, start + width)
        if start >= PORT_MIN and ports.stop - 1 <= PORT_MAX and not any(p in taken or p in own for p in ports):
            return start
    raise StackError(f"no free test-port range of {width} ports for PORT_OFFSET={offset}; `make gc`, or set PORT_OFFSET")


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
        "ports": _ports(bases, offset),
        "test_ports": [test_start, test_start + len(worker_port_range(offset)) - 1],
        "claimed": before.get("claimed") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "claimed_at": before.get("claimed_at") or time.time(),
    }


def _remembered_test_start(claim: Mapping[str, Any], offset: int) -> int | None:
    return _test_ports(claim).start if claim and claim.get("offset") == offset else None


# ---------------------------------------------------------------- claims on the engine
SLOT_PREFIX = "parallel-stacks-slot-"
SLOT_LABEL = labels.SLOT
SLOT_HOST_LABEL = labels.SLOT_HOST
SLOT_MACHINE_LABEL = labels.SLOT_MACHINE
SLOT_TREE_LABEL = labels.SLOT_TREE
SLOT_ENV_LABEL = labels.SLOT_ENV
SLOT_IMAGE = "parallel-stacks/slot-claim:1"


def engine_claims_on(settings: Settings) -> bool:
    """Claims go to the engine too: it is on another host, or SLOT_CLAIMS=engine."""
    mode = (settings.get("SLOT_CLAIMS") or "").strip().lower()
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


def _is_mine(labels: Mapping[str, str], worktree: str, settings: Settings) -> bool:
    return labels.get(SLOT_MACHINE_LABEL) == machine_id(settings) and labels.get(SLOT_TREE_LABEL) == worktree


def reserve_on_engine(offset: int, worktree: str, env_name: str, settings: Settings) -> dict[str, str] | None:
    """Claim slot `offset` on the engine for this machine's `worktree`: None when it is ours (now or before),
    else the labels of the claim that holds it."""
    name = f"{SLOT_PREFIX}{offset}"
    labels = {
        SLOT_LABEL: str(offset),
        SLOT_HOST_LABEL: _this_host(),
        SLOT_MACHINE_LABEL: machine_id(settings),
        SLOT_TREE_LABEL: worktree,
        SLOT_ENV_LABEL: env_name,
    }
    _slot_image(settings)
    try:
        docker_state.docker(
            settings, "create", "--name", name, *[a for k, v in labels.items() for a in ("--label", f"{k}={v}")], SLOT_IMAGE, "claim"
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
            labels = engine_claim(settings, int(slot))  # one by one: a claim released meanwhile is just not listed
            if labels is not None:
                found[int(slot)] = labels
    return found


def release_on_engine(offset: int, worktree: str, settings: Settings) -> bool:
    """Remove the engine's claim of `offset` if this machine's `worktree` holds it."""
    held = engine_claim(settings, offset)
    if held is None or not _is_mine(held, worktree, settings):
        return False
    docker_state.docker(settings, "rm", f"{SLOT_PREFIX}{offset}")
    return True


def _holder(labels: Mapping[str, str]) -> str:
    return f"{labels.get(SLOT_TREE_LABEL, '?')} on {labels.get(SLOT_HOST_LABEL, '?')}"


def claim(root: Path, env_name: str, stack: dict[str, Any], bind: str, settings: Settings, write: bool = True) -> tuple[int, int, bool]:
    """This worktree's slot: its remembered one if still valid, else the first free one; (offset, test-port range
    start, whether it is claimed). `write=False` (deriving, `make env`): the same answer, nothing recorded."""

    worktree = str(root.resolve())
    key = claim_key(worktree, env_name)
    bases = {name: svc["host_port"] for name, svc in stack["services"].items()}
    eph = ephemeral_range()
    on_engine = engine_claims_on(settings)
    # this machine's sockets say nothing of a remote engine's host: its containers' ports (and the engine's claims) do
    hosts = [] if docker_state.location(settings)[1] else check_ports.addresses(bind)
    try:
        published = check_ports.published_by(docker_state.running_containers(settings))
    except StackError:
        published = {}
    with Registry(settings, write) as reg:
        others = {k: c for k, c in reg.claims.items() if k != key}
        taken = {p for c in others.values() for p in c.get("ports") or _ports(bases, c["offset"])}
        footprints = _footprints(others, bases)
        remembered = read_dynamic(root, env_name)
        if remembered is None and key in reg.claims:
            remembered = reg.claims[key]["offset"]
        if remembered is not None:
            held = engine_hold(remembered, worktree, env_name, settings, write) if on_engine else None
            if held is not None:
                raise StackError(
                    f"this worktree's remembered slot PORT_OFFSET={remembered} is claimed on the engine by {_holder(held)}; "
                    "`make release` here, then PORT_OFFSET=auto again"
                )
            if not taken & set(_ports(bases, remembered)):
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
                why = check_ports.unusable(_ports(bases, cand), published, hosts, footprints, eph)
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
        test_start = allocate_test_ports(offset, _ports(bases, offset), footprints, _remembered_test_start(before, offset))
        if not write:
            return offset, test_start, key in reg.claims and reg.claims[key]["offset"] == offset
        reg.claims[key] = _entry(before, offset, worktree, env_name, stack, bases, test_start)
        reg.write()
        write_dynamic(root, env_name, offset, test_start)
    return offset, test_start, True


def engine_hold(offset: int, worktree: str, env_name: str, settings: Settings, write: bool) -> dict[str, str] | None:
    """Who holds slot `offset` on the engine, if not this worktree: `write` claims it for this worktree when free
    (reserve_on_engine); without, only looks (a free slot: None)."""
    if write:
        return reserve_on_engine(offset, worktree, env_name, settings)
    held = engine_claim(settings, offset)
    return None if held is None or (_is_mine(held, worktree, settings) and held.get(SLOT_ENV_LABEL) == env_name) else held


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
        running = docker_state.running_containers(settings)
    except StackError:
        running = []
    ours = {rec.get("project") for rec in running if rec.get("working_dir") and os.path.realpath(rec["working_dir"]) == worktree}
    published = check_ports.published_by([rec for rec in running if rec.get("project") not in ours])
    with Registry(settings, write) as reg:
        others = {k: c for k, c in reg.claims.items() if k != key}
        taken = {p for c in others.values() for p in c.get("ports") or _ports(bases, c["offset"])}
        footprints = _footprints(others, bases)
        offset: int | None = reg.claims[key]["offset"] if key in reg.claims else None
        if offset is not None and taken & set(_ports(bases, offset)):
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
                if check_ports.unusable(_ports(bases, cand), published, hosts, footprints, name_owners=False) is None:
                    offset = cand
                    break
            if offset is None:
                raise StackError(f"no free slot for {label}: every offset in steps of {step} is taken; `make gc`, or set PORT_OFFSET")
            if offset != preferred and write:
                why = "the default copy's" if preferred == 0 else "taken"
                print(f"{label}: preferred PORT_OFFSET={preferred} is {why}; using PORT_OFFSET={offset}", file=sys.stderr)
        assert offset is not None
        before = reg.claims.get(key) or {}
        test_start = allocate_test_ports(offset, _ports(bases, offset), footprints, _remembered_test_start(before, offset))
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
    with Registry(settings) as reg:
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
