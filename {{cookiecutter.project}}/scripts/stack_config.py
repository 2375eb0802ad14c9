#!/usr/bin/env python3
"""Derive this copy's ports, names and URLs from stack.yml and PORT_OFFSET.

The one place where a copy's values are computed. Everything else (the
Makefile, compose, the other helpers, the tests) reads what this derives.

Precedence of every setting, highest first: the process environment,
env/local.env (gitignored, per machine), env/$ENV.env (committed), built-in
defaults. The offset comes from, in order: PORT_OFFSET; TASK_ID (or
ZENFLOW_TASK_ID); a CI build number (CI_BUILD_NUMBER, BUILD_NUMBER,
CI_JOB_ID, GITHUB_RUN_ID); else 0. A derived offset never moves silently.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from pathlib import Path

from basics import PORT_MAX, PORT_MIN, StackError, var_name  # noqa: F401  (re-exported: helpers import them from here)

ROOT = Path(__file__).resolve().parent.parent
SERVICE_KEYS = {"container_port", "host_port", "kind", "volumes"}
KINDS = {"postgres", "redis", "http"}
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
COMPOSE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DIGITS = re.compile(r"^[0-9]+$")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
SECRET_KEYS = ("POSTGRES_PASSWORD",)
TASK_VARS = ("TASK_ID", "ZENFLOW_TASK_ID")
CI_NUMBER_VARS = ("CI_BUILD_NUMBER", "BUILD_NUMBER", "CI_JOB_ID", "GITHUB_RUN_ID")
TASK_SUFFIX = re.compile(r"(?:^|[-_.])([0-9]+)$")
DEFAULT_TASK_STEP = 10
DEFAULTS = {
    "BIND_ADDRESS": "127.0.0.1",
    "POSTGRES_USER": "app",
}



# ---------------------------------------------------------------- stack.yml
_STACK_CACHE: dict = {}


def load_stack(path: Path) -> dict:
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


def _parse_stack(path: Path) -> dict:
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
    unknown = set(data) - {"project", "services", "task_step"}
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
    for name, svc in services.items():
        _check_service(path.name, name, svc, seen_ports, seen_volumes)
    return data


def _unique_key_loader(yaml):
    """yaml.SafeLoader that refuses a key given twice (PyYAML keeps the last silently)."""

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, (str, int, float, bool, type(None))):
                    continue  # SafeLoader itself refuses unhashable keys
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


def _check_service(fname, name, svc, seen_ports, seen_volumes):
    where = f"{fname}: service {name!r}"
    if not isinstance(name, str) or not NAME.match(name):
        raise StackError(f"{where}: name must be lowercase letters, digits, '-' or '_'")
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
        raise StackError(
            f"{where}: host_port {svc['host_port']} is also used by service {seen_ports[svc['host_port']]!r}"
        )
    seen_ports[svc["host_port"]] = name
    if svc.get("kind", "http") not in KINDS:
        raise StackError(f"{where}: kind {svc.get('kind')!r} must be one of {', '.join(sorted(KINDS))}")
    volumes = svc.get("volumes", [])
    if not isinstance(volumes, list):
        raise StackError(f"{where}: volumes must be a list of names")
    for vol in volumes:
        if not isinstance(vol, str) or not NAME.match(vol):
            raise StackError(f"{where}: volume name {vol!r} must be lowercase letters, digits, '-' or '_'")
        if vol in seen_volumes:
            raise StackError(f"{where}: volume {vol!r} is also declared by service {seen_volumes[vol]!r}")
        seen_volumes[vol] = name


# ---------------------------------------------------------------- env files
def read_env_file(path: Path) -> dict:
    """Parse a dotenv file with python-dotenv, naming file and line on a bad line."""
    from dotenv.parser import parse_stream  # lazy

    values = {}
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


def env_file_layers(root: Path, env_name: str) -> list[tuple[str, dict]]:
    """[(source, values)] lowest precedence first: env/$ENV.env, env/local.env."""
    layers = []
    main = root / "env" / f"{env_name}.env"
    if main.exists():
        layers.append((str(main.relative_to(root)), read_env_file(main)))
    elif env_name != "dev":
        raise StackError(f"ENV={env_name!r} but {main.relative_to(root)} does not exist")
    local = root / "env" / "local.env"
    if local.exists():
        layers.append((str(local.relative_to(root)), read_env_file(local)))
    return layers


def lookup(key: str, environ, layers) -> tuple[str | None, str]:
    """(value, source) of a setting by precedence; (None, 'default') if unset."""
    if key in environ:
        return environ[key], "environment"
    for source, values in reversed(layers):
        if key in values:
            return values[key], source
    return None, "default"


# ---------------------------------------------------------------- offsets
def parse_offset(raw: str, source: str, stack: dict) -> int:
    bases = [svc["host_port"] for svc in stack["services"].values()]
    low = max(0, PORT_MIN - min(bases))
    high = PORT_MAX - max(bases)
    allowed = f"allowed: integers {low}-{high} or auto, so every host port stays within {PORT_MIN}-{PORT_MAX}"
    if not DIGITS.match(raw):
        raise StackError(f"PORT_OFFSET={short(raw)} (from {source}) is not a non-negative integer; {allowed}")
    offset = int(raw) if len(raw) <= 6 else high + 1
    if not low <= offset <= high:
        shown = raw if len(raw) <= 40 else f"{raw[:40]}... ({len(raw)} characters)"
        raise StackError(f"PORT_OFFSET={shown} (from {source}) is out of range; {allowed}")
    return offset


MAX_NUMBER_DIGITS = 18


def short(raw: str, limit: int = 40) -> str:
    """`raw` for an error message: repr, cut to `limit` characters."""
    return repr(raw) if len(raw) <= limit else repr(raw[:limit]) + f"... ({len(raw)} characters)"


def task_number(task_id: str, source: str, var: str = "TASK_ID") -> int:
    """Seed 000: the id's numeric suffix n gives (n % 9000) + 1000."""
    match = TASK_SUFFIX.search(task_id.strip())
    if not match:
        raise StackError(
            f"{var}={short(task_id)} (from {source}) has no numeric suffix; use an id like my-task-1234, or set PORT_OFFSET"
        )
    digits = match.group(1)
    if len(digits) > MAX_NUMBER_DIGITS:
        raise StackError(f"{var}={short(task_id)} (from {source}): its numeric suffix has {len(digits)} digits, at most {MAX_NUMBER_DIGITS}")
    return int(digits) % 9000 + 1000


