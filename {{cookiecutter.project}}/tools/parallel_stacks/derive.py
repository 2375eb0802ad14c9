"""Layer 5: every value of one copy, derived from stack.yml, the env files and its offset.

The one place where a copy's values are computed; the Makefile, compose, the
other helpers and the tests read what this derives (`make env`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import kinds
from .basics import StackError, var_name
from .config import (
    DEFAULTS,
    Layers,
    client_host,
    compose_variables,
    data_dirs,
    env_file_layers,
    env_name_of,
    load_stack,
    lookup,
    named_networks,
    parse_bind_address,
    parse_proxy_port,
    project_root,
)
from .formula import compose_project_name, host_port, named_host, volume_name, worker_ports_text
from .offsets import resolve_offset
from .settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Copy

__all__ = [
    "DATA_DIR",
    "compose_environment",
    "copy_data_dir",
    "copy_of",
    "format_env",
    "format_ports",
    "load",
    "load_with_layers",
    "redact",
    "secret_keys",
    "services",
    "urls",
]

Values = dict[str, str]
MASK = "********"


def load(root: Path | None, settings: Settings, claim: bool = False) -> Values:
    """Everything a copy needs, as an ordered dict of strings (see load_with_layers)."""
    return load_with_layers(root, settings, claim)[0]


def load_with_layers(root: Path | None, settings: Settings, claim: bool = False) -> tuple[Values, Layers]:
    """(values, env file layers): everything a copy needs, and the files it came from.

    Deriving writes nothing: a `PORT_OFFSET=auto` copy (or a task id's) gets the slot it holds, or the one
    it would get (PORT_OFFSET_SOURCE `auto (unclaimed)`). `claim=True` is the explicit step of the commands
    that start or reserve a copy (`make up`, `make worktree`): it records the claim in the registry,
    .env.dynamic and, for a remote engine, on the engine.

    Keys: PORT_OFFSET, PORT_OFFSET_SOURCE, STACK_ENV, STACK_PROJECT,
    STACK_WORKTREE, COMPOSE_PROJECT_NAME, BIND_ADDRESS, <SERVICE>_PORT,
    <SERVICE>_CONTAINER_PORT, <VOLUME>_VOLUME, then each kind's settings and
    each service's URL.
    """
    root = project_root(settings) if root is None else root
    env_name = env_name_of(settings)
    stack = load_stack(root / "stack.yml")
    layers = env_file_layers(root, env_name)
    bind_raw, bind_source = lookup("BIND_ADDRESS", settings, layers)
    bind = parse_bind_address(DEFAULTS["BIND_ADDRESS"] if bind_raw is None else bind_raw, bind_source)
    offset, offset_source, test_start = resolve_offset(settings, layers, stack, root, env_name, bind, claim)
    project = stack["project"]
    out: Values = {
        "PORT_OFFSET": str(offset),
        "PORT_OFFSET_SOURCE": offset_source,
        "STACK_ENV": env_name,
        "STACK_PROJECT": project,
        "STACK_WORKTREE": str(root.resolve()),
        "COMPOSE_PROJECT_NAME": compose_project_name(project, env_name, offset),
        "BIND_ADDRESS": bind,
        "TEST_PORTS": worker_ports_text(offset, test_start),
    }
    out.update(engine_values(settings, layers))
    for name, svc in stack["services"].items():
        out[f"{var_name(name)}_PORT"] = str(host_port(svc["host_port"], offset))
        out[f"{var_name(name)}_CONTAINER_PORT"] = str(svc["container_port"])
    for vol in [v for svc in stack["services"].values() for v in svc.get("volumes", [])] + stack.get("volumes", []):
        out[f"{var_name(vol)}_VOLUME"] = volume_name(project, env_name, vol, offset)
    for var, net in named_networks(stack).items():
        out[var] = f"{out['COMPOSE_PROJECT_NAME']}_{net}"
    for var, rel in data_dirs(stack).items():
        out[var] = str(copy_data_dir(root.resolve(), out["COMPOSE_PROJECT_NAME"]) / rel)
    for kind in _kinds_of(stack):
        out.update(kind.settings(project, lambda key: lookup(key, settings, layers)[0]))
    routed = _services_of(stack, out)
    for service, kind in routed:
        out[kind.url_variable(service)] = kind.url(service, out)
    # named URLs through the machine's proxy (proxy.py); *.localhost is this machine, so not for an engine elsewhere
    if any(kind.routed for _, kind in routed) and out["STACK_ENGINE"] == "local":
        out["NAMED_URLS_PORT"] = parse_proxy_port(*lookup("NAMED_URLS_PORT", settings, layers))
        if out["NAMED_URLS_PORT"] != "off":
            for service, kind in routed:
                if kind.routed:
                    out[f"{service.key}_NAMED_URL"] = (
                        f"http://{named_host(service.name, out['COMPOSE_PROJECT_NAME'])}:{out['NAMED_URLS_PORT']}"
                    )
    return out, layers


DATA_DIR = ".stack-data"  # per-copy bind-mounted data directories of an adopted project (gitignored)


def copy_data_dir(root: Path, copy: str) -> Path:
    """Where the copy's bind-mounted data directories live: <repository>/.stack-data/<compose project>/."""
    return root / DATA_DIR / copy


def engine_values(settings: Settings, layers: Layers) -> Values:
    """STACK_ENGINE (`local` or the remote endpoint), and STACK_HOST, the host clients reach the copy's ports on:
    set by hand, else the remote engine's host; absent for a local engine (URLs use the bind address)."""
    from .engine import location

    endpoint, engine_host = location(settings)
    raw, source = lookup("STACK_HOST", settings, layers)
    out = {"STACK_ENGINE": endpoint}
    if raw:
        if any(c in raw for c in " /@?#") or len(raw) > 253:
            raise StackError(f"STACK_HOST={raw[:40]!r} (from {source}) must be a host name or an IP address")
        out["STACK_HOST"] = raw
    elif engine_host:
        out["STACK_HOST"] = engine_host
    return out


def _kinds_of(stack: Mapping[str, Any]) -> list[kinds.Kind]:
    found: list[kinds.Kind] = []
    for svc in stack["services"].values():
        kind = kinds.of(svc)
        if kind not in found:
            found.append(kind)
    return found


def _services_of(stack: Mapping[str, Any], derived: Mapping[str, str]) -> list[tuple[kinds.Service, kinds.Kind]]:
    host = derived.get("STACK_HOST") or client_host(derived["BIND_ADDRESS"])
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 STACK_HOST, in URL form
    return [
        (kinds.Service(name, var_name(name), host, int(derived[f"{var_name(name)}_PORT"])), kinds.of(svc))
        for name, svc in stack["services"].items()
    ]


def services(root: Path) -> dict[str, dict[str, Any]]:
    """stack.yml's services: {name: {kind, container_port, host_port, volumes}}."""
    result: dict[str, dict[str, Any]] = load_stack(root / "stack.yml")["services"]
    return result


def secret_keys(stack_services: Mapping[str, Mapping[str, Any]], stored: bool = False) -> list[str]:
    """The secret settings of the stack's kinds (POSTGRES_PASSWORD, ...); `stored`: only those a service
    keeps in its volume (a lost one locks the data), not those it takes afresh at every start."""
    return kinds.secret_keys((kinds.of(svc) for svc in stack_services.values()), stored)


def urls(env: Mapping[str, str]) -> dict[str, str]:
    """{VARIABLE: URL} of a copy as `make env` shows them (secrets masked)."""
    return {key: value for key, value in redact(env).items() if key.endswith("_URL")}


def redact(env: Mapping[str, str], stack_services: Mapping[str, Mapping[str, Any]] | None = None) -> Values:
    """Copy of `env` with secrets masked: the values of secret keys, whole, and the password of a URL that
    carries one. By key, not by substring: a setting that happens to equal a password (project `shop`, password
    `shop`) is shown as it is, as `check-ports` shows it."""
    out = dict(env)
    keys = secret_keys(services(Path(env["STACK_WORKTREE"])) if stack_services is None else stack_services)
    secrets = {out[key] for key in keys if out.get(key)}
    for key in keys:
        if out.get(key):
            out[key] = MASK
    if secrets:
        for key, value in out.items():
            if key.endswith("_URL"):
                out[key] = _mask_url_password(value, secrets)
    return out


def _mask_url_password(url: str, secrets: set[str]) -> str:
    """`scheme://user:<secret>@host...` with the password masked when it is one of `secrets` (also percent-encoded)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (sep and at and colon):
        return url
    from urllib.parse import unquote

    if password in secrets or unquote(password) in secrets:
        return f"{scheme}://{user}:{MASK}@{host}"
    return url


def copy_of(root: Path | None, settings: Settings, claim: bool = False) -> Copy:
    """The typed copy (model.Copy) of the worktree at `root` (None: STACK_ROOT or the cwd's), derived as `load` does."""
    from .model import Copy  # lazy: `make env` prints strings and never builds one

    values = load(root, settings, claim)
    return Copy.of(values, services(Path(values["STACK_WORKTREE"])))


def compose_environment(root: Path | None, settings: Settings, claim: bool = False) -> tuple[Copy, Values]:
    """(the copy, environment for `docker compose`): env files < process env < derived values; for an adopted
    project (stack.yml's `compose.variables`) the process environment and those variables only.

    One pass over stack.yml and the env files serves both.
    """
    from .model import Copy

    derived, layers = load_with_layers(root, settings, claim)
    own = compose_variables(load_stack(Path(derived["STACK_WORKTREE"]) / "stack.yml"))
    if own is not None:
        # an adopted project: compose interpolates the team's own names; it gets the process environment (as by hand)
        # and the adoption's variables only, never the helper's URLs and settings (they could shadow the team's)
        env = dict(settings.env)
        explicit = lookup("BIND_ADDRESS", settings, layers)[0] is not None
        for variable, source in own.items():
            if source == "BIND_ADDRESS" and not explicit:
                env.pop(variable, None)  # unset: each port keeps the address its compose file gives it
            elif source in derived:
                env[variable] = derived[source]
        return Copy.of(derived, services(Path(derived["STACK_WORKTREE"]))), env
    merged: Values = {}
    for _, values in layers:
        merged.update(values)
    merged.update(settings.env)
    merged.update(derived)
    return Copy.of(derived, services(Path(derived["STACK_WORKTREE"]))), merged


def format_env(env: Mapping[str, str]) -> str:
    """`KEY=VALUE` lines, as `make env` prints them."""
    return "".join(f"{k}={v}\n" for k, v in env.items())


def format_ports(env: Mapping[str, str], stack_services: Mapping[str, Mapping[str, Any]]) -> str:
    """The table `make ports` and `make up` print."""
    rows = [("SERVICE", "CONTAINER", "HOST", "URL")]
    stack = {"services": stack_services}
    for service, kind in _services_of(stack, env):
        url = env.get(kind.url_variable(service), "")
        rows.append((service.name, env[f"{service.key}_CONTAINER_PORT"], f"{env['BIND_ADDRESS']}:{service.port}", url))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"copy {env['COMPOSE_PROJECT_NAME']}  (PORT_OFFSET={env['PORT_OFFSET']}, ENV={env['STACK_ENV']})"]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    named = [(s.name, env[f"{s.key}_NAMED_URL"]) for s, _ in _services_of(stack, env) if f"{s.key}_NAMED_URL" in env]
    if named:
        width = max(len(n) for n, _ in named)
        lines.append(f"named URLs (the machine's proxy on 127.0.0.1:{env['NAMED_URLS_PORT']}; numbered ports work too):")
        lines += [f"  {n.ljust(width)}  {url}" for n, url in named]
    vols = [v for k, v in env.items() if k.endswith("_VOLUME")]
    if vols:
        lines.append("volumes: " + ", ".join(vols))
    return "\n".join(lines) + "\n"
