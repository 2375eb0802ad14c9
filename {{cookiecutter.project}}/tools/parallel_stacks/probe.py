"""Layer 3: is a host port free, and who holds it? Every host port of a copy
checked before `up`; a taken one named with its holder.

A port is taken when a server can't bind it on the address the copy
publishes on (IPv4, and IPv6 where the machine has it), or when a running
container of another copy publishes it (Docker can hold a published port
without any listening socket when its userland proxy is off). Ports that
this same copy's containers publish are not conflicts, so `make up` on a
running copy is a no-op.
"""

from __future__ import annotations

import errno
import sys

from . import labels
from .basics import PORT_MAX, PORT_MIN, StackError

TYPE_CHECKING = False  # `make check-ports` pays for every import: types are for mypy only
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping
    from typing import Any

    from .model import Copy
    from .settings import Settings

SEARCH_STEP = 1000  # suggested offsets keep ports readable (15432 = postgres of copy 10000)
SEARCH_TRIES = 60


class Conflict:
    """A port of this copy that something else holds."""

    __slots__ = ("owner", "port", "service")

    def __init__(self, service: str, port: int, owner: str):
        self.service, self.port, self.owner = service, port, owner  # owner: who holds it, in words

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Conflict) and (self.service, self.port, self.owner) == (other.service, other.port, other.owner)

    def __repr__(self) -> str:
        return f"Conflict({self.service!r}, {self.port}, {self.owner!r})"


# _socket is the C module under socket.py: the same calls without socket.py's
# enum and selectors imports, which cost half of this helper's start-up.
def _ipv6_available() -> bool:
    import _socket

    if not _socket.has_ipv6:
        return False
    sock = _socket.socket(_socket.AF_INET6, _socket.SOCK_STREAM)
    try:
        sock.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def addresses(bind: str) -> list[str]:
    """Addresses to test for a copy publishing on `bind` (as config.parse_bind_address normalised it)."""
    if bind in ("0.0.0.0", "::"):
        return ["0.0.0.0"] + (["::"] if _ipv6_available() else [])
    if bind.startswith("127.") and ":" not in bind:
        return [bind] + (["::1"] if _ipv6_available() else [])  # `localhost` may resolve to ::1 first
    return [bind]


def port_free(host: str, port: int) -> bool:
    """True when a server could bind host:port right now (SO_REUSEADDR, as servers do)."""
    import _socket

    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if family == _socket.AF_INET6:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise StackError(f"cannot test {host}:{port}: {exc.strerror}") from None
    finally:
        sock.close()
    return True


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports: a copy's port in it can be held by any client socket."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = f.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535  # IANA's dynamic range (macOS, BSD)


def ephemeral_ports(copy: Copy) -> tuple[list[int], int, int]:
    """(this copy's host ports inside the ephemeral range, its low end, its high end)."""
    low, high = ephemeral_range()
    return [p for _, p in copy.ports() if low <= p <= high], low, high


def process_owner(port: int) -> str:
    """'pid 123 (cmdline)' of the listener on `port`, as far as this user may see."""
    try:
        import psutil  # lazy: only when a port is taken
    except ImportError:
        return "another process (install psutil to name it)"
    try:
        listeners = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    except psutil.AccessDenied:
        return f"a process this user may not see (try: sudo lsof -i :{port})"
    pids = sorted({c.pid for c in listeners if c.pid})
    if not pids:
        return (
            f"a process this user may not see (try: sudo lsof -i :{port})"
            if listeners
            else "something that is not listening (TIME_WAIT or a reserved port)"
        )
    described = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            cmd = " ".join(proc.cmdline()) or proc.name()
            described.append(f"pid {pid} ({cmd[:120]})")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            described.append(f"pid {pid}")
    return ", ".join(described)


def _same_address(a: str, b: str) -> bool:
    import ipaddress

    try:
        x, y = ipaddress.ip_address(a or "0.0.0.0"), ipaddress.ip_address(b or "0.0.0.0")
    except ValueError:
        return True
    return x.is_unspecified or y.is_unspecified or x == y


