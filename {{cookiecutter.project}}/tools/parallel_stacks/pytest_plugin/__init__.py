"""pytest plugin (entry point ``pytest11``): isolate every pytest-xdist worker of this stack copy.

Registered by the helper package's entry point, so a suite needs no
conftest line. Inert outside a parallel-stacks project (no stack.yml at or
above the rootdir). Hooks here; fixtures in ``fixtures``; what a worker owns
in ``isolation`` (each kind's part in ``parallel_stacks.kinds``); pytest-django's
databases in ``djangodb``; the record of what runs cost (for ``-n auto``) in ``workcache``.

``--no-isolation`` gives every worker the same database, ports, directory,
prefix and namespace: the example tests then collide, which proves they can.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from ..basics import StackError
from .isolation import build_context, mapped_variables, worker_index, worker_variables
from .state import (
    STATE,
    State,
    _is_worker,
    copy_of,
    isolation_env_lines,
    isolation_options,
    make_run_dir,
    project_root,
    reap_containers,
    release_run_lock,
    release_worker_lock,
    settings_of,
    stack_down_message,
    sweep_stale_runs,
    take_run_lock,
    take_worker_lock,
    unanswered,
)

# The fixtures live in their own module, registered with this one (pytest's
# "requiring plugins"): no list of them to keep in step here.
pytest_plugins = ["parallel_stacks.pytest_plugin.fixtures", "parallel_stacks.pytest_plugin.routing"]

__all__ = [
    "isolation_line",
    "pytest_addoption",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_load_initial_conftests",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
    "pytest_testnodedown",
    "pytest_unconfigure",
    "pytest_xdist_auto_num_workers",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolation", "per-worker isolation of this stack copy")
    group.addoption(
        "--no-isolation",
        action="store_true",
        help="share one database, port block, directory and namespace between all workers (to prove tests detect collisions)",
    )
    group.addoption(
        "--no-isolation-of",
        action="append",
        default=[],
        metavar="KIND",
        help="share one kind's resources between workers, the rest stays isolated (e.g. mqtt: one topic namespace; to find which resource collides)",
    )
    group.addoption("--no-stack", action="store_true", help="do not touch the stack (for tests that need no database, e.g. -m unit)")
    group.addoption(
        "--isolation-redis",
        choices=["prefix", "db"],
        default=None,
        help="isolate Redis by DB index 1..15, one per worker (default; DB 0 is the app's), or by key prefix in a shared DB 1 (unsafe for suites that flush)",
    )
    parser.addini(
        "isolation_schema",
        "schema files (relative to rootdir) loaded into the template database",
        type="linelist",
        default=["db/schema.sql"],
    )
    parser.addini(
        "isolation_env",
        "a suite's own variables from the worker's, one per line: NAME = template with {VARIABLE} placeholders, e.g. MYLIB_TEST_DB = {DATABASE_URL}",
        type="linelist",
        default=[],
    )
    parser.addini("isolation_redis", "db (a Redis DB per worker, the default) or prefix", default="db")


GROUPING_SCHEDULERS = ("loadscope", "loadfile", "loadgroup")


def _no_restart_under_grouping(config: pytest.Config) -> None:
    """xdist 3.8's grouping schedulers can hang for good after replacing a crashed
    worker (pytest-xdist#1323, #1378): under them a crash ends the run instead."""
    option = config.option
    if getattr(option, "dist", "no") in GROUPING_SCHEDULERS and getattr(option, "maxworkerrestart", "") is None:
        option.maxworkerrestart = "0"


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: the CPUs this process may use (affinity, cgroup quota), capped by what the copy can isolate
    and by the work: the last run of the same tests says how much there is (0: one process, no workers)."""
    from .workcache import work_records
    from .workers import auto_workers, selection_key, usable_cpus, work_workers

    root = project_root(config)
    if root is None or settings_of(config).get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # not ours, or the user's explicit choice: xdist decides
    try:
        copy = copy_of(root, settings_of(config))
        options = isolation_options(config, config.getoption("isolation_redis"), config.getoption("no_isolation_of"))
    except StackError:
        return None  # pytest_configure words it
    limit = auto_workers({svc.kind for svc in copy.services}, options, usable_cpus())
    workers, why = work_workers(work_records(config).get(selection_key(config.invocation_params.args)), limit)
    if why:
        config.stash[AUTO_WHY] = why
    return workers


AUTO_WHY = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str | None:
    return config.stash.get(AUTO_WHY, None)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """The worker's own settings before any conftest, pytest-django or application settings module is imported.

    xdist names the worker in PYTEST_XDIST_WORKER before pytest starts in it;
    the controller's values never reach a worker's imports. Problems are
    left for pytest_configure to word (as one line).
    """
    root = project_root(early_config)
    if root is None:
        return
    known = early_config.known_args_namespace
    try:
        copy = copy_of(root, settings_of(early_config))
        options = isolation_options(early_config, getattr(known, "isolation_redis", None), getattr(known, "no_isolation_of", None))
        worker = settings_of(early_config).get(
            "PYTEST_XDIST_WORKER", "master"
        )  # set before pytest starts in a worker (workerinput is not yet)
        ctx = build_context(copy, worker, not getattr(known, "no_isolation", False), Path("/"), options)
        variables = worker_variables(ctx, media_root=False)
        variables.update(mapped_variables(isolation_env_lines(early_config), variables))
    except (StackError, ValueError, KeyError):
        return  # pytest_configure words it
    os.environ.update(variables)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    root = project_root(config)
    if root is None:
        return  # not a parallel-stacks project: the plugin stays out of the way
    if not _is_worker(config):
        _no_restart_under_grouping(config)
    try:
        state = State(config, root)
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = state
    if not _is_worker(config):
        from .workcache import WorkTally

        config.pluginmanager.register(WorkTally(config), "parallel_stacks.work")
    if not config.pluginmanager.hasplugin("django"):
        from . import legacy  # `db`, deprecated: only where it cannot shadow pytest-django's

        config.pluginmanager.register(legacy, "parallel_stacks.legacy")
    else:
        # pytest-django is active: its test databases become this copy's and this worker's. Registered
        # after the entry-point plugins, so this django_db_setup overrides pytest-django's (a conftest's still wins).
        from . import djangodb

        config.pluginmanager.register(djangodb, "parallel_stacks.djangodb")
    ctx = state.context
    # Settings before any test module (and the application code it imports) is collected.
    variables = worker_variables(ctx)
    try:
        variables.update(mapped_variables(isolation_env_lines(config), variables))
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    os.environ.update(variables)
    if _is_worker(config):
        return
    if not state.use_stack:
        make_run_dir(state.run_dir)  # workers' temp directories live in it; nothing else is taken or removed
        return
    # Controller (or the single process without xdist): once per run.
    try:
        from ..ownership import ensure_owned

        ensure_owned(state.settings, state.copy)  # another worktree's copy: refuse before touching anything of it
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    down = unanswered(state)
    if down is not None:  # refused before the lock: nothing taken, nothing removed
        raise pytest.UsageError(stack_down_message(state.copy, down))
    try:
        _stop_on_sigterm(config)
        state.lock_fd = take_run_lock(state.copy)  # from here on this run may remove what it makes (and killed runs left)
        sweep_stale_runs(state.settings, state.copy, state.run_dir)
        make_run_dir(state.run_dir)
        started = time.perf_counter()
        for service, kind in state.services():
            state.run_started.append(service.name)  # before: a start interrupted halfway leaves something to remove
            kind.start_run(service, state.copy, state.run_for(kind))
        state.template_ms = (time.perf_counter() - started) * 1000
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    except Exception as exc:  # psycopg.OperationalError, redis.ConnectionError and friends: one clear line
        raise pytest.UsageError(stack_down_message(state.copy, exc)) from None


SIGTERM_HANDLER = pytest.StashKey[Any]()


def _stop_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM (a CI job's timeout, `kill`) stops the run as Ctrl-C does, so it removes what it made; Python's
    default would end the process on the spot. Only where nobody installed a handler of their own."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    config.stash[SIGTERM_HANDLER] = signal.signal(signal.SIGTERM, interrupt)


def _left_behind(config: pytest.Config, what: str, exc: BaseException, during_session: bool) -> None:
    """A teardown that failed: never silent. A PytestWarning in the run's warnings summary (or, after the
    summary, one line on stderr) naming what was left and what removes it."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = f"parallel-stacks could not remove {what} ({reason}); the next test run of this copy removes it, or `make nuke` with the copy"
    if during_session:
        config.issue_config_time_warning(pytest.PytestWarning(text), stacklevel=2)
    else:
        import sys

        print(f"warning: {text}", file=sys.stderr, flush=True)