def offset_for_number(number: int, stack: dict) -> int:
    """A task or build number's offset: (number % 1000) * task_step."""
    return (number % 1000) * stack.get("task_step", DEFAULT_TASK_STEP)


def resolve_offset(environ, layers, stack: dict, root: Path, env_name: str, bind: str) -> tuple[int, str]:
    """(offset, where it came from) by the documented precedence."""
    raw, source = lookup("PORT_OFFSET", environ, layers)
    if raw is not None and raw.strip().lower() == "auto":
        import registry  # lazy: only auto copies pay for the registry

        return parse_offset(str(registry.claim(root, env_name, stack, bind, environ)), "PORT_OFFSET=auto", stack), "auto"
    if raw is not None:
        return parse_offset(raw, source, stack), source
    if (root / ".env.dynamic").exists():
        import registry

        remembered = registry.read_dynamic(root, env_name)
        if remembered is not None:
            return parse_offset(str(remembered), ".env.dynamic", stack), ".env.dynamic"
    for var in TASK_VARS:
        task, tsource = lookup(var, environ, layers)
        if task is not None:
            preferred = offset_for_number(task_number(task, tsource, var), stack)
            return _derived_slot(root, env_name, stack, bind, environ, preferred, f"{var}={task.strip()}"), var
    for var in CI_NUMBER_VARS:
        raw = environ.get(var)
        if raw:
            if not DIGITS.match(raw) or len(raw) > MAX_NUMBER_DIGITS:
                raise StackError(f"{var}={short(raw)} is not a build number (up to {MAX_NUMBER_DIGITS} digits); set PORT_OFFSET explicitly")
            preferred = offset_for_number(int(raw), stack)
            return _derived_slot(root, env_name, stack, bind, environ, preferred, f"{var}={raw}"), var
    fallback, fsource = lookup("DEFAULT_PORT_OFFSET", environ, layers)
    if fallback is not None and fallback.strip().lower() == "auto":
        import registry

        return parse_offset(str(registry.claim(root, env_name, stack, bind, environ)), "DEFAULT_PORT_OFFSET=auto", stack), "auto"
    if fallback is not None:
        return parse_offset(fallback, f"DEFAULT_PORT_OFFSET in {fsource}", stack), "default"
    return 0, "default"


