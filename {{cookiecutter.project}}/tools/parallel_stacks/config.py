"""Layer 2: read and validate the project's inputs, nothing derived yet.

`stack.yml` (services, ports, volumes, kinds), the env files (env/$ENV.env,
env/local.env) and how a setting is looked up (process environment, then
env/local.env, then env/$ENV.env). Where the project is: STACK_ROOT (the
Makefile sets it), else the nearest directory holding stack.yml.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .basics import StackError
from .settings import Settings

__all__ = [
    "DEFAULTS",
    "ENV_NAME",
    "NAME",
    "Layers",
    "client_host",
    "compose_files",
    "compose_profiles",
    "compose_variables",
    "data_dirs",
    "env_file_layers",
    "env_name_of",
    "load_stack",
    "lookup",
    "named_networks",
    "parse_bind_address",
    "project_root",
    "read_env_file",
]

SERVICE_KEYS = {"container_port", "host_port", "kind", "volumes"}
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
DEFAULT_TASK_STEP = 10
DEFAULTS = {"BIND_ADDRESS": "127.0.0.1"}
RESERVED_NAMES = {"named_urls"}  # NAMED_URLS_PORT is the named-URL proxy's port, not a service's
Layers = list[tuple[str, dict[str, str]]]


def project_root(settings: Settings, start: Path | None = None) -> Path:
    """STACK_ROOT, else the nearest directory at or above `start` (the cwd) holding stack.yml."""
    from .root import find

    found = find(settings, None if start is None else str(start))
    if found is None:
        raise StackError(f"no stack.yml in {start or Path.cwd()} or above; run this from the project (or set STACK_ROOT)")
    return Path(found)


# ---------------------------------------------------------------- stack.yml
_STACK_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def load_stack(path: Path) -> dict[str, Any]:
    """Read and validate stack.yml; return {'project': str, 'services': {...}}.

    Parsed once per process and file version (helpers ask more than once).
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror}") from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _STACK_CACHE:
        _STACK_CACHE[key] = _parse_stack(path)
    return _STACK_CACHE[key]


