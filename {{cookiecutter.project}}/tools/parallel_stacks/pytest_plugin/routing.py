"""Localhost routing (issue 27): a suite that hard-codes `Redis()`, `localhost:1883` or `127.0.0.1:5432` reaches
this worker's own endpoint, not whatever copy listens on the default port.

Each kind says where its default port goes (`Kind.local_route`): this copy's service (postgres, http), or a
server of the worker's own (redis, mqtt), a container started on the first routed connection from any
process of the worker (its Python subprocesses included), labelled and removed like `worker_broker`'s. The
socket hook itself is `parallel_stacks.localroute` (standard library only, inherited by subprocesses through
`route_site/sitecustomize.py` on PYTHONPATH). `isolation_localhost = off` or `--no-isolation-of-localhost`
turns it off; the header says where each endpoint goes, the `isolation:` line how many connections went.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .. import localroute
from ..basics import StackError, await_answer
from ..formula import TEST_PORT_BLOCK
from ..kinds import LocalRoute, LocalServer
from ..settings import Settings
from .state import STATE, State, _is_worker

__all__ = ["Planned", "enabled", "header", "plan", "routed_text", "start_server", "stop_servers"]

STARTER = f"{__name__}:start_server"
SITE_DIR = Path(__file__).resolve().parent.parent / "route_site"
READY_SECONDS = 30.0
ON, OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


@dataclass(frozen=True)
class Planned:
    """One routed endpoint of this process: the kind's route and what the socket hook gets."""

    service: str
    local: LocalRoute
    route: localroute.Route


@dataclass
class Routing:
    """This process's routing: on or off, its table, and the counts of routed connections (the controller's: its workers')."""

    enabled: bool
    planned: list[Planned] = field(default_factory=list)
    ambiguous: dict[int, list[str]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    started_ms: list[float] = field(default_factory=list)  # what starting each of the workers' own servers took
    saved_env: dict[str, str | None] = field(default_factory=dict)
    installed: bool = False


ROUTING = pytest.StashKey[Routing]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolation")
    group.addoption(
        "--no-isolation-of-localhost",
        action="store_true",
        help="do not route hard-coded localhost endpoints (Redis(), localhost:1883, ...) to the worker's own servers",
    )
    parser.addini(
        "isolation_localhost",
        "on (the default): a connection to localhost on a kind's default port (6379, 1883, 5432, ...) goes to the worker's own endpoint; off",
        default="on",
    )


def enabled(config: pytest.Config) -> bool:
    """The ini value and the flag; StackError for a value that is neither on nor off."""
    value = str(config.getini("isolation_localhost")).strip().lower()
    if value not in ON + OFF:
        raise StackError(f"isolation_localhost = {value[:40]}: use on (the default) or off")
    return value in ON and not config.getoption("no_isolation_of_localhost")


def plan(state: State) -> tuple[list[Planned], dict[int, list[str]]]:
    """This process's routes ({default port: services} for ports two services declare: those are not routed)."""
    found: dict[int, list[tuple[str, LocalRoute]]] = {}
    for service, kind in state.services():
        local = kind.local_route(service, state.copy, state.worker_for(kind))
        if local is not None:
            found.setdefault(local.port, []).append((service.name, local))
    planned, ambiguous = [], {}
    ctx = state.context
    for port, entries in sorted(found.items()):
        if len(entries) > 1:
            ambiguous[port] = [name for name, _ in entries]
            continue
        name, local = entries[0]
        if local.server is None:
            route = localroute.Route(name, port, local.host, local.target)
        else:
            spec = state.run_dir / "servers" / f"{ctx.worker}-{name}.json"
            route = localroute.Route(name, port, "127.0.0.1", ctx.ports.port(ctx.ports.size - local.server.slot), str(spec))
        planned.append(Planned(name, local, route))
    return planned, ambiguous


def header(routing: Routing) -> str:
    """The run header's line: which endpoints are routed where (or that routing is off)."""
    if not routing.enabled:
        return "localhost routing: off (isolation_localhost = off or --no-isolation-of-localhost): hard-coded localhost endpoints reach whatever listens there"
    parts = []
    for p in routing.planned:
        if p.local.server is None:
            parts.append(f":{p.route.port} -> {p.service} {p.route.host}:{p.route.target}")
        else:
            step = TEST_PORT_BLOCK
            parts.append(
                f":{p.route.port} -> a {p.service} server of each worker's own, started on first use (gw0 127.0.0.1:{p.route.target}, +{step} per worker)"
            )
    parts += [f":{port} not routed ({' and '.join(names)} both declare it)" for port, names in routing.ambiguous.items()]
    return "localhost routing: " + ("; ".join(parts) if parts else "nothing to route")


def routed_text(config: pytest.Config) -> str:
    """`, routed: redis 4, mqtt 2` for the `isolation:` line (empty when nothing was routed)."""
    routing = config.stash.get(ROUTING, None)
    if routing is None or not routing.counts:
        return ""
    text = ", routed: " + ", ".join(f"{name} {n}" for name, n in sorted(routing.counts.items()))
    if routing.started_ms:
        import statistics

        ms = routing.started_ms
        text += f" ({len(ms)} own server{'s' if len(ms) != 1 else ''} started: median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms)"
    return text


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    try:
        on = enabled(config) and state.use_stack
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    routing = Routing(on)
    if on:
        try:
            routing.planned, routing.ambiguous = plan(state)
        except StackError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[ROUTING] = routing


def pytest_report_header(config: pytest.Config) -> str | None:
    routing = config.stash.get(ROUTING, None)
    state = config.stash.get(STATE, None)
    if routing is None or state is None or not state.use_stack or _is_worker(config):
        return None
    return header(routing)


def _runs_tests(session: pytest.Session) -> bool:
    return not session.config.pluginmanager.hasplugin("dsession")


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """After the process made its own resources (the plugin's housekeeping connects unrouted): route from here on."""
    routing = session.config.stash.get(ROUTING, None)
    if routing is None or not routing.enabled or not routing.planned or not _runs_tests(session):
        return
    state = session.config.stash[STATE]
    for p in routing.planned:
        if p.local.server is not None:
            _check_free(state, p)
            _write_spec(state, p.local.server, p)
    text = localroute.encode([p.route for p in routing.planned], STARTER)
    now = Settings.read()  # as conftests and plugins left it by now (pytest-env's PYTHONPATH=...), not as pytest started
    pythonpath = now.get("PYTHONPATH")
    routing.saved_env = {name: now.env.get(name) for name in (localroute.ENV, "PYTHONPATH")}
    os.environ[localroute.ENV] = text  # the plugin's job: the worker's variables, for its subprocesses too
    os.environ["PYTHONPATH"] = str(SITE_DIR) + (os.pathsep + pythonpath if pythonpath else "")
    localroute.install(localroute.Router([p.route for p in routing.planned], STARTER))
    routing.installed = True


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Before the plugin's own cleanup (trylast): unrouted again, counts to the controller, the worker's servers removed
    (only while this process holds its worker lock: a run removes only what it started)."""
    config = session.config
    routing = config.stash.get(ROUTING, None)
    if routing is None or not routing.installed:
        return
    router = localroute.uninstall()
    routing.installed = False
    for name, value in routing.saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if router is not None:
        routing.counts.update(router.counts)
    state = config.stash[STATE]
    if state.worker_lock_fd is not None:
        routing.started_ms += stop_servers(state.settings, routing.planned)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["isolation_routed"] = dict(routing.counts)
        workeroutput["isolation_started_ms"] = list(routing.started_ms)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    routing = node.config.stash.get(ROUTING, None)
    output = getattr(node, "workeroutput", {})
    counts, started = output.get("isolation_routed"), output.get("isolation_started_ms")
    if routing is not None and isinstance(counts, dict):
        routing.counts.update(counts)
    if routing is not None and isinstance(started, list):
        routing.started_ms += [float(ms) for ms in started]


# ---------------------------------------------------------------- the worker's own servers
def _check_free(state: State, p: Planned) -> None:
    """The port of a server of the worker's own is free before any test (else one line naming the holder)."""
    from ..probe import port_free, process_owner

    port = p.route.target
    if not port_free("127.0.0.1", port):
        raise pytest.UsageError(
            f"localhost routing: port {port} of worker {state.context.worker}'s block, for its own {p.service} server, "
            f"is held by {process_owner(port)}; free it, or set isolation_localhost = off"
        )


def _write_spec(state: State, server: LocalServer, p: Planned) -> None:
    from ..engine import TEST_COPY_LABEL, TEST_WORKER_LABEL, WORKTREE_LABEL

    ctx = state.context
    spec = {
        "service": p.service,
        "image": Settings.read().get(server.image_variable) or server.image,  # a conftest's or monkeypatch's setting counts
        "name": ctx.container_name(p.service),
        "port": p.route.target,
        "container_port": server.container_port,
        "command": list(server.command),
        "hello": server.hello.hex(),
        "answer": server.answer.hex(),
        "run_dir": str(state.run_dir),
        "labels": {TEST_COPY_LABEL: ctx.copy, TEST_WORKER_LABEL: ctx.worker, WORKTREE_LABEL: state.copy.env["STACK_WORKTREE"]},
    }
    path = Path(p.route.server)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(spec), encoding="utf-8")