def _runs_tests(session: pytest.Session) -> bool:
    """False for the xdist controller: its workers run the tests."""
    return not session.config.pluginmanager.hasplugin("dsession")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Each test process makes its own resources (a database, a clean Redis DB) before its first test."""
    state = session.config.stash.get(STATE, None)
    if state is None or not state.use_stack or not _runs_tests(session):
        return
    started = time.perf_counter()
    try:
        # This process's number is ours alone (a killed run's worker of the same number may still be ending).
        state.worker_lock_fd = take_worker_lock(state.copy, worker_index(state.context.worker), state.context.worker)
        for service, kind in state.services():
            state.worker_started.append(service.name)
            kind.start_worker(service, state.copy, state.context.resources, state.worker_for(kind))
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    except Exception as exc:
        raise pytest.UsageError(stack_down_message(state.copy, exc)) from None
    state.wait_ms += (time.perf_counter() - started) * 1000


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After the session's fixtures (pytest-django's databases among them): each test process removes what it
    made; then the controller (or the single process) what the run made, while it still holds the run lock."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["isolation_wait_ms"] = state.wait_ms  # to the controller (pytest_testnodedown)
    elif state.worker_started:
        state.waits.append(state.wait_ms)
        state.workers.add(worker_index(state.context.worker))  # the single process: worker 0
    _end_worker(session.config, state, during_session=True)
    _end_run(session.config, state, during_session=True)


def _end_worker(config: pytest.Config, state: State, during_session: bool) -> None:
    """Remove this process's own resources: only those it started, only while it holds its worker (or run) lock."""
    if state.worker_lock_fd is None:
        state.worker_started.clear()  # never held its lock: nothing here is ours to remove
        return
    try:
        for service, kind in state.services():
            if service.name not in state.worker_started:
                continue
            try:
                kind.end_worker(service, state.copy, state.context.resources, state.worker_for(kind))
            except Exception as exc:
                _left_behind(config, f"{service.name}'s test data of worker {state.context.worker}", exc, during_session)
    finally:
        state.worker_started.clear()
        release_worker_lock(state.copy, worker_index(state.context.worker), state.worker_lock_fd)
        state.worker_lock_fd = None