def container_owner(rec: dict[str, Any]) -> str:
    """Who a container is, in words: its name, compose project and worktree."""
    where = f", worktree {rec['working_dir']}" if rec.get("working_dir") else ""
    project = f"compose project {rec['project']}" if rec.get("project") else "not from compose"
    return f"container {rec['name']} ({project}{where})"


def is_own(rec: dict[str, Any], copy: Copy) -> bool:
    """True for a running container of this very copy: its compose project, started from this worktree."""
    import os

    if rec.get("project") != copy.env["COMPOSE_PROJECT_NAME"]:
        return False
    workdir = rec.get("working_dir")
    return not workdir or os.path.realpath(workdir) == os.path.realpath(copy.env["STACK_WORKTREE"])


def find_conflicts(
    copy: Copy,
    running: list[dict[str, Any]] | None,
    remote_busy: Collection[int] | None = None,
) -> list[Conflict]:
    """Conflicts of this copy's ports; `running` is every running container, or None if Docker is unreachable.

    `remote_busy`: for an engine on another host, the ports a probe container found taken there
    (this machine's own sockets say nothing about that host)."""
    bind = copy.env["BIND_ADDRESS"]
    own: set[int] = set()
    held: dict[int, dict[str, Any]] = {}
    for rec in running or []:
        for host_ip, port in rec["ports"]:
            if is_own(rec, copy):
                own.add(port)
            elif _same_address(host_ip, bind):
                held.setdefault(port, rec)
    found = []
    hosts = addresses(bind)
    for name, port in copy.ports():
        if port in own:
            continue
        if port in held:
            found.append(Conflict(name, port, container_owner(held[port])))
        elif remote_busy is not None:
            if port in remote_busy:
                found.append(
                    Conflict(
                        name, port, f"a process on the engine's host {copy.env.get('STACK_HOST', '?')} (a probe there could not bind it)"
                    )
                )
        elif not all(port_free(h, port) for h in hosts):
            found.append(Conflict(name, port, process_owner(port)))
    return found


PROBE_SCRIPT = """
import socket, sys
for port in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((sys.argv[1], int(port)))
    except OSError:
        print(port)
    finally:
        s.close()
"""


def remote_busy_ports(bind: str, ports: list[int], settings: Settings) -> set[int]:
    """Ports of `ports` something holds on a remote engine's host: a short-lived container on that host's
    network tries to bind each (PROBE_IMAGE, default the stack's PYTHON_IMAGE; it needs python3)."""

    from . import engine as docker_state

    image = settings.get("PROBE_IMAGE") or settings.get("PYTHON_IMAGE") or "python:3.12-slim"
    out = docker_state.docker(
        settings,
        "run",
        "--rm",
        "--network",
        "host",
        "--label",
        f"{labels.PROBE}=1",
        image,
        "python3",
        "-c",
        PROBE_SCRIPT,
        bind,
        *map(str, ports),
    )
    return {int(line) for line in out.split() if line.isdigit()}


def published_by(running: list[dict[str, Any]] | None) -> dict[int, dict[str, Any]]:
    """{host port: container record} of every running container's published ports."""
    return {port: rec for rec in running or [] for _, port in rec["ports"]}


def unusable(
    ports: Iterable[int],
    published: Mapping[int, dict[str, Any]],
    hosts: list[str],
    claimed: Collection[int] = frozenset(),
    eph: tuple[int, int] | None = None,
    name_owners: bool = True,
) -> str | None:
    """None when a copy could use every one of `ports`, else why not (the first reason found)."""
    for port in ports:
        if not PORT_MIN <= port <= PORT_MAX:
            return f"port {port} out of range"
        if eph and eph[0] <= port <= eph[1]:
            return f"port {port} is in the ephemeral range {eph[0]}-{eph[1]}"
        if port in claimed:
            return f"port {port} is claimed by another copy"
        if port in published:
            return f"port {port} is published by {container_owner(published[port])}"
        if not all(port_free(h, port) for h in hosts):
            return f"port {port} is held by {process_owner(port) if name_owners else 'a process'}"
    return None


