"""Localhost routing (issue 27) without Docker: the table the kinds declare, and the socket hook on real sockets
(blocking, create_connection, connect_ex, asyncio, a Python subprocess through route_site/sitecustomize)."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from parallel_stacks import localroute as lr
from parallel_stacks.pytest_plugin import isolation as iso
from parallel_stacks.pytest_plugin import routing
from parallel_stacks.model import Copy
from test_isolation_unit import KINDS, derived

SITE = Path(lr.__file__).parent / "route_site"


class Listener:
    """A real TCP server on an ephemeral loopback port that answers every connection with its own name."""

    def __init__(self, name: bytes):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.name = name
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.name)

    def close(self):
        self.sock.close()


def free_port() -> int:
    """A loopback port nothing listens on (the 'default port' routed below)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def target():
    listener = Listener(b"worker's own")
    yield listener
    listener.close()


@pytest.fixture
def routed(target):
    """A router sending loopback:<default> to the listener; uninstalled afterwards (the test can see the counts)."""
    default = free_port()
    router = lr.Router([lr.Route("redis", default, "127.0.0.1", target.port)])
    lr.install(router)
    yield default, router
    lr.uninstall()


def read(sock: socket.socket) -> bytes:
    with sock:
        return sock.recv(100)


def test_encode_decode_round_trip_and_bad_values():
    routes = [lr.Route("redis", 6379, "127.0.0.1", 20098, "/tmp/run/servers/gw0-redis.json"), lr.Route("pg", 5432, "::1", 21432)]
    assert lr.decode(lr.encode(routes, "m:f")) == (routes, "m:f")
    for bad in ("m:f,redis", "m:f,=6379>127.0.0.1|1", "m:f,redis=x>127.0.0.1|1"):
        with pytest.raises(ValueError):
            lr.decode(bad)


def test_only_loopback_addresses_on_routed_ports_are_rewritten():
    router = lr.Router([lr.Route("redis", 6379, "127.0.0.1", 20098)])
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        assert router.rewrite(socket.AF_INET, (host, 6379)) == ("127.0.0.1", 20098)
    assert router.rewrite(socket.AF_INET6, ("::1", 6379, 0, 0)) == ("::ffff:127.0.0.1", 20098, 0, 0)
    assert router.rewrite(socket.AF_INET, ("10.0.0.5", 6379)) == ("10.0.0.5", 6379)  # another machine's Redis
    assert router.rewrite(socket.AF_INET, ("127.0.0.1", 6380)) == ("127.0.0.1", 6380)  # not a default port
    assert router.rewrite(socket.AF_UNIX, "/tmp/redis.sock") == "/tmp/redis.sock"
    assert router.counts == {"redis": 4}


def test_blocking_connects_reach_the_route_target(routed, target):
    default, router = routed
    assert read(socket.create_connection(("localhost", default), timeout=5)) == b"worker's own"
    sock = socket.socket()
    sock.connect(("127.0.0.1", default))
    assert read(sock) == b"worker's own"
    sock = socket.socket()
    assert sock.connect_ex(("127.0.0.1", default)) == 0
    assert read(sock) == b"worker's own"
    assert router.counts["redis"] >= 3


def test_asyncio_connections_reach_the_route_target(routed):
    default, router = routed

    async def fetch():
        reader, writer = await asyncio.open_connection("127.0.0.1", default)
        data = await reader.read(100)
        writer.close()
        return data

    assert asyncio.run(fetch()) == b"worker's own"
    assert router.counts["redis"] == 1


def test_without_the_route_the_same_connection_is_refused(target):
    """The routed tests can fail: the default port itself has nothing listening."""
    default = free_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", default), timeout=5)
    lr.install(lr.Router([lr.Route("redis", default, "127.0.0.1", target.port)]))
    lr.uninstall()
    assert not hasattr(socket.socket.connect, "parallel_stacks_uninstall")  # the unpatched method again
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", default), timeout=5)


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


CLIENT = "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]) if len(sys.argv)>1 else {port}), timeout=5); print(s.recv(100).decode())"


