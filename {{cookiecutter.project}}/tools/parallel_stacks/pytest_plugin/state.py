"""The plugin's per-process state (config.stash[STATE]), the run's temp root and lock."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from .. import kinds
from ..basics import StackError, pid_alive
from ..kinds import Kind, Run, Service, Worker
from ..model import Copy
from ..settings import Settings
from .isolation import build_context, stack_services, worker_of

__all__ = [
    "STATE",
    "State",
    "copy_of",
    "isolation_env_lines",
    "isolation_options",
    "make_run_dir",
    "project_root",
    "reap_containers",
    "release_run_lock",
    "release_worker_lock",
    "run_lock_path",
    "selected",
    "settings_of",
    "stack_down_message",
    "sweep_stale_runs",
    "take_run_lock",
    "take_worker_lock",
    "unanswered",
    "worker_lock_path",
]


def _is_worker(config: pytest.Config) -> bool:
    from xdist import is_xdist_worker

    return bool(is_xdist_worker(SimpleNamespace(config=config)))


def _worker(config: pytest.Config) -> str:
    from xdist import get_xdist_worker_id

    return str(get_xdist_worker_id(SimpleNamespace(config=config)))


def _workerinput(config: pytest.Config) -> dict[str, Any]:
    return getattr(config, "workerinput", {})


SETTINGS = pytest.StashKey["Settings"]()


def settings_of(config: pytest.Config) -> Settings:
    """The environment of this test process, read once (before the plugin sets the worker's variables)."""
    if SETTINGS not in config.stash:
        config.stash[SETTINGS] = Settings.read()
    return config.stash[SETTINGS]


def project_root(config: pytest.Config) -> Path | None:
    """The stack this run belongs to: STACK_ROOT (the Makefile's), else the nearest stack.yml at or above the rootdir.

    None: not a parallel-stacks project, and the plugin stays out of the way.
    """
    from ..root import find

    found = find(settings_of(config), str(config.rootpath))
    return None if found is None else Path(found)


def copy_of(root: Path, settings: Settings) -> Copy:
    """The copy at `root`, as `make env` derives it (cached).

    SERVICES="db redis" (as on `make up`): the run isolates, checks and cleans up those services only (a team
    that runs only its infrastructure in compose), the rest in `copy.others`; unset, every service of stack.yml."""
    from ..current import values

    derived, services = values(settings.replace(STACK_ROOT=str(root)))
    return selected(Copy.of(derived, services), settings.get("SERVICES"))


def selected(copy: Copy, services: str) -> Copy:
    """`copy` working on the services SERVICES names (space or comma separated; empty: all of them)."""
    wanted = services.replace(",", " ").split()
    names = [svc.name for svc in copy.all_services]
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise StackError(f"SERVICES names {', '.join(unknown)}, not a service of this copy (services: {', '.join(sorted(names))})")
    return copy.only(wanted) if wanted else copy


def isolation_env_lines(config: pytest.Config) -> list[str]:
    """`isolation_env` lines: pytest's ini, then the file STACK_ISOLATION_ENV names (`make adopt` writes
    parallel-stacks/isolation_env for an adopted repository's suite, so its pytest config stays as it is)."""
    lines = [str(line) for line in config.getini("isolation_env")]
    extra = settings_of(config).get("STACK_ISOLATION_ENV")
    if extra:
        try:
            text = Path(extra).read_text(encoding="utf-8")
        except OSError as exc:
            raise StackError(f"STACK_ISOLATION_ENV={extra}: cannot read it ({exc.strerror})") from None
        lines += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return lines


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
        self.settings = settings_of(config)
        if _is_worker(config) and "isolation_values" in workerinput:
            # the controller's copy, derived once per run: its values, every service's kind, those it works on
            self.copy = Copy.of_kinds(workerinput["isolation_values"], workerinput["isolation_kinds"])
            self.copy = self.copy.only(workerinput["isolation_services"])
        else:
            self.copy = copy_of(root, self.settings)
        self.isolated = not config.getoption("no_isolation")
        self.use_stack = not config.getoption("no_stack")
        self.options = isolation_options(config, config.getoption("isolation_redis"), config.getoption("no_isolation_of"))
        self.run_dir = _run_dir(config, self.copy)
        self.context = build_context(self.copy, _worker(config), self.isolated, self.run_dir, self.options)
        self.schema_files = [root / p for p in config.getini("isolation_schema")]
        # What this process made, and the locks under which it may remove it (nothing else is ever removed):
        self.lock_fd: int | None = None  # the copy's run lock (controller, or the single process)
        self.worker_lock_fd: int | None = None  # this worker number's lock (each test process)
        self.run_started: list[str] = []  # services whose start_run began (the controller's end_run: these only)
        self.worker_started: list[str] = []  # services whose start_worker began (end_worker: these only)
        self.run_ended = False
        self.workers: set[int] = set()  # the controller's: numbers of the workers this run started (configure_node)
        # what isolation cost, for the `isolation:` summary line (milliseconds)
        self.template_ms: float | None = None  # the controller's start_run (templates, leftovers)
        self.wait_ms = 0.0  # this process's wait for its own resources (databases cloned, Redis DB emptied)
        self.waits: list[float] = []  # the controller's: every worker's wait_ms

    def services(self) -> list[tuple[Service, Kind]]:
        """(service, kind) of every service this run isolates (SERVICES narrows them)."""
        return stack_services(self.copy)

    def worker_for(self, kind: Kind) -> Worker:
        """This process as `kind` sees it: shared with every worker when isolation is off for it."""
        return worker_of(self.context.worker, self.isolated, kind, self.options)

    def run_for(self, kind: Kind) -> Run:
        """This run as `kind` sees it: isolated or not, its schema files, its options and the workers it started."""
        return Run(self.worker_for(kind).isolated, self.schema_files, self.options, frozenset(self.workers))


def _run_dir(config: pytest.Config, copy: Copy) -> Path:
    """The run's temp root, shared by controller and workers: `<copy>-testrun-<pid>-<random>` (`sweep_stale_runs`).

    Only named here; the controller makes it once it holds the run lock (`make_run_dir`), so a run refused
    or stopped while it waits leaves no directory behind."""
    if _is_worker(config):
        return Path(_workerinput(config)["isolation_run_dir"])
    import secrets

    return Path(tempfile.gettempdir()) / f"{copy.env['COMPOSE_PROJECT_NAME']}-testrun-{os.getpid()}-{secrets.token_hex(4)}"


def make_run_dir(path: Path) -> None:
    """Create the run's directory (once the run holds its lock); StackError when it cannot be made."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StackError(f"cannot create the test run's directory {path}: {exc.strerror}") from None


def sweep_stale_runs(settings: Settings, copy: Copy, mine: Path) -> list[str]:
    """Remove the run directories (and the containers their tests started) of this copy's runs whose process
    is gone (killed); a run still going keeps its own. Called holding the copy's run lock. Returns their names."""
    import shutil

    prefix = f"{copy.env['COMPOSE_PROJECT_NAME']}-testrun-"
    swept = []
    for stale in Path(tempfile.gettempdir()).glob(prefix + "*"):
        pid = stale.name[len(prefix) :].split("-", 1)[0]
        if stale != mine and not (pid.isdigit() and pid_alive(int(pid))) and reap_containers(settings, copy, stale):
            shutil.rmtree(stale, ignore_errors=True)
            swept.append(stale.name)
    return swept


def reap_containers(settings: Settings, copy: Copy, run_dir: Path) -> bool:
    """Remove the containers and networks the tests of the run in `run_dir` started (worker_broker), if it
    started any; False when Docker could not be asked (the run directory is kept: the next run tries again)."""
    from .containers import MARKER, reap

    if not (run_dir / MARKER).exists():
        return True
    try:
        reap(settings, copy.env["COMPOSE_PROJECT_NAME"], run_dir.name)
    except StackError:
        return False
    return True


def run_lock_path(copy: Copy) -> Path:
    """The copy's test-run lock: `$TMPDIR/parallel-stacks-<copy>.testlock`."""
    return Path(tempfile.gettempdir()) / f"parallel-stacks-{copy.env['COMPOSE_PROJECT_NAME']}.testlock"


def take_run_lock(copy: Copy) -> int:
    """One test run per copy at a time: the second waits for the first (and says so).

    A run drops and rebuilds the copy's test databases, so two at once would
    destroy each other's; and a run cleans up only while it holds this lock
    (a run that never got it, refused or interrupted while waiting, removes
    nothing). An flock: the kernel releases it however the holder ends.
    Returns the fd for `release_run_lock`.
    """
    from ..oplock import hold_file

    project = copy.compose_project
    return hold_file(run_lock_path(copy), lambda pid: f"waiting for another test run of {project} (pid {pid}) to finish")


def release_run_lock(copy: Copy, fd: int) -> None:
    """Release the copy's run lock and remove its file."""
    from ..oplock import release_file

    release_file(run_lock_path(copy), fd)


def worker_lock_path(copy: Copy, index: int) -> Path:
    """Test process number `index`'s lock (gwN and, for 0, the single process): `...testlock.w<index>`."""
    return Path(f"{run_lock_path(copy)}.w{index}")


def take_worker_lock(copy: Copy, index: int, name: str) -> int:
    """Worker `index`'s resources (its database, its Redis DB) belong to one process at a time.

    A worker whose controller was killed lives on until its current test ends,
    then removes its resources: without this lock it could drop those of the
    same-numbered worker of the next run, which starts as soon as the killed
    controller's run lock is gone. The next run's worker waits for it instead.
    """
    from ..oplock import hold_file

    project = copy.compose_project
    return hold_file(
        worker_lock_path(copy, index),
        lambda pid: f"{name}: waiting for worker {index} of an earlier test run of {project} (pid {pid}) to finish",
    )


def release_worker_lock(copy: Copy, index: int, fd: int) -> None:
    """Release worker `index`'s lock and remove its file."""
    from ..oplock import release_file

    release_file(worker_lock_path(copy, index), fd)


def unanswered(state: State) -> BaseException | None:
    """The first server the run prepares (a kind's `prepares_tests`) whose port refuses a connection (the stack
    is down), else None. Asked before the run lock: a run refused for a stack that is down takes and removes nothing."""
    import socket

    for service, kind in state.services():
        if not kind.prepares_tests:
            continue
        try:
            socket.create_connection((service.host.strip("[]"), service.port), timeout=3).close()
        except OSError as exc:
            return ConnectionRefusedError(f"{service.name} on {service.host}:{service.port}: {exc.strerror or exc}")
    return None


def stack_down_message(copy: Copy, exc: BaseException) -> str:
    """One line for a stack that does not answer: a missing secret, or which service refused."""
    missing = [key for key in kinds.secret_keys(svc.kind for svc in copy.services) if not copy.env.get(key)]
    if missing:
        return (
            f"this worktree has no {', '.join(missing)} for stack copy {copy.env['COMPOSE_PROJECT_NAME']} "
            f"(env/local.env is missing or lacks it): run `PORT_OFFSET={copy.env['PORT_OFFSET']} make up` here first, "
            "which writes one, or pass --no-stack for tests that need no stack"
        )
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"stack copy {copy.env['COMPOSE_PROJECT_NAME']} is not up ({reason}); "
        f"run `PORT_OFFSET={copy.env['PORT_OFFSET']} make up` first, or pass --no-stack for tests that need no stack"
    )


STATE = pytest.StashKey[State]()