def _derived_slot(root: Path, env_name: str, stack: dict, bind: str, environ, preferred: int, label: str) -> int:
    """A task id's or build number's slot: seed 000's offset if free, else the next free one (registry)."""
    import registry  # lazy: only task and CI copies pay for the registry

    return parse_offset(str(registry.claim_derived(root, env_name, stack, bind, environ, preferred, label)), label, stack)


def env_name_of(environ) -> str:
    """STACK_ENV, else ENV (unless it is the POSIX shell's startup-file path), else dev."""
    name = environ.get("STACK_ENV") or ""
    if not name:
        name = environ.get("ENV") or ""
        if "/" in name:
            name = ""  # sh(1)'s ENV=~/.shrc, not ours
    name = name or "dev"
    if not ENV_NAME.match(name):
        raise StackError(f"ENV={name!r} must be a lowercase name like dev, test or ci (letters, digits, '-')")
    return name


def parse_bind_address(raw: str, source: str) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise StackError(f"BIND_ADDRESS={raw!r} (from {source}) is not an IP address, e.g. 127.0.0.1") from None


def client_host(bind: str) -> str:
    """Address a client on this machine uses to reach a port published on `bind`."""
    addr = ipaddress.ip_address(bind)
    if addr.is_unspecified:
        return "127.0.0.1" if addr.version == 4 else "[::1]"
    return bind if addr.version == 4 else f"[{bind}]"


# ---------------------------------------------------------------- derivation
def load(root: Path = ROOT, environ=None) -> dict:
    """Everything a copy needs, as an ordered dict of strings (see load_with_layers)."""
    return load_with_layers(root, environ)[0]


def load_with_layers(root: Path = ROOT, environ=None) -> tuple[dict, list]:
    """(values, env file layers): everything a copy needs, and the files it came from.

    Keys: PORT_OFFSET, STACK_ENV, STACK_PROJECT, STACK_WORKTREE,
    COMPOSE_PROJECT_NAME, BIND_ADDRESS, <SERVICE>_PORT,
    <SERVICE>_CONTAINER_PORT, <VOLUME>_VOLUME, settings and URLs.
    """
    environ = os.environ if environ is None else environ
    env_name = env_name_of(environ)
    stack = load_stack(root / "stack.yml")
    layers = env_file_layers(root, env_name)
    bind_raw, bind_source = lookup("BIND_ADDRESS", environ, layers)
    bind = parse_bind_address(DEFAULTS["BIND_ADDRESS"] if bind_raw is None else bind_raw, bind_source)
    offset, offset_source = resolve_offset(environ, layers, stack, root, env_name, bind)

    project = stack["project"]
    compose_name = compose_project_name(project, env_name, offset)

    out = {
        "PORT_OFFSET": str(offset),
        "PORT_OFFSET_SOURCE": offset_source,
        "STACK_ENV": env_name,
        "STACK_PROJECT": project,
        "STACK_WORKTREE": str(root.resolve()),
        "COMPOSE_PROJECT_NAME": compose_name,
        "BIND_ADDRESS": bind,
    }
    for name, svc in stack["services"].items():
        key = var_name(name)
        out[f"{key}_PORT"] = str(svc["host_port"] + offset)
        out[f"{key}_CONTAINER_PORT"] = str(svc["container_port"])
    for name, svc in stack["services"].items():
        for vol in svc.get("volumes", []):
            infix = "" if env_name == "dev" else f"{env_name}_"
            out[f"{var_name(vol)}_VOLUME"] = f"{project}_{infix}{vol}_{offset}"

    user = lookup("POSTGRES_USER", environ, layers)[0] or DEFAULTS["POSTGRES_USER"]
    database = lookup("POSTGRES_DB", environ, layers)[0] or project.replace("-", "_")
    password = lookup("POSTGRES_PASSWORD", environ, layers)[0] or ""
    out.update(POSTGRES_USER=user, POSTGRES_DB=database, POSTGRES_PASSWORD=password)

    host = client_host(bind)
    for name, svc in stack["services"].items():
        port = out[f"{var_name(name)}_PORT"]
        kind = svc.get("kind", "http")
        if kind == "postgres":
            out["DATABASE_URL"] = f"postgresql://{user}:{password}@{host}:{port}/{database}"
        elif kind == "redis":
            out["REDIS_URL"] = f"redis://{host}:{port}/0"
        else:
            out[f"{var_name(name)}_URL"] = f"http://{host}:{port}"
    return out, layers