def _end_run(config: pytest.Config, state: State, during_session: bool) -> None:
    """The controller outlives its workers: what the run made (and whatever a crashed worker left) goes, under
    the run lock. A run that never got the lock (refused, interrupted while waiting) removes nothing."""
    if state.lock_fd is None or _is_worker(config) or state.run_ended:
        return
    state.run_ended = True
    for service, kind in state.services():
        if service.name not in state.run_started:
            continue
        try:
            kind.end_run(service, state.copy, state.run_for(kind))
        except Exception as exc:
            _left_behind(config, f"{service.name}'s test data of run {state.run_dir.name}", exc, during_session)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller hook: hand every worker the run's temp root, the copy's values and its services' kinds."""
    state = node.config.stash.get(STATE, None)
    if state is not None:
        state.workers.add(worker_index(str(node.gateway.id)))  # replacements of crashed workers included
        node.workerinput["isolation_run_dir"] = str(state.run_dir)
        node.workerinput["isolation_values"] = state.copy.as_env()
        node.workerinput["isolation_kinds"] = {svc.name: svc.kind_name for svc in state.copy.all_services}
        node.workerinput["isolation_services"] = [svc.name for svc in state.copy.services]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller hook: a worker ended; keep what its isolation cost."""
    state = node.config.stash.get(STATE, None)
    wait = getattr(node, "workeroutput", {}).get("isolation_wait_ms")
    if state is not None and wait is not None:
        state.waits.append(float(wait))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """One line on every run: what isolating this run's workers cost."""
    state = config.stash.get(STATE, None)
    if state is None or _is_worker(config) or state.template_ms is None:
        return
    from .routing import routed_text

    terminalreporter.write_line(isolation_line(state.template_ms, state.waits) + routed_text(config))


def isolation_line(template_ms: float, waits: list[float]) -> str:
    """`isolation: template N ms, clone median N ms, max M ms (K workers)`."""
    import statistics

    text = f"isolation: template {template_ms:.0f} ms"
    if waits:
        who = f"{len(waits)} worker{'s' if len(waits) != 1 else ''}"
        text += f", clone median {statistics.median(waits):.0f} ms, max {max(waits):.0f} ms ({who})"
    return text


def pytest_unconfigure(config: pytest.Config) -> None:
    """Whatever sessionfinish did not get to (a run stopped in pytest_configure), then the locks."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    try:
        _end_worker(config, state, during_session=False)
        _end_run(config, state, during_session=False)
        if (
            not _is_worker(config) and state.run_dir.exists() and reap_containers(state.settings, state.copy, state.run_dir)
        ):  # a crashed worker's broker
            import shutil

            shutil.rmtree(state.run_dir, ignore_errors=True)  # this run's own directory (workers' included)
    finally:
        if state.lock_fd is not None:
            release_run_lock(state.copy, state.lock_fd)  # the next run of this copy may start
            state.lock_fd = None
        handler = config.stash.get(SIGTERM_HANDLER, None)
        if handler is not None:
            import signal

            signal.signal(signal.SIGTERM, handler)