def test_a_python_subprocess_inherits_the_route_through_sitecustomize(target):
    default = free_port()
    env = {**os.environ, "PYTHONPATH": str(SITE), lr.ENV: lr.encode([lr.Route("redis", default, "127.0.0.1", target.port)], "x:y")}
    out = run_python(CLIENT.format(port=default), env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "worker's own"
    del env[lr.ENV]  # inert without the table: the default port is refused
    out = run_python(CLIENT.format(port=default), env)
    assert out.returncode != 0 and "ConnectionRefusedError" in out.stderr


def test_the_sitecustomize_it_shadows_still_runs(target, tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import builtins; builtins.SHADOWED_RAN = True\n")
    env = {**os.environ, "PYTHONPATH": f"{SITE}{os.pathsep}{tmp_path}", lr.ENV: lr.encode([], "x:y")}
    out = run_python("import builtins; print(getattr(builtins, 'SHADOWED_RAN', False))", env)
    assert out.stdout.strip() == "True", out.stderr


STARTS: list[str] = []


def starter(spec: str) -> None:
    """A stand-in starter (the plugin's starts a container): records its calls, fails for a spec named `bad`."""
    STARTS.append(spec)
    if spec.endswith("bad"):
        raise RuntimeError("port 20098 is held by container other-copy-redis\nsecond line")


def test_a_worker_server_is_started_once_on_the_first_routed_connection(tmp_path, target):
    STARTS.clear()
    default, spec = free_port(), str(tmp_path / "gw0-redis.json")
    router = lr.Router([lr.Route("redis", default, "127.0.0.1", target.port, spec)], f"{__name__}:starter")
    assert STARTS == []  # nothing started before a connection asks for it
    for _ in range(3):
        router.rewrite(socket.AF_INET, ("127.0.0.1", default))
    assert STARTS == [spec]
    Path(spec + ".up").touch()  # started by another process of the worker: not started again
    lr.Router([lr.Route("redis", default, "127.0.0.1", target.port, spec)], f"{__name__}:starter").rewrite(socket.AF_INET, ("localhost", default))
    assert STARTS == [spec]


def test_a_server_that_cannot_start_is_one_connection_error(target):
    default = free_port()
    router = lr.Router([lr.Route("redis", default, "127.0.0.1", target.port, "/nowhere/bad")], f"{__name__}:starter")
    with pytest.raises(ConnectionRefusedError) as err:
        router.rewrite(socket.AF_INET, ("127.0.0.1", default))
    assert str(err.value) == "parallel-stacks: the worker's own redis server did not start: port 20098 is held by container other-copy-redis"


def state_of(offset: int, worker: str, isolated: bool = True, kinds=None, tmp=Path("/tmp/run")):
    """What routing.plan reads of the plugin's State."""
    kinds = kinds or {**KINDS, "mqtt": "mqtt"}
    vals = {**derived(offset), "MQTT_PORT": str(1883 + offset), "MQTT_USER": "app", "MQTT_PASSWORD": "pw"}
    container = {"postgres": 5432, "redis": 6379, "api": 8003, "ui": 3000, "mqtt": 1883, "web": 8003}
    for name in kinds:
        vals[f"{name.upper()}_CONTAINER_PORT"] = str(container[name])
        vals.setdefault(f"{name.upper()}_PORT", str(container[name] + offset + 1))
    copy = Copy.of_kinds(vals, kinds)
    ctx = iso.build_context(copy, worker, isolated, tmp, {"redis": "db"})
    from parallel_stacks.kinds import get

    return SimpleNamespace(
        copy=copy,
        context=ctx,
        run_dir=tmp,
        services=lambda: iso.stack_services(copy),
        worker_for=lambda kind: iso.worker_of(worker, isolated, get(kind.name), {"redis": "db"}),
    )


def test_each_kind_declares_where_its_default_port_goes():
    planned, ambiguous = routing.plan(state_of(16000, "gw1"))
    table = {p.route.port: p.route for p in planned}
    assert ambiguous == {}
    block = iso.port_block(state_of(16000, "gw1").copy, 1)
    # servers the copy cannot share between workers: one of the worker's own, on its block, started on first use
    assert table[6379] == lr.Route("redis", 6379, "127.0.0.1", block.stop - 2, "/tmp/run/servers/gw1-redis.json")
    assert table[1883] == lr.Route("mqtt", 1883, "127.0.0.1", block.stop - 3, "/tmp/run/servers/gw1-mqtt.json")
    # the rest: this copy's own service
    assert table[5432] == lr.Route("postgres", 5432, "127.0.0.1", 21432)
    assert table[8003] == lr.Route("api", 8003, "127.0.0.1", 24003)
    assert table[3000] == lr.Route("ui", 3000, "127.0.0.1", 19000)
    gw0 = {p.route.port: p.route.target for p in routing.plan(state_of(16000, "gw0"))[0]}
    assert gw0[6379] != table[6379].target and gw0[5432] == table[5432].target  # own servers per worker, one copy


def test_without_isolation_the_servers_of_a_workers_own_are_not_routed():
    planned, _ = routing.plan(state_of(16000, "gw1", isolated=False))
    assert {p.service for p in planned} == {"postgres", "api", "ui"}


def test_a_port_two_services_declare_is_not_routed_and_the_header_says_so():
    planned, ambiguous = routing.plan(state_of(16000, "gw0", kinds={"postgres": "postgres", "api": "http", "web": "http"}))
    assert ambiguous == {8003: ["api", "web"]}
    assert 8003 not in {p.route.port for p in planned}
    text = routing.header(routing.Routing(True, planned, ambiguous))
    assert ":5432 -> postgres 127.0.0.1:21432" in text and ":8003 not routed (api and web both declare it)" in text
    assert "off" in routing.header(routing.Routing(False))


def test_the_hook_costs_little_per_connect(target):
    """Measured, not asserted against a time: a connect through the hook (routed, and patched but not routed)
    against an unpatched one, the best of five alternating batches (printed with -s)."""
    rounds, best = 200, {"unpatched": [], "patched, not routed": [], "routed": []}
    default = free_port()

    def connects(port):
        started = time.perf_counter()
        for _ in range(rounds):
            s = socket.socket()
            s.connect(("127.0.0.1", port))
            s.close()
        return (time.perf_counter() - started) / rounds * 1e6

    for _ in range(5):
        best["unpatched"].append(connects(target.port))
        lr.install(lr.Router([lr.Route("redis", default, "127.0.0.1", target.port)]))
        try:
            best["patched, not routed"].append(connects(target.port))
            best["routed"].append(connects(default))
        finally:
            lr.uninstall()
    router = lr.Router([lr.Route("redis", default, "127.0.0.1", target.port)])
    started = time.perf_counter()
    for _ in range(100000):
        router.rewrite(socket.AF_INET, ("127.0.0.1", default))
    rewrite = (time.perf_counter() - started) / 100000 * 1e6
    print("\nconnect: " + ", ".join(f"{name} {min(us):.1f} us" for name, us in best.items()) + f"; the rewrite alone {rewrite:.2f} us")
    assert lr.active() is None and router.counts["redis"] == 100000
