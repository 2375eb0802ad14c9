"""The plugin's per-process state (config.stash[STATE]), the run's temp root and lock."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from .. import kinds
from ..basics import StackError
from ..kinds import Kind, Run, Service, Worker
from .isolation import build_context, stack_services, worker_of

__all__ = ["STATE", "State", "copy_of", "isolation_options", "project_root", "reap_containers", "stack_down_message", "take_run_lock"]


def _is_worker(config: pytest.Config) -> bool:
    from xdist import is_xdist_worker

    return bool(is_xdist_worker(SimpleNamespace(config=config)))


def _worker(config: pytest.Config) -> str:
    from xdist import get_xdist_worker_id

    return str(get_xdist_worker_id(SimpleNamespace(config=config)))


def _workerinput(config: pytest.Config) -> dict[str, Any]:
    return getattr(config, "workerinput", {})


def project_root(config: pytest.Config) -> Path | None:
    """The stack this run belongs to: STACK_ROOT (the Makefile's), else the nearest stack.yml at or above the rootdir.

    None: not a parallel-stacks project, and the plugin stays out of the way.
    """
    from ..root import find

    found = find({"STACK_ROOT": os.environ.get("STACK_ROOT", "")}, str(config.rootpath))
    return None if found is None else Path(found)


def copy_of(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(values, {service: kind}) of the copy at `root`, as `make env` derives them (cached)."""
    from ..current import values

    derived, services = values({**os.environ, "STACK_ROOT": str(root)})
    return derived, {name: kinds.name_of(svc) for name, svc in services.items()}


def isolation_options(config: pytest.Config, redis: str | None, shared: list[str] | None = None) -> dict[str, str]:
    """The kinds' isolation options: the command line's value (`redis`), else pytest.ini's; `shared`:
    kinds whose resources all workers share (--no-isolation-of), as `shared=mqtt,redis`."""
    names = sorted({n.strip() for item in shared or [] for n in item.split(",") if n.strip()})
    unknown = [n for n in names if n not in kinds.names()]
    if unknown:
        raise StackError(f"--no-isolation-of {','.join(unknown)}: not a kind; kinds are {', '.join(kinds.names())}")
    return {"redis": redis or str(config.getini("isolation_redis")), **({"shared": ",".join(names)} if names else {})}


class State:
    """Per-process state of the plugin, kept in config.stash[STATE]."""

    def __init__(self, config: pytest.Config, root: Path):
        workerinput = _workerinput(config)
        if _is_worker(config) and "isolation_values" in workerinput:
            self.values = dict(workerinput["isolation_values"])  # the controller's: derived once per run
            self.kinds_of: dict[str, str] = dict(workerinput["isolation_kinds"])
        else:
            self.values, self.kinds_of = copy_of(root)
        self.isolated = not config.getoption("no_isolation")
        self.use_stack = not config.getoption("no_stack")
        self.options = isolation_options(config, config.getoption("isolation_redis"), config.getoption("no_isolation_of"))
        self.run_dir = _run_dir(config, self.values)
        self.context = build_context(self.values, _worker(config), self.isolated, self.run_dir, self.kinds_of, self.options)
        self.schema_files = [root / p for p in config.getini("isolation_schema")]
        self.started = False  # this process's own resources exist (start_worker ran)
        self.lock_fd: int | None = None
        # what isolation cost, for the `isolation:` summary line (milliseconds)
        self.template_ms: float | None = None  # the controller's start_run (templates, leftovers)
        self.wait_ms = 0.0  # this process's wait for its own resources (databases cloned, Redis DB emptied)
        self.waits: list[float] = []  # the controller's: every worker's wait_ms

    def services(self) -> list[tuple[Service, Kind]]:
        return stack_services(self.values, self.kinds_of)

    def worker_for(self, kind: Kind) -> Worker:
        """This process as `kind` sees it: shared with every worker when isolation is off for it."""
        return worker_of(self.context.worker, self.isolated, kind, self.options)

    def run_for(self, kind: Kind) -> Run:
        return Run(self.worker_for(kind).isolated, self.schema_files, self.options)


def _run_dir(config: pytest.Config, values: Mapping[str, str]) -> Path:
    """The run's temp root, shared by controller and workers.

    Named `<copy>-testrun-<pid>-*`: those of runs whose process is gone
    (killed) are removed; a run still going keeps its own.
    """
    if _is_worker(config):
        return Path(_workerinput(config)["isolation_run_dir"])
    import shutil

    prefix = f"{values['COMPOSE_PROJECT_NAME']}-testrun-"
    base = Path(tempfile.gettempdir())
    for stale in base.glob(prefix + "*"):
        pid = stale.name[len(prefix) :].split("-", 1)[0]
        if not (pid.isdigit() and _alive(int(pid))) and reap_containers(values, stale):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))


def reap_containers(values: Mapping[str, str], run_dir: Path) -> bool:
    """Remove the containers and networks the tests of the run in `run_dir` started (worker_broker), if it
    started any; False when Docker could not be asked (the run directory is kept: the next run tries again)."""
    from .containers import MARKER, reap

    if not (run_dir / MARKER).exists():
        return True
    try:
        reap(values["COMPOSE_PROJECT_NAME"], run_dir.name)
    except StackError:
        return False
    return True


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (killed, not yet reaped by its parent) is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal said it exists


def take_run_lock(values: Mapping[str, str]) -> int:
    """One test run per copy at a time: the second waits for the first (and says so).

    A run drops and rebuilds the copy's test databases, so two at once would
    destroy each other's. An flock on a file named after the copy: the kernel
    releases it however the holder ends. Returns the fd to close when done.
    """
    from ..oplock import wait_for

    copy = values["COMPOSE_PROJECT_NAME"]
    path = Path(tempfile.gettempdir()) / f"parallel-stacks-{copy}.testlock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StackError(f"cannot open the test-run lock {path}: {exc.strerror}") from None

    def holder() -> str:  # the pid the holder wrote
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"

    wait_for(fd, lambda: f"waiting for another test run of {copy} (pid {holder()}) to finish")
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def stack_down_message(values: Mapping[str, str], kinds_of: Mapping[str, str], exc: BaseException) -> str:
    """One line for a stack that does not answer: a missing secret, or which service refused."""
    from .. import derive

    missing = [key for key in derive.secret_keys({n: {"kind": k} for n, k in kinds_of.items()}) if not values.get(key)]
    if missing:
        return (
            f"this worktree has no {', '.join(missing)} for stack copy {values['COMPOSE_PROJECT_NAME']} "
            f"(env/local.env is missing or lacks it): run `PORT_OFFSET={values['PORT_OFFSET']} make up` here first, "
            "which writes one, or pass --no-stack for tests that need no stack"
        )
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"stack copy {values['COMPOSE_PROJECT_NAME']} is not up ({reason}); "
        f"run `PORT_OFFSET={values['PORT_OFFSET']} make up` first, or pass --no-stack for tests that need no stack"
    )


STATE = pytest.StashKey[State]()
