"""Layer 4: named URLs. One reverse proxy per machine (and proxy port) routes
`http://<service>.<copy>.localhost:<NAMED_URLS_PORT>` to each copy's HTTP services.

The proxy is a Caddy container on the engine host's network (so it reaches
every copy's loopback-bound ports, and services a user runs outside Docker),
named `parallel-stacks-proxy-<port>` and labelled `dev.parallel-stacks.proxy`.
Its routing table lives in the container itself (`/etc/caddy/routes.json`,
one entry per copy, with the worktree it belongs to) and the Caddyfile is
rewritten from it at every change, then reloaded without dropping the other
copies' connections. `make up` adds a copy's routes (starting the proxy on
first need), `make down`/`nuke` remove them; the proxy is removed with the last
copy's routes, never while a copy has routes in it. Changes are serialised by
a lock in the machine's state directory.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import engine as docker_state
from . import labels
from .basics import StackError
from .formula import named_host
from .model import Copy
from .registry.store import state_dir
from .settings import Settings

__all__ = [
    "PROXY_LABEL",
    "container_name",
    "publish",
    "put",
    "routes_of",
    "table",
    "withdraw",
]

PROXY_LABEL = labels.PROXY
DEFAULT_IMAGE = "caddy:2"
CONF_DIR = "/etc/caddy"
START_SECONDS = 15

Table = dict[str, dict[str, Any]]  # {compose project: {"worktree": path, "routes": {host: upstream}}}


def container_name(port: str | int) -> str:
    """The name of the machine's proxy container for named URLs on `port`."""
    return f"parallel-stacks-proxy-{port}"


