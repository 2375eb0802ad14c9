"""Routing of hard-coded loopback endpoints: `Redis()`, `localhost:1883`, `127.0.0.1:5432` reach this test
worker's own server instead of whatever copy listens on the default port.

pytest-socket's hook, put to another use: `socket.socket.connect` and `connect_ex` are replaced in the test
process, and a connection to a loopback address on a port of the routing table goes to the route's target.
`socket.create_connection`, redis-py, paho-mqtt and asyncio's `sock_connect` (which calls `sock.connect` on
a non-blocking socket) all end there. C clients (libpq) and non-Python processes are not covered.

Standard library only, and nothing at import but the module itself: `route_site/sitecustomize.py` loads
this file in every Python subprocess a test starts (the table is inherited in ``PARALLEL_STACKS_ROUTES``).
A route to a server of the worker's own names a spec file; the first connection starts that server
through the starter the table names (``module:function``, called with the spec's path), once per
process, and not at all once the spec's ``.up`` file exists.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ENV", "LOOPBACK", "Route", "Router", "active", "decode", "encode", "install", "install_from_env", "uninstall"]

ENV = "PARALLEL_STACKS_ROUTES"
LOOPBACK = frozenset({"localhost", "localhost.", "127.0.0.1", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1"})
SEPARATOR = ","


@dataclass(frozen=True)
class Route:
    """Connections to a loopback address on `port` go to `host`:`target` instead."""

    service: str  # for the header and the counts
    port: int
    host: str
    target: int
    server: str = ""  # a server of the worker's own: its spec file (started on the first connection)

    def address(self, family: int, rest: tuple[Any, ...]) -> tuple[Any, ...]:
        """The target as a socket of `family` connects to it (`rest`: the flow info and scope id of an IPv6 address)."""
        host = self.host
        if family == socket.AF_INET6 and ":" not in host:
            host = "::ffff:" + host  # an IPv6 socket (`::1`, or `localhost` resolved to it) reaches the IPv4 target
        return (host, self.target, *rest)


def encode(routes: list[Route], starter: str) -> str:
    """The table as one environment value: `starter,service=port>host:target[@spec],...` (spec paths hold no ',')."""
    parts = [starter]
    for r in routes:
        if SEPARATOR in r.server or "@" in r.service:
            raise ValueError(f"cannot encode route {r}")
        parts.append(f"{r.service}={r.port}>{r.host}|{r.target}" + (f"@{r.server}" if r.server else ""))
    return SEPARATOR.join(parts)


def decode(text: str) -> tuple[list[Route], str]:
    """(routes, starter) from `encode`'s value; ValueError for anything else."""
    starter, *items = text.split(SEPARATOR)
    routes = []
    for item in items:
        service, _, rest = item.partition("=")
        port, _, rest = rest.partition(">")
        host, _, rest = rest.partition("|")
        target, _, server = rest.partition("@")
        if not service or not host:
            raise ValueError(f"{ENV}: bad route {item!r}")
        routes.append(Route(service, int(port), host, int(target), server))
    return routes, starter


class Router:
    """The table of one process, the connections it routed (per service), and the servers it made sure of."""

    def __init__(self, routes: list[Route], starter: str = ""):
        self.table = {r.port: r for r in routes}
        self.starter = starter
        self.counts: Counter[str] = Counter()
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def rewrite(self, family: int, address: Any) -> Any:
        """`address` or, for a loopback address on a routed port, the route's target."""
        if type(address) is not tuple or len(address) < 2:
            return address  # AF_UNIX paths and the like
        route = self.table.get(address[1])
        if route is None or address[0] not in LOOPBACK:
            return address
        if route.server and route.server not in self._ready:
            self._ensure(route)
        self.counts[route.service] += 1
        return route.address(family, address[2:])

    def _ensure(self, route: Route) -> None:
        with self._lock:
            if route.server in self._ready:
                return
            if not os.path.exists(route.server + ".up"):
                import importlib

                module, _, function = self.starter.partition(":")
                try:
                    getattr(importlib.import_module(module), function)(route.server)
                except Exception as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise ConnectionRefusedError(
                        f"parallel-stacks: the worker's own {route.service} server did not start: {first}"
                    ) from None
            self._ready.add(route.server)


_ROUTER: Router | None = None
_ORIGINAL: dict[str, Any] = {}


def active() -> Router | None:
    """The router installed in this process, if any."""
    return _ROUTER


def install(router: Router) -> None:
    """Route this process's connections through `router` (replacing any earlier table)."""
    global _ROUTER
    other = getattr(socket.socket.connect, "parallel_stacks_uninstall", None)
    if other is not None and other is not uninstall:
        other()  # another copy of this module (sitecustomize's, in a nested test run) routed first: ours replaces it
    _ROUTER = router
    if _ORIGINAL:
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    _ORIGINAL.update(connect=connect, connect_ex=connect_ex)

    def routed_connect(self: socket.socket, address: Any) -> None:
        router = _ROUTER
        return connect(self, address if router is None else router.rewrite(self.family, address))

    def routed_connect_ex(self: socket.socket, address: Any) -> int:
        router = _ROUTER
        return connect_ex(self, address if router is None else router.rewrite(self.family, address))

    routed_connect.parallel_stacks_uninstall = uninstall  # type: ignore[attr-defined]
    socket.socket.connect = routed_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = routed_connect_ex  # type: ignore[method-assign,assignment]


def uninstall() -> Router | None:
    """Back to the unpatched socket; returns the router that was active (its counts)."""
    global _ROUTER
    router, _ROUTER = _ROUTER, None
    if _ORIGINAL:
        socket.socket.connect = _ORIGINAL.pop("connect")  # type: ignore[method-assign]
        socket.socket.connect_ex = _ORIGINAL.pop("connect_ex")  # type: ignore[method-assign]
    return router


def install_from_env(environ: Mapping[str, str], on_error: Callable[[str], None] | None = None) -> Router | None:
    """In a subprocess (sitecustomize): the table the test process exported; None when there is none."""
    text = environ.get(ENV, "")
    if not text:
        return None
    try:
        routes, starter = decode(text)
    except ValueError as exc:
        if on_error is not None:
            on_error(f"parallel-stacks: {ENV} ignored: {exc}")
        return None
    router = Router(routes, starter)
    install(router)
    return router
