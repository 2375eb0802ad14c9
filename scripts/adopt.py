"""`make adopt TARGET=path/to/repo`: give an existing compose project parallel copies.

Reads the repository's compose file (and its override file), writes
`stack.yml` from it, rewrites the compose file so every published port is
`${BIND_ADDRESS:-127.0.0.1}:${<SERVICE>_PORT:-<its old port>}:<container port>`
and every named volume `${<VOLUME>_VOLUME:-<its old name>}` with the
worktree label `make nuke` checks, drops `container_name` (keeping the name
as a network alias), and installs the helper package (`parallel-stacks/`)
and its make targets (`parallel-stacks.mk`, included from the Makefile; one
is created if there is none). Run by hand (`docker compose up`), the
project behaves as before: the same ports, the same volumes.

Shows a diff of every file it changes and keeps the originals (git, or
`<file>.orig`). What it cannot convert (host networking, port ranges, fixed
subnets, `extends` from a file it cannot rewrite, ...) is refused in one
line and nothing is written. A second run changes nothing.
"""

from __future__ import annotations

import argparse
import difflib
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent.parent
PROJECT_TEMPLATE = TEMPLATE / ("{" * 2 + "cookiecutter.project" + "}" * 2)  # spelled apart: no template tag in this file
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILES = ("compose.override.yaml", "compose.override.yml", "docker-compose.override.yaml", "docker-compose.override.yml")
HELPERS_DIR = "parallel-stacks"
MK_FILE = "parallel-stacks.mk"
INCLUDE_LINE = f"include {MK_FILE}"
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
OURS = re.compile(r"^\$\{BIND_ADDRESS:-[^}]*\}:\$\{([A-Z0-9_]+)_PORT:-(\d+)\}:(\d+)(/[a-z]+)?$")
INTERPOLATED = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}$")
KINDS = {  # image (without registry and tag) -> kind; anything else that publishes a port is http
    "postgres": "postgres",
    "postgis/postgis": "postgres",
    "timescale/timescaledb": "postgres",
    "redis": "redis",
    "redis/redis-stack": "redis",
    "redis/redis-stack-server": "redis",
    "redislabs/redismod": "redis",
    "bitnami/redis": "redis",
    "eclipse-mosquitto": "mqtt",
}
# what the make targets run (`make stack-<name>` always; `make <name>` too where the repository's Makefile has no such target)
TARGETS = [
    ("up", "up", "Start this copy (build, wait until healthy) and print its URLs"),
    ("down", "down", "Stop this copy; keeps its data volumes"),
    ("ps", "ps", "Show this copy's containers"),
    ("logs", "logs -f $(ARGS)", "Follow this copy's logs (ARGS=service)"),
    ("nuke", "nuke", "Remove this copy's containers, networks, volumes and images (FORCE=1, DRY_RUN=1)"),
    ("env", "env", "Print every derived value (SHOW_SECRETS=1 unmasks)"),
    ("ports", "ports", "Print this copy's ports and URLs"),
    ("check-ports", "check-ports", "Check that every host port of this copy is free"),
    ("release", "release", "Free this worktree's PORT_OFFSET=auto slot"),
    ("slots", "slots", "List every copy on this machine (FORMAT=json)"),
    ("gc", "gc", "List stale claims and copies of vanished worktrees; FORCE=1 removes them"),
    ("doctor", "doctor", "Check engine, compose, ports and env files"),
    ("worktree", "worktree add", "New git worktree NAME with its own copy (UP=1 starts it)"),
    ("worktree-remove", "worktree remove", "Nuke worktree NAME's copy and remove the worktree"),
]


class Refused(Exception):
    """A compose file adopt cannot convert: one line, nothing written."""


@dataclass
class Published:
    stack_name: str  # the stack.yml service (compose service, or <service>-<container port>)
    host: int
    container: int


@dataclass
class Plan:
    project: str
    stack: dict[str, Any]
    files: dict[Path, str]  # path -> new text (only files whose text changes or is new)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- YAML