def _parse_stack(path: Path) -> dict[str, Any]:
    import yaml  # lazy: keeps `make` targets close to bare interpreter start-up

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise StackError(f"{path.name}: byte {exc.start} is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_unique_key_loader(yaml))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or ""
        if problem.startswith("duplicate key"):
            raise StackError(f"{path.name}{where}: {problem}") from None
        raise StackError(f"{path.name}{where} is not valid YAML") from None
    if not isinstance(data, dict):
        raise StackError(f"{path.name} must be a mapping with 'project' and 'services'")
    unknown = set(data) - {"project", "services", "task_step", "volumes", "compose"}
    if unknown:
        raise StackError(f"{path.name}: unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
    project = data.get("project")
    if not isinstance(project, str) or not NAME.match(project):
        raise StackError(f"{path.name}: project {project!r} must be a lowercase slug starting with a letter")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise StackError(f"{path.name}: 'services' must be a non-empty mapping")
    step = data.get("task_step", DEFAULT_TASK_STEP)
    if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= 1000:
        raise StackError(f"{path.name}: task_step {step!r} must be an integer in 1-1000")
    seen_ports: dict[int, str] = {}
    seen_volumes: dict[str, str] = {}
    seen_kinds: dict[str, str] = {}
    for name, svc in services.items():
        _check_service(path.name, name, svc, seen_ports, seen_volumes, seen_kinds)
    # named volumes of services that publish no port (a database only its app reaches): per copy all the same
    _check_volumes(path.name, data.get("volumes", []), "(top level)", seen_volumes)
    if "compose" in data:
        _check_compose(path.name, data["compose"])
    return data


VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_compose(where: str, compose: Any) -> None:
    """`compose:` (written by `make adopt`): the repository's compose files as compose finds them, its profiles,
    the variables compose receives from a copy (name -> derived value) and the per-copy data directories."""
    if not isinstance(compose, dict):
        raise StackError(f"{where}: compose must be a mapping (files, profiles, variables, data_dirs)")
    unknown = set(compose) - {"files", "profiles", "variables", "data_dirs", "networks"}
    if unknown:
        raise StackError(f"{where}: compose: unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    files = compose.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise StackError(f"{where}: compose.files must be a non-empty list of file names")
    for name in files:
        if name.startswith("/") or ".." in Path(name).parts:
            raise StackError(f"{where}: compose file {name!r} must be a path inside the repository")
    profiles = compose.get("profiles", [])
    if not isinstance(profiles, list) or not all(isinstance(p, str) and p for p in profiles):
        raise StackError(f"{where}: compose.profiles must be a list of profile names")
    for key in ("variables", "data_dirs", "networks"):
        table = compose.get(key, {})
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and VARIABLE.match(k) and isinstance(v, str) for k, v in table.items()
        ):
            raise StackError(f"{where}: compose.{key} must map variable names to strings")
    for var, rel in compose.get("data_dirs", {}).items():
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            raise StackError(f"{where}: compose.data_dirs: {var} {rel!r} must be a path inside the repository")


def compose_files(stack: Mapping[str, Any], root: Path) -> list[Path]:
    """The compose files of the project, in order: stack.yml's `compose.files`, else compose.yaml (a baked project)."""
    names = (stack.get("compose") or {}).get("files") or ["compose.yaml"]
    return [root / name for name in names]


def compose_profiles(stack: Mapping[str, Any]) -> list[str]:
    """The compose profiles stack.yml records for an adopted project (COMPOSE_PROFILES at adoption); none for a baked one."""
    profiles: list[str] = (stack.get("compose") or {}).get("profiles") or []
    return profiles


def compose_variables(stack: Mapping[str, Any]) -> dict[str, str] | None:
    """{variable compose interpolates: derived value it carries} of an adopted project; None for a baked one
    (compose then gets every derived value, as it always did)."""
    compose = stack.get("compose")
    if not compose:
        return None
    return dict(compose.get("variables") or {})


def named_networks(stack: Mapping[str, Any]) -> dict[str, str]:
    """{derived variable: network} of the networks the compose files give a fixed name (per copy: <copy>_<network>)."""
    return dict((stack.get("compose") or {}).get("networks") or {})


def data_dirs(stack: Mapping[str, Any]) -> dict[str, str]:
    """{derived variable: path relative to the repository} of the bind-mounted data directories made per copy."""
    return dict((stack.get("compose") or {}).get("data_dirs") or {})


def _check_volumes(where: str, volumes: Any, owner: str, seen_volumes: dict[str, str]) -> None:
    """A list of named volumes, each declared once in the stack."""
    if not isinstance(volumes, list):
        raise StackError(f"{where}: volumes must be a list of names")
    for vol in volumes:
        if not isinstance(vol, str) or not NAME.match(vol):
            raise StackError(f"{where}: volume name {vol!r} must be lowercase letters, digits, '-' or '_'")
        if vol in seen_volumes:
            raise StackError(f"{where}: volume {vol!r} is also declared by service {seen_volumes[vol]!r}")
        seen_volumes[vol] = owner


def _unique_key_loader(yaml: Any) -> Any:
    """yaml.SafeLoader that refuses a key given twice (PyYAML keeps the last silently)."""

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, (str, int, float, bool, type(None))):
                    continue  # SafeLoader itself refuses unhashable keys
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


def _check_service(
    fname: str, name: Any, svc: Any, seen_ports: dict[int, str], seen_volumes: dict[str, str], seen_kinds: dict[str, str]
) -> None:
    where = f"{fname}: service {name!r}"
    if not isinstance(name, str) or not NAME.match(name):
        raise StackError(f"{where}: name must be lowercase letters, digits, '-' or '_'")
    if name.replace("-", "_") in RESERVED_NAMES:
        raise StackError(f"{where}: the name is taken by a setting of the stack's own ({name.upper()}_PORT); rename the service")
    if not isinstance(svc, dict):
        raise StackError(f"{where} must be a mapping")
    unknown = set(svc) - SERVICE_KEYS
    if unknown:
        raise StackError(f"{where}: unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    for key in ("container_port", "host_port"):
        value = svc.get(key)
        if value is None:
            raise StackError(f"{where}: missing {key}")
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            raise StackError(f"{where}: {key} {value!r} must be an integer in 1-65535")
    if svc["host_port"] in seen_ports:
        raise StackError(f"{where}: host_port {svc['host_port']} is also used by service {seen_ports[svc['host_port']]!r}")
    seen_ports[svc["host_port"]] = name
    from . import kinds

    kinds.check_declared(fname, name, svc.get("kind", kinds.DEFAULT), seen_kinds)
    _check_volumes(where, svc.get("volumes", []), name, seen_volumes)


# ---------------------------------------------------------------- env files
def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file with python-dotenv, naming file and line on a bad line."""
    from dotenv.parser import parse_stream  # lazy

    values: dict[str, str] = {}
    try:
        with path.open(encoding="utf-8") as handle:
            for binding in parse_stream(handle):
                if binding.error:
                    line = binding.original.line
                    raise StackError(f"{path}: line {line} is not KEY=VALUE: {binding.original.string.strip()!r}")
                if binding.key is not None:
                    values[binding.key] = binding.value if binding.value is not None else ""
    except OSError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise StackError(f"{path}: byte {exc.start} is not UTF-8 text; is this an env file?") from None
    return values


def env_file_layers(root: Path, env_name: str) -> Layers:
    """[(source, values)] lowest precedence first: env/$ENV.env, env/local.env."""
    layers: Layers = []
    main = root / "env" / f"{env_name}.env"
    if main.exists():
        layers.append((str(main.relative_to(root)), read_env_file(main)))
    elif env_name != "dev":
        raise StackError(f"ENV={env_name!r} but {main.relative_to(root)} does not exist")
    local = root / "env" / "local.env"
    if local.exists():
        layers.append((str(local.relative_to(root)), read_env_file(local)))
    return layers


def lookup(key: str, settings: Settings, layers: Layers) -> tuple[str | None, str]:
    """(value, source) of a setting by precedence; (None, 'default') if unset."""
    value = settings.layer(key)
    if value is not None:
        return value, "environment"
    for source, values in reversed(layers):
        if key in values:
            return values[key], source
    return None, "default"


def env_name_of(settings: Settings) -> str:
    """STACK_ENV, else ENV (unless it is the POSIX shell's startup-file path), else dev."""
    name = settings.get("STACK_ENV") or ""
    if not name:
        name = settings.get("ENV") or ""
        if "/" in name:
            name = ""  # sh(1)'s ENV=~/.shrc, not ours
    name = name or "dev"
    if not ENV_NAME.match(name):
        raise StackError(f"ENV={name!r} must be a lowercase name like dev, test or ci (letters, digits, '-')")
    return name


def parse_bind_address(raw: str, source: str) -> str:
    """BIND_ADDRESS as an IP address in its normal form; StackError naming `source` otherwise."""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise StackError(f"BIND_ADDRESS={raw!r} (from {source}) is not an IP address, e.g. 127.0.0.1") from None


def parse_proxy_port(raw: str | None, source: str) -> str:
    """NAMED_URLS_PORT: the named-URL proxy's port (default 7355), or `off` for no named URLs."""
    from .basics import PORT_MAX, PORT_MIN
    from .formula import NAMED_URLS_PORT_DEFAULT

    raw = (raw or "").strip().lower()
    if not raw:
        return str(NAMED_URLS_PORT_DEFAULT)
    if raw in ("off", "0", "no", "false"):
        return "off"
    if raw.isdigit() and PORT_MIN <= int(raw) <= PORT_MAX:
        return str(int(raw))
    raise StackError(f"NAMED_URLS_PORT={raw!r} (from {source}) must be a port between {PORT_MIN} and {PORT_MAX}, or off")


def client_host(bind: str) -> str:
    """Address a client on this machine uses to reach a port published on `bind`."""
    addr = ipaddress.ip_address(bind)
    if addr.is_unspecified:
        return "127.0.0.1" if addr.version == 4 else "[::1]"
    return bind if addr.version == 4 else f"[{bind}]"