def routes_of(copy: Copy, stack_services: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{named host: upstream host:port} of the copy's routed services (those with a `<SERVICE>_NAMED_URL`)."""
    return {
        named_host(svc.name, copy.compose_project): f"{svc.host}:{svc.port}"
        for svc in copy.services
        if svc.named_url and svc.name in stack_services
    }


def caddyfile(port: str, routes: Table) -> str:
    """The whole Caddyfile for `routes`: one site per named host, a listing for any other host."""
    lines = [
        "# Written by parallel-stacks (tools/parallel_stacks/proxy.py) from routes.json; do not edit.",
        "{",
        "\tadmin unix//tmp/caddy-admin.sock",  # no TCP admin port on the host network
        "\tauto_https off",
        "\tdefault_bind 127.0.0.1",
        "}",
    ]
    hosts = []
    for project, entry in sorted(routes.items()):
        lines.append(f"# {project} ({entry.get('worktree', '?')})")
        for name, upstream in sorted(entry["routes"].items()):
            hosts.append(name)
            lines += [f"http://{name}:{port} {{", f"\treverse_proxy {upstream}", "}"]
    listing = ", ".join(f"http://{h}:{port}" for h in hosts) or "none"
    lines += [f"http://:{port} " + "{", '\trespond "No copy answers to {host} here. Named URLs: ' + listing + '" 404', "}"]
    return "\n".join(lines) + "\n"


def _ours(rec: Mapping[str, Any], port: str) -> bool:
    return bool((rec.get("Config", {}).get("Labels") or {}).get(PROXY_LABEL) == port)


def table(settings: Settings, port: str) -> Table:
    """The proxy's routing table ({} when there is no proxy on `port`)."""
    rec = docker_state.container(settings, container_name(port))
    return _read(settings, container_name(port)) if rec is not None and _ours(rec, port) else {}


def _read(settings: Settings, name: str) -> Table:
    """The routing table in the proxy container: from the engine's socket (the archive `docker cp` reads), else the CLI."""
    import io
    import tarfile
    from urllib.parse import quote

    answer = docker_state.engine_request(settings, f"/containers/{quote(name, safe='')}/archive?path={quote(CONF_DIR + '/routes.json')}")
    if answer is not None and answer[0] in (200, 404):
        if answer[0] == 404:
            return {}  # a proxy that never got a table (killed while starting): start from none
        archive = answer[1]
    else:
        proc = docker_state.run_docker(settings, "cp", f"{name}:{CONF_DIR}/routes.json", "-", check=False)
        if proc.returncode != 0:
            return {}
        archive = proc.stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("routes.json")
        loaded: Table = json.loads(member.read()) if member else {}
    return loaded


def _write(settings: Settings, name: str, port: str, routes: Table) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ps-proxy-") as tmp:
        Path(tmp, "routes.json").write_text(json.dumps(routes, indent=1, sort_keys=True) + "\n")
        Path(tmp, "Caddyfile").write_text(caddyfile(port, routes))
        docker_state.docker(settings, "cp", f"{tmp}/.", f"{name}:{CONF_DIR}/")


def _lock_file(settings: Settings) -> Any:
    directory = state_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    return open(directory / "proxy.lock", "a")


@contextlib.contextmanager
def _machine_lock(settings: Settings) -> Iterator[None]:
    """One change of the proxy at a time on this machine (an flock, released however its holder exits)."""
    import fcntl

    with _lock_file(settings) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another copy's change of the named-URL proxy", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def publish(copy: Copy, stack_services: Mapping[str, Mapping[str, Any]], settings: Settings) -> dict[str, str]:
    """Route this copy's named hosts through the proxy (started if needed); returns the routes.

    StackError (one line) when the proxy cannot serve them: its port held by
    something else, its image missing, a foreign container with its name.
    """
    port = copy.env.get("NAMED_URLS_PORT", "off")
    routes = routes_of(copy, stack_services)
    project = copy.env["COMPOSE_PROJECT_NAME"]
    if port == "off":
        return {}
    if not routes:
        withdraw(project, port, settings)
        return {}
    put(project, {"worktree": copy.env["STACK_WORKTREE"], "routes": routes}, port, settings)
    return routes


def put(project: str, entry: dict[str, Any], port: str, settings: Settings) -> None:
    """Set `project`'s entry ({"worktree", "routes": {host: upstream}}, optionally "pid" of the process serving
    them) in the proxy on `port`, starting the proxy if needed. The dashboard routes itself through this."""
    routes: dict[str, str] = entry["routes"]
    name = container_name(port)
    with _machine_lock(settings):
        rec = docker_state.container(settings, name)
        if rec is not None and not _ours(rec, port):
            raise StackError(f"a container named {name} exists and is not this template's proxy; remove it or set NAMED_URLS_PORT")
        current = _read(settings, name) if rec is not None else {}
        if rec is not None and current.get(project) == entry and rec["State"].get("Running"):
            return  # already routed: nothing to change
        for other, their in current.items():
            clash = sorted(set(routes) & set(their.get("routes", {})))
            if other != project and clash:
                raise StackError(
                    f"the name {clash[0]} is already routed to copy {other} ({their.get('worktree')}); rename one of the projects"
                )
        before = dict(current)
        current[project] = entry
        if rec is None:
            _create(name, port, settings)
        elif not rec["State"].get("Running"):
            _check_port(port)  # a stopped proxy's port may have been taken since
        _write(settings, name, port, current)
        if rec is None or not rec["State"].get("Running"):
            _start(settings, name, port, keep=bool(before))
        else:
            _reload(settings, name, port, before)


def _reload(settings: Settings, name: str, port: str, before: Table) -> None:
    """Reload the proxy's config; if Caddy refuses it, put the previous table back (the other copies keep their names)."""
    try:
        _caddy_reload(settings, name)
    except StackError as exc:
        _write(settings, name, port, before)
        raise StackError(f"the named-URL proxy refused the new routes, kept the old ones ({exc})") from None


def _caddy_reload(settings: Settings, name: str) -> None:
    docker_state.docker(settings, "exec", name, "caddy", "reload", "--config", f"{CONF_DIR}/Caddyfile", "--adapter", "caddyfile")


def _check_port(port: str) -> None:
    from .probe import port_free, process_owner

    if not port_free("127.0.0.1", int(port)):
        raise StackError(f"port {port} is held by {process_owner(int(port))}; set NAMED_URLS_PORT to a free port (or NAMED_URLS_PORT=off)")


def _create(name: str, port: str, settings: Settings) -> None:
    _check_port(port)
    image = settings.get("CADDY_IMAGE") or DEFAULT_IMAGE
    if docker_state.missing_images(settings, [image]):
        try:
            docker_state.pull(settings, image)
        except StackError:
            raise StackError(f"image {image} is not on this machine and could not be pulled; pull it or set CADDY_IMAGE") from None
    docker_state.docker(
        settings,
        "create",
        "--name",
        name,
        "--network",
        "host",
        "--restart",
        "unless-stopped",
        "--label",
        f"{PROXY_LABEL}={port}",
        image,
        "caddy",
        "run",
        "--config",
        f"{CONF_DIR}/Caddyfile",
        "--adapter",
        "caddyfile",
    )


def _start(settings: Settings, name: str, port: str, keep: bool = False) -> None:
    """Start the proxy and wait until it listens; one line if it cannot, and no container left
    unless it holds other copies' routes (`keep`: they are kept for a later start)."""
    import time

    from .probe import port_free

    docker_state.docker(settings, "start", name)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if not port_free("127.0.0.1", int(port)):
            return
        rec = docker_state.container(settings, name)
        if rec is None or not rec["State"].get("Running"):
            break
        time.sleep(0.1)
    logs = docker_state.docker(settings, "logs", "--tail", "3", name).strip().splitlines()
    with contextlib.suppress(StackError):
        if keep:
            docker_state.docker(settings, "stop", name)
        else:
            docker_state.docker(settings, "rm", "-f", name)
    raise StackError(f"the named-URL proxy {name} did not start: {logs[-1] if logs else 'no output'}")


def withdraw(project: str, port: str, settings: Settings, pid: int | None = None) -> bool:
    """Remove `project`'s routes; the proxy goes with the last copy's. True if it had routes.
    `pid`: only if its entry names that serving process (a dashboard never withdraws another's route)."""
    if port == "off":
        return False
    name = container_name(port)
    with _machine_lock(settings):
        rec = docker_state.container(settings, name)
        if rec is None or not _ours(rec, port):
            return False
        current = _read(settings, name)
        if project not in current or (pid is not None and current[project].get("pid") != pid):
            return False
        del current[project]
        if not current:
            docker_state.docker(settings, "rm", "-f", name)
            return True
        _write(settings, name, port, current)
        if rec["State"].get("Running"):
            _caddy_reload(settings, name)
    return True


def proxies(settings: Settings) -> dict[str, Table]:
    """{proxy port: routing table} of every named-URL proxy on the engine."""
    found = {}
    listed = docker_state.labelled_containers(settings, PROXY_LABEL)  # the socket first (a few ms), else the CLI
    if listed is not None:
        for listing in listed:
            name = str((listing.get("Names") or ["?"])[0]).lstrip("/")
            found[(listing.get("Labels") or {}).get(PROXY_LABEL, "")] = _read(settings, name)
        return found
    for line in docker_state.docker(settings, "ps", "-a", "--filter", f"label={PROXY_LABEL}", "--format", "{{.Names}}").split():
        rec = docker_state.container(settings, line)
        if rec is not None:
            port = (rec["Config"].get("Labels") or {}).get(PROXY_LABEL, "")
            found[port] = _read(settings, line)
    return found