def yaml_rt() -> Any:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def load_text(text: str, name: str) -> Any:
    from ruamel.yaml import YAMLError

    try:
        data = yaml_rt().load(text)
    except YAMLError as exc:
        raise Refused(f"{name} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise Refused(f"{name} has no `services:` mapping")
    return data


def dump(data: Any) -> str:
    out = io.StringIO()
    yaml_rt().dump(data, out)
    return out.getvalue()


# ---------------------------------------------------------------- ports
def dotenv(root: Path) -> dict[str, str]:
    """The repository's `.env` (compose reads it for interpolation)."""
    from dotenv import dotenv_values

    path = root / ".env"
    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}


def resolve_number(raw: str, where: str, env: Mapping[str, str]) -> int:
    """A host or container port as written: `8080`, `${WEB_PORT:-8080}`, `${WEB_PORT}` (from .env)."""
    raw = raw.strip()
    match = INTERPOLATED.match(raw)
    if match:
        var, default = match.groups()
        value = env.get(var, default)
        if value is None:
            raise Refused(f"{where}: port {raw} has no default and .env does not set {var}; give it a default")
        raw = value.strip()
    if "-" in raw:
        raise Refused(f"{where}: port range {raw} cannot be offset per copy; list the ports one by one")
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise Refused(f"{where}: port {raw!r} is not a port number")
    return int(raw)


def split_short(item: str) -> tuple[str | None, str | None, str, str]:
    """`[ip:][host:]container[/proto]` -> (ip, host, container, proto suffix)."""
    spec, slash, proto = item.partition("/")
    suffix = f"/{proto}" if slash else ""
    if spec.startswith("["):  # [::1]:8080:80
        ip, _, rest = spec[1:].partition("]:")
        host, _, container = rest.rpartition(":")
        return ip, host or None, container, suffix
    parts = re.split(r":(?![^{]*\})", spec)  # colons outside ${...}
    if len(parts) == 1:
        return None, None, parts[0], suffix
    if len(parts) == 2:
        return None, parts[0], parts[1], suffix
    return ":".join(parts[:-2]), parts[-2], parts[-1], suffix


def published_port(item: Any, where: str, env: Mapping[str, str]) -> tuple[int, int, str] | None:
    """(host port, container port, proto suffix) of one `ports:` entry; None when it publishes on a random port."""
    if isinstance(item, dict):
        if item.get("published") in (None, ""):
            return None
        host = resolve_number(str(item["published"]), where, env)
        container = resolve_number(str(item.get("target", "")), where, env)
        proto = str(item.get("protocol", "tcp"))
        return host, container, "" if proto == "tcp" else f"/{proto}"
    text = str(item)
    match = OURS.match(text)
    if match:  # already adopted
        return int(match.group(2)), int(match.group(3)), match.group(4) or ""
    _ip, host, container, suffix = split_short(text)
    if host is None or host == "":
        if "-" in container:
            raise Refused(f"{where}: port range {container} cannot be offset per copy; list the ports one by one")
        return None
    return resolve_number(host, where, env), resolve_number(container, where, env), suffix


def ref(variable: str, default: str) -> str:
    """`${VARIABLE:-default}`, as compose interpolates it."""
    return "${" + variable + ":-" + default + "}"


def var_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def stack_name(service: str) -> str:
    name = service.lower().replace(".", "-")
    if not NAME.match(name):
        raise Refused(f"service {service!r}: its name cannot be a stack.yml name (lowercase letters, digits, '-', '_', starting with a letter)")
    return name


def kind_of(image: Any) -> str:
    if not isinstance(image, str) or not image:
        return "http"
    ref = image.split("@")[0]
    name = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # a registry host
    if parts[:1] == ["library"]:
        parts = parts[1:]
    return KINDS.get("/".join(parts), "http")