def start_server(spec_path: str) -> None:
    """The starter the socket hook calls on a routed connection to a server of the worker's own (in the test
    process or a subprocess of it): start its container once, under a lock in the run directory."""
    import fcntl
    import time

    from ..settings import Settings
    from . import containers

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    with open(spec_path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(spec_path + ".up"):
            return
        started = time.perf_counter()
        container = containers.start(
            Settings.read(),  # this process's engine (the hook runs in test processes and their subprocesses)
            spec["image"],
            spec["name"],
            spec["port"],
            spec["container_port"],
            spec["labels"],
            Path(spec["run_dir"]),
            spec["command"],
            own_network=False,
        )
        try:
            _wait_ready(spec)
        except BaseException:
            containers.stop(container)
            raise
        Path(spec_path + ".up").write_text(f"{(time.perf_counter() - started) * 1000:.0f}\n", encoding="ascii")


def _wait_ready(spec: dict[str, Any]) -> None:
    last = await_answer("127.0.0.1", spec["port"], bytes.fromhex(spec["hello"]), bytes.fromhex(spec["answer"]), READY_SECONDS)
    if last is not None:
        raise StackError(
            f"{spec['name']} ({spec['image']}) did not answer on 127.0.0.1:{spec['port']} within {READY_SECONDS:.0f} s ({last})"
        )


def stop_servers(settings: Settings, planned: list[Planned]) -> list[float]:
    """Remove the worker's own servers that were started (by this process or its subprocesses); return what
    starting each took (ms)."""
    from . import containers

    took = []
    for p in planned:
        up = Path(p.route.server + ".up")
        if not p.route.server or not up.exists():
            continue
        spec = json.loads(Path(p.route.server).read_text(encoding="utf-8"))
        containers.stop(containers.WorkerContainer(spec["name"], "", spec["port"], settings))
        try:
            took.append(float(up.read_text(encoding="ascii")))
        except ValueError:
            pass
        up.unlink()
    return took