def nearest_free_offset(
    copy: Copy, services: Mapping[str, Mapping[str, Any]], running: list[dict[str, Any]] | None, remote: bool = False
) -> int | None:
    """The closest offset (in steps of 1000) whose every port is free, or None (remote: free of containers' ports)."""
    from .formula import host_ports, offset_bounds

    offset = copy.offset
    bases = [svc["host_port"] for svc in services.values()]
    low, high = offset_bounds(bases)
    published = published_by(running)
    hosts = [] if remote else addresses(copy.env["BIND_ADDRESS"])
    for k in range(1, SEARCH_TRIES + 1):
        for cand in (offset + k * SEARCH_STEP, offset - k * SEARCH_STEP):
            if low <= cand <= high and unusable(host_ports(bases, cand), published, hosts, name_owners=False) is None:
                return cand
    return None


def describe(copy: Copy, found: list[Conflict], suggestion: int | None = None) -> str:
    """The one line for ports that are taken: which service, which port, who holds it, and a free offset to use instead."""
    first = found[0]
    more = ""
    if found[1:]:
        more = " (and " + "; ".join(f"{c.service} {c.port} by {c.owner}" for c in found[1:]) + ")"
    free = f"PORT_OFFSET={suggestion} is free, " if suggestion is not None else ""
    return (
        f"port {first.port} for service {first.service} on {copy.env['BIND_ADDRESS']} is held by {first.owner}{more}; "
        f"this copy has PORT_OFFSET={copy.env['PORT_OFFSET']}: {free}PORT_OFFSET=auto picks a free slot, or stop what holds it"
    )


_ASK = object()


def check(settings: Settings, copy: Copy, services: Mapping[str, Mapping[str, Any]], running: Any = _ASK) -> None:
    """Raise StackError naming the owner and a free offset when any port is taken.

    `running`: every running container (None: engine unreachable); asked for when not given.
    """
    remote = copy.env.get("STACK_ENGINE", "local") != "local"
    if running is _ASK:
        from . import engine as docker_state

        try:
            running = docker_state.running_containers(settings)
        except StackError as exc:
            if remote:
                raise StackError(f"the engine {copy.env['STACK_ENGINE']} is not reachable: {exc}") from None
            print(f"warning: {exc}; checked this machine's sockets only", file=sys.stderr)
            running = None
    busy: set[int] | None = None
    if remote:
        own = {p for rec in running or [] if is_own(rec, copy) for _, p in rec["ports"]}
        ports = [p for _, p in copy.ports() if p not in own]
        try:
            busy = remote_busy_ports(copy.bind, ports, settings) if ports else set()
        except StackError as exc:
            print(
                f"warning: could not probe the ports of {copy.env.get('STACK_HOST')} ({exc}); checked its containers only", file=sys.stderr
            )
            busy = set()
    found = find_conflicts(copy, running, busy)
    if found:
        raise StackError(describe(copy, found, nearest_free_offset(copy, services, running, remote=remote)))


def quick_all_free(settings: Settings, copy: Copy) -> bool:
    """True when every port is free on the host and no running container mentions it.

    The common case, answered with sockets and one raw engine request; any
    doubt (a busy port, a mention, no engine) returns False and the full
    check names owners.
    """
    from . import engine as docker_state

    if copy.env.get("STACK_ENGINE", "local") != "local":
        return False  # another host's ports: the full check probes them there
    ports = [port for _, port in copy.ports()]
    hosts = addresses(copy.env["BIND_ADDRESS"])
    if not all(port_free(h, p) for p in ports for h in hosts):
        return False
    body = docker_state.engine_get(settings, "/containers/json")
    if body is None or b'"PublicPort": ' in body:
        return False
    return not any(b'"PublicPort":%d,' % p in body or b'"PublicPort":%d}' % p in body for p in ports)