# ---------------------------------------------------------------- the conversion
def check_service(name: str, svc: Any, fname: str, root: Path) -> None:
    where = f"{fname}: service {name}"
    if not isinstance(svc, dict):
        raise Refused(f"{where} is not a mapping")
    if svc.get("network_mode") == "host":
        raise Refused(f"{where} uses network_mode: host; its ports are the host's and cannot be offset per copy")
    networks = svc.get("networks")
    if isinstance(networks, dict):
        for net, conf in networks.items():
            if isinstance(conf, dict) and (conf.get("ipv4_address") or conf.get("ipv6_address")):
                raise Refused(f"{where} has a fixed address on network {net}; two copies cannot both have it")
    extends = svc.get("extends")
    if isinstance(extends, dict) and extends.get("file"):
        other = root / str(extends["file"])
        if not other.is_file():
            raise Refused(f"{where} extends {extends['file']}, which does not exist")
        base = load_text(other.read_text(encoding="utf-8"), str(extends["file"]))["services"].get(extends.get("service"))
        if not isinstance(base, dict):
            raise Refused(f"{where} extends service {extends.get('service')} of {extends['file']}, which it does not define")
        if base.get("ports") or base.get("container_name") or base.get("network_mode") == "host":
            raise Refused(
                f"{where} extends {extends['file']}, whose ports or container_name adopt cannot rewrite; adopt that file's project first"
            )


def check_top(data: Mapping[str, Any], fname: str) -> None:
    for net, conf in (data.get("networks") or {}).items():
        if not isinstance(conf, dict) or conf.get("external"):
            continue
        configs = (conf.get("ipam") or {}).get("config") or []
        if any(isinstance(c, dict) and c.get("subnet") for c in configs):
            raise Refused(f"{fname}: network {net} has a fixed subnet; a second copy cannot have the same one")
        if conf.get("name"):
            raise Refused(f"{fname}: network {net} has a fixed name ({conf['name']}); every copy would share it")


def convert(
    data: Any, fname: str, root: Path, env: Mapping[str, str], project: str, taken: dict[int, str], seen_ports: dict[str, dict[tuple[int, int], str]]
) -> tuple[list[Published], dict[str, str]]:
    """Rewrite `data` in place; return its published ports and {volume key: compose service using it}.

    `project`: the name compose gave the project when run by hand (volume fallbacks); `seen_ports`: per
    service, the ports already given a variable (in an earlier file: the override adds to the main file)."""
    check_top(data, fname)
    published: list[Published] = []
    mounts: dict[str, str] = {}
    volumes = data.get("volumes") or {}
    for service, svc in data["services"].items():
        check_service(service, svc, fname, root)
        where = f"{fname}: service {service}"
        cname = svc.pop("container_name", None)
        if cname and str(cname) != service and not svc.get("network_mode"):
            add_alias(svc, str(cname))  # (with network_mode the service has no networks of its own to alias on)
        seen = seen_ports.setdefault(service, {})
        ports = svc.get("ports") or []
        for index, item in enumerate(ports):
            found = published_port(item, where, env)
            if found is None:
                continue
            host, container, suffix = found
            name = seen.get((host, container))
            if name is None:
                name = stack_name(service) if not seen else f"{stack_name(service)}-{container}"
                if host in taken and taken[host] != name:
                    raise Refused(f"{where}: host port {host} is also published by {taken[host]}")
                taken[host] = name
                seen[(host, container)] = name
                published.append(Published(name, host, container))
            ports[index] = ref("BIND_ADDRESS", "127.0.0.1") + ":" + ref(f"{var_name(name)}_PORT", str(host)) + f":{container}{suffix}"
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else (mount.get("source") if mount.get("type", "volume") == "volume" else None)
            if source and source in volumes:
                mounts.setdefault(str(source), service)
    for key, conf in list(volumes.items()):
        if conf is None:
            from ruamel.yaml.comments import CommentedMap

            conf = volumes[key] = CommentedMap()
        if conf.get("external"):
            continue
        if not NAME.match(str(key)):
            raise Refused(f"{fname}: volume {key!r} cannot be a stack.yml name (lowercase letters, digits, '-', '_')")
        old = str(conf.get("name", ""))
        match = INTERPOLATED.match(old)
        fallback = match.group(2) if match and match.group(1) == f"{var_name(str(key))}_VOLUME" else (old or f"{project}_{key}")
        conf["name"] = ref(f"{var_name(str(key))}_VOLUME", fallback)
        labels = conf.get("labels")
        if labels is None:
            from ruamel.yaml.comments import CommentedMap

            labels = conf["labels"] = CommentedMap()
        if isinstance(labels, list):
            if not any(str(x).startswith("dev.parallel-stacks.worktree=") for x in labels):
                labels.append("dev.parallel-stacks.worktree=${STACK_WORKTREE:-}")
        else:
            labels["dev.parallel-stacks.worktree"] = "${STACK_WORKTREE:-}"
        mounts.setdefault(str(key), "")
    return published, mounts