def compose_project_name(project: str, env_name: str, offset: int) -> str:
    """`<project>-<offset>`, or `<project>-<env>-<offset>` outside dev."""
    name = f"{project}-{offset}" if env_name == "dev" else f"{project}-{env_name}-{offset}"
    if not COMPOSE_NAME.match(name):
        raise StackError(f"derived compose project name {name!r} is invalid")
    return name


def services(root: Path = ROOT) -> dict:
    return load_stack(root / "stack.yml")["services"]


def redact(values: dict) -> dict:
    """Copy of `values` with secrets (and URLs carrying them) masked."""
    out = dict(values)
    for key in SECRET_KEYS:
        secret = out.get(key)
        if not secret:
            continue
        for k, v in out.items():
            if k == key:
                out[k] = "********"
            elif secret in v:
                out[k] = v.replace(secret, "********")
    return out


def compose_environment(root: Path = ROOT, environ=None) -> tuple[dict, dict]:
    """(values, environment for `docker compose`): env files < process env < derived values.

    One pass over stack.yml and the env files serves both.
    """
    environ = os.environ if environ is None else environ
    derived, layers = load_with_layers(root, environ)
    merged = {}
    for _, values in layers:
        merged.update(values)
    merged.update(environ)
    merged.update(derived)
    return derived, merged


# ---------------------------------------------------------------- secrets
def ensure_local_env(root: Path = ROOT) -> Path:
    """Create env/local.env (mode 600) with a fresh POSTGRES_PASSWORD if it has none."""
    import secrets

    path = root / "env" / "local.env"
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if re.search(r"^\s*POSTGRES_PASSWORD\s*=", existing, re.M):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "" if existing else (
        "# Per-machine settings and secrets for this worktree. Gitignored; never commit.\n"
        "# Set PORT_OFFSET here to give this worktree its own ports.\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        if existing and not existing.endswith("\n"):
            handle.write("\n")
        handle.write(f"{header}POSTGRES_PASSWORD={secrets.token_urlsafe(24)}\n")
    os.chmod(path, 0o600)
    return path


# ---------------------------------------------------------------- output
def format_env(values: dict) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def format_ports(values: dict, stack_services: dict) -> str:
    rows = [("SERVICE", "CONTAINER", "HOST", "URL")]
    for name, svc in stack_services.items():
        key = var_name(name)
        kind = svc.get("kind", "http")
        url = {"postgres": values.get("DATABASE_URL"), "redis": values.get("REDIS_URL")}.get(
            kind, values.get(f"{key}_URL")
        )
        rows.append((name, values[f"{key}_CONTAINER_PORT"], f"{values['BIND_ADDRESS']}:{values[f'{key}_PORT']}", url))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"copy {values['COMPOSE_PROJECT_NAME']}  (PORT_OFFSET={values['PORT_OFFSET']}, ENV={values['STACK_ENV']})"
    ]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    vols = [f"{v}" for k, v in values.items() if k.endswith("_VOLUME")]
    if vols:
        lines.append("volumes: " + ", ".join(vols))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="stack_config.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["env", "ports"], help="env: KEY=VALUE lines; ports: a readable table")
    parser.add_argument(
        "--show-secrets",
        action="store_true",
        default=os.environ.get("SHOW_SECRETS") == "1",
        help="print secrets unmasked (default: masked; also SHOW_SECRETS=1)",
    )
    args = parser.parse_args(argv)
    try:
        values = load()
        shown = values if args.show_secrets else redact(values)
        if args.command == "env":
            sys.stdout.write(format_env(shown))
        else:
            sys.stdout.write(format_ports(shown, services()))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