def add_alias(svc: Any, alias: str) -> None:
    """Keep a dropped container_name resolvable on every network of the service."""
    from ruamel.yaml.comments import CommentedMap

    networks = svc.get("networks")
    if networks is None:
        networks = svc["networks"] = CommentedMap([("default", CommentedMap())])
    if isinstance(networks, list):
        networks = svc["networks"] = CommentedMap([(str(n), CommentedMap()) for n in networks])
    for net in list(networks):
        conf = networks[net]
        if conf is None:
            conf = networks[net] = CommentedMap()
        aliases = conf.setdefault("aliases", [])
        if alias not in aliases:
            aliases.append(alias)


def compose_project(root: Path, data: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The project name compose itself uses by hand (its volumes are `<it>_<volume>`): `name:`, else
    COMPOSE_PROJECT_NAME (environment, .env), else the directory's name, normalised as compose does."""
    import os

    raw = str(data.get("name") or os.environ.get("COMPOSE_PROJECT_NAME") or env.get("COMPOSE_PROJECT_NAME") or root.resolve().name)
    return re.sub(r"^[_-]+", "", re.sub(r"[^a-z0-9_-]", "", raw.lower()))


def project_name(root: Path, data: Mapping[str, Any]) -> str:
    raw = str(data.get("name") or root.resolve().name)
    name = re.sub(r"[^a-z0-9_-]", "", raw.lower())
    name = re.sub(r"^[^a-z]+", "", name)
    if not name:
        raise Refused(f"cannot make a project name from {raw!r}; add `name: <project>` to the compose file")
    return name


def build_stack(project: str, data_list: list[Any], published: list[Published], mounts: Mapping[str, str]) -> dict[str, Any]:
    services: dict[str, Any] = {}
    images = {}
    for data in data_list:
        for name, svc in data["services"].items():
            images.setdefault(stack_name(name), svc.get("image"))
    kinds_used: set[str] = set()
    for port in published:
        base = port.stack_name if port.stack_name in images else None
        kind = kind_of(images.get(base)) if base else "http"
        if kind in kinds_used and kind in ("postgres", "redis", "mqtt"):
            kind = "http"  # one service per such kind: its DATABASE_URL / REDIS_URL / MQTT_URL are stack-wide
        kinds_used.add(kind)
        services[port.stack_name] = {"kind": kind, "container_port": port.container, "host_port": port.host}
    loose = []
    for vol, service in mounts.items():
        owner = stack_name(service) if service else None
        if owner in services:
            services[owner].setdefault("volumes", []).append(vol)
        else:
            loose.append(vol)
    if not services:
        raise Refused("no service publishes a port: there is nothing to offset per copy")
    stack: dict[str, Any] = {"project": project, "services": services}
    if loose:
        stack["volumes"] = loose
    return stack


STACK_HEADER = """\
# Written by parallel-stacks' `make adopt` from the compose file; the one
# declarative file of this stack. For a PORT_OFFSET, every host port is
# host_port + PORT_OFFSET and every volume <project>_<volume>_<PORT_OFFSET>
# (see `make stack-env`). PORT_OFFSET unset (0): the ports as before.
"""


def stack_text(stack: Mapping[str, Any]) -> str:
    import yaml

    return STACK_HEADER + yaml.safe_dump(dict(stack), sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------- make targets
def user_targets(makefile: Path) -> set[str]:
    if not makefile.is_file():
        return set()
    found = set()
    for line in makefile.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"^([A-Za-z0-9_./-]+(?:\s+[A-Za-z0-9_./-]+)*)\s*::?(?!=)", line)
        if match:
            found.update(match.group(1).split())
    return found


def mk_text(taken: set[str], has_postgres: bool) -> str:
    lines = [
        "# parallel-stacks: make targets for isolated copies of this compose project.",
        "# Written by `make adopt` (parallel-stacks template); included from the Makefile.",
        "# `make stack-<target>` always works; `make <target>` too where the Makefile",
        "# has no target of that name. Per copy: PORT_OFFSET=<n> make stack-up.",
        "STACK_VENV ?= .venv-stack",
        "ifeq ($(origin STACK_PYTHON),undefined)",
        "STACK_PYTHON := $(STACK_VENV)/bin/python",
        "STACK_DEPS := $(STACK_VENV)/.installed",
        "else",
        "STACK_DEPS :=",
        "endif",
        f"STACK_HELPERS := {HELPERS_DIR}/helpers.py",
        "export STACK_ROOT := $(CURDIR)",
        "ARGS ?=",
        "",
    ]
    targets = [*TARGETS, *([("psql", "client psql $(ARGS)", "psql inside this copy's Postgres container")] if has_postgres else [])]
    names = []
    for name, command, help_text in targets:
        names.append(f"stack-{name}")
        lines += [f"stack-{name}: $(STACK_DEPS) ## {help_text}", f"\t@$(STACK_PYTHON) $(STACK_HELPERS) {command}", ""]
        if name not in taken:
            names.append(name)
            lines += [f"{name}: stack-{name}", ""]
    lines += [
        f"stack-setup: $(STACK_VENV)/.installed ## Create {'$(STACK_VENV)'} with the helpers (uv when it can, else pip)",
        "",
        f"$(STACK_VENV)/.installed: {HELPERS_DIR}/requirements.txt {HELPERS_DIR}/tools/pyproject.toml",
        f"\t@EDITABLE={HELPERS_DIR}/tools bash {HELPERS_DIR}/bootstrap-venv.sh $(STACK_VENV) {HELPERS_DIR}/requirements.txt",
        "\t@touch $@",
        "",
        "stack-help: ## This file's targets",
        "\t@awk 'BEGIN {FS = \":.*## \"} /^[a-zA-Z_-]+:.*## / {printf \"  %-22s %s\\n\", $$1, $$2}' " + MK_FILE,
        "",
        f".PHONY: stack-setup stack-help {' '.join(names)}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the plan
def helper_files() -> dict[str, bytes]:
    """{path under parallel-stacks/: bytes} of the helper package and its scripts, from this template."""
    files: dict[str, bytes] = {}
    tools = PROJECT_TEMPLATE / "tools"
    for path in sorted(tools.rglob("*")):
        rel = path.relative_to(tools)
        if path.is_file() and not any(p.startswith(".") or p == "__pycache__" or p.endswith(".egg-info") for p in rel.parts):
            files[f"tools/{rel}"] = path.read_bytes()
    scripts = PROJECT_TEMPLATE / "scripts"
    for name in ("helpers.py", "bootstrap-venv.sh", "worktree.sh"):
        files[name] = (scripts / name).read_bytes()
    requirements = [ln for ln in (PROJECT_TEMPLATE / "requirements-dev.txt").read_text().splitlines() if ln.split("==")[0] in ("python-dotenv", "PyYAML", "psutil")]
    files["requirements.txt"] = ("# The stack helpers' dependencies (parallel-stacks). Pinned.\n" + "\n".join(requirements) + "\n").encode()
    return files


def captured_settings(data_list: list[Any], stack: Mapping[str, Any], env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(committed settings, private settings) the copy's derived values must agree with: the Postgres service's
    user, database and password as its compose entry sets them (literal: committed; from .env: private)."""
    public: dict[str, str] = {}
    private: dict[str, str] = {}
    postgres = [n for n, s in stack["services"].items() if s["kind"] == "postgres"]
    if not postgres:
        return public, private
    for data in data_list:
        for name, svc in data["services"].items():
            if stack_name(name) != postgres[0]:
                continue
            environment = svc.get("environment") or {}
            if isinstance(environment, list):
                environment = dict(str(e).split("=", 1) if "=" in str(e) else (str(e), "") for e in environment)
            for key in ("POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"):
                raw = str(environment.get(key, "")).strip()
                if not raw:
                    continue
                match = INTERPOLATED.match(raw)
                if not match:
                    public[key] = raw  # literal: already committed in the compose file
                else:  # ${VAR}: the value .env gives it (make passes its own POSTGRES_* to compose, so they must agree)
                    value = env.get(match.group(1), match.group(2))
                    if value:
                        (private if key == "POSTGRES_PASSWORD" else public)[key] = value
    public.setdefault("POSTGRES_USER", "postgres")  # the image's defaults
    public.setdefault("POSTGRES_DB", public["POSTGRES_USER"])
    return public, private


def plan(root: Path) -> Plan:
    root = root.resolve()
    if not root.is_dir():
        raise Refused(f"TARGET={root} is not a directory")
    main = next((root / f for f in COMPOSE_FILES if (root / f).is_file()), None)
    if main is None:
        raise Refused(f"{root} has no compose file ({', '.join(COMPOSE_FILES)})")
    paths = [main] + [root / f for f in OVERRIDE_FILES if (root / f).is_file()]
    env = dotenv(root)
    texts = {p: p.read_text(encoding="utf-8") for p in paths}
    datas = [load_text(texts[p], p.name) for p in paths]
    project = project_name(root, datas[0])
    if (root / "stack.yml").is_file():
        import yaml

        existing = yaml.safe_load((root / "stack.yml").read_text(encoding="utf-8")) or {}
        if isinstance(existing, dict) and isinstance(existing.get("project"), str):
            project = existing["project"]  # adopted before: keep its name
    taken: dict[int, str] = {}
    seen_ports: dict[str, dict[tuple[int, int], str]] = {}
    published: list[Published] = []
    mounts: dict[str, str] = {}
    by_hand = compose_project(root, datas[0], env)
    for p, data in zip(paths, datas):
        found, used = convert(data, p.name, root, env, by_hand, taken, seen_ports)
        published += found
        for vol, service in used.items():
            if service or vol not in mounts:
                mounts[vol] = service
    stack = build_stack(project, datas, published, mounts)
    files: dict[Path, str] = {}
    for p, data in zip(paths, datas):
        files[p] = dump(data)
    files[root / "stack.yml"] = stack_text(stack)
    files[root / MK_FILE] = mk_text(user_targets(root / "Makefile"), any(s["kind"] == "postgres" for s in stack["services"].values()))
    makefile = root / "Makefile"
    current = makefile.read_text(encoding="utf-8") if makefile.is_file() else ""
    if INCLUDE_LINE not in current.splitlines():
        files[makefile] = (
            current + ("\n" if current and not current.endswith("\n") else "") + f"\n# isolated copies of the stack (parallel-stacks)\n{INCLUDE_LINE}\n"
            if current
            else f"# isolated copies of the stack (parallel-stacks): make stack-help\n{INCLUDE_LINE}\n"
        )
    public, private = captured_settings(datas, stack, env)
    dev_env = root / "env" / "dev.env"
    if not dev_env.exists():
        files[dev_env] = (
            "# Committed settings for ENV=dev (parallel-stacks). env/local.env (gitignored)\n"
            "# overrides them per machine; PORT_OFFSET=<n> there gives this worktree its own ports.\n"
            + "".join(f"{k}={v}\n" for k, v in public.items())
        )
    local_env = root / "env" / "local.env"
    if private and not local_env.exists():
        files[local_env] = "# Per-machine settings and secrets for this worktree. Gitignored; never commit.\n" + "".join(f"{k}={v}\n" for k, v in private.items())
    gitignore = root / ".gitignore"
    ignored = gitignore.read_text(encoding="utf-8") if gitignore.is_file() else ""
    wanted = [p for p in ("env/local.env", ".env.dynamic", ".venv-stack/") if p not in ignored.splitlines()]
    if wanted:
        files[gitignore] = ignored + ("\n" if ignored and not ignored.endswith("\n") else "") + "# parallel-stacks\n" + "\n".join(wanted) + "\n"
    changed = {p: t for p, t in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != t}
    notes = []
    for data in datas:
        for vol, conf in (data.get("volumes") or {}).items():
            if conf and conf.get("external"):
                notes.append(f"volume {vol} is external: every copy shares it")
    return Plan(project, stack, changed, notes)


def package_changes(root: Path) -> dict[Path, bytes]:
    return {
        root / HELPERS_DIR / rel: data
        for rel, data in helper_files().items()
        if not (root / HELPERS_DIR / rel).is_file() or (root / HELPERS_DIR / rel).read_bytes() != data
    }


def tracked_and_clean(root: Path, path: Path) -> bool:
    proc = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", str(path)], capture_output=True, text=True)
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "--error-unmatch", str(path)], capture_output=True)
    return proc.returncode == 0 and not proc.stdout.strip() and listed.returncode == 0


def validate(root: Path, text: str) -> None:
    """The new stack.yml must load with the package's own checks."""
    import tempfile

    from parallel_stacks.basics import StackError
    from parallel_stacks.config import load_stack

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.yml"
        path.write_text(text)
        try:
            load_stack(path)
        except StackError as exc:
            raise Refused(f"the stack.yml adopt would write is not valid: {exc}") from None


def apply(root: Path, out: Any = sys.stdout, dry_run: bool = False) -> int:
    root = root.resolve()
    result = plan(root)
    validate(root, result.files.get(root / "stack.yml", (root / "stack.yml").read_text() if (root / "stack.yml").is_file() else ""))
    package = package_changes(root)
    if not result.files and not package:
        print(f"{root}: already adopted; nothing to change", file=out)
        return 0
    for path, text in result.files.items():
        old = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.is_file() else []
        rel = path.relative_to(root)
        out.writelines(difflib.unified_diff(old, text.splitlines(keepends=True), f"a/{rel}" if old else "/dev/null", f"b/{rel}"))
    if package:
        print(f"{'would write' if dry_run else 'writing'} {len(package)} file(s) of the helper package under {HELPERS_DIR}/", file=out)
    if dry_run:
        return 0
    for path in result.files:
        if path.is_file() and not tracked_and_clean(root, path):
            backup = path.with_name(path.name + ".orig")
            if not backup.exists():
                shutil.copy2(path, backup)
                print(f"kept the original as {backup.relative_to(root)}", file=out)
    for path, text in result.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if path.name == "local.env":
            path.chmod(0o600)
    for path, data in package.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if path.suffix == ".sh":
            path.chmod(0o755)
    services = ", ".join(f"{n} ({s['kind']}, {s['host_port']})" for n, s in result.stack["services"].items())
    print(f"adopted {root} as project {result.project}: {services}", file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    print("next: `make stack-up` (as before), `PORT_OFFSET=10000 make stack-up` (a second copy beside it); `make stack-help`", file=out)
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make adopt", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("target", help="the repository to adopt (its compose file at the top)")
    parser.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return apply(Path(args.target), dry_run=args.dry_run)
    except Refused as exc:
        print(f"error: {exc}; nothing changed", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
