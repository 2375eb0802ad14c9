"""The repository's own pytest suite: whether there is one, how the team runs it, and which of the app's
variables must come from each test worker (its database, Redis DB, broker) for the suite to be isolated."""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .common import evaluate, stack_name
from .composefiles import Repository

SUITE_MK = "parallel-stacks/suite.mk"
ISOLATION_ENV = "parallel-stacks/isolation_env"
REQUIREMENTS = "parallel-stacks/suite-requirements.txt"

# What the plugin needs in the suite's own environment: ranges, so a team's own pins win where they have them.
BASE_REQUIREMENTS = ("pytest-xdist>=3.5", "python-dotenv>=1.0", "PyYAML>=6.0", "psutil>=5.9")
KIND_REQUIREMENTS = {"postgres": ("psycopg[binary]>=3.1",)}  # the plugin's own admin connection (clones, drops)

# A worker's variables per kind (the kinds' worker_env), by what an app's variable means.
URL_OF = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "mqtt": "MQTT_URL"}
PART_OF = {
    "postgres": {"HOST": "PGHOST", "PORT": "PGPORT", "USER": "PGUSER", "PASSWORD": "PGPASSWORD", "DB": "PGDATABASE",
                 "NAME": "PGDATABASE", "DATABASE": "PGDATABASE", "DBNAME": "PGDATABASE"},
    "redis": {"HOST": "REDIS_HOST", "PORT": "REDIS_PORT", "DB": "REDIS_DB"},
    "mqtt": {"HOST": "MQTT_HOST", "PORT": "MQTT_PORT", "USER": "MQTT_USER", "USERNAME": "MQTT_USER", "PASSWORD": "MQTT_PASSWORD"},
}
SCHEMES = {"postgres": ("postgres", "postgresql", "postgis"), "redis": ("redis", "rediss"), "mqtt": ("mqtt", "mqtts", "tcp")}
EXPORTED = {v for v in URL_OF.values()} | {v for parts in PART_OF.values() for v in parts.values()}


@dataclass
class Suite:
    config: str  # the file that says there is a pytest suite
    runner: str  # uv, poetry, venv or python (parallel-stacks.mk turns it into a command)
    isolation_env: list[str] = field(default_factory=list)  # NAME = {WORKER_VARIABLE} lines


def pytest_config(root: Path) -> str | None:
    """The file that configures (or announces) a pytest suite, in pytest's own order of precedence."""
    if (root / "pytest.ini").is_file() or (root / ".pytest.ini").is_file():
        return "pytest.ini" if (root / "pytest.ini").is_file() else ".pytest.ini"
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r"^\[tool\.pytest(\.ini_options)?\]", pyproject.read_text(encoding="utf-8", errors="replace"), re.M):
        return "pyproject.toml"
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(root / name, encoding="utf-8")
        except configparser.Error:
            continue
        if parser.has_section(section):
            return name
    for conftest in ("conftest.py", "tests/conftest.py", "test/conftest.py"):
        if (root / conftest).is_file():
            return conftest
    return None


def runner_of(root: Path) -> str:
    """How the team runs Python here: its lock file's tool, else its virtualenv, else the interpreter on PATH."""
    if (root / "uv.lock").is_file():
        return "uv"
    if (root / "poetry.lock").is_file():
        return "poetry"
    if (root / ".venv" / "bin" / "python").exists():
        return "venv"
    return "python"


def environments(repo: Repository) -> Iterable[tuple[str, dict[str, str]]]:
    """(service, {variable: value as compose gives it}) of every service's `environment:`, across the file set."""
    for f in repo.files:
        for name, svc in (f.data.get("services") or {}).items():
            environment: Any = svc.get("environment") if isinstance(svc, dict) else None
            if isinstance(environment, list):
                environment = dict(str(e).split("=", 1) if "=" in str(e) else (str(e), "") for e in environment)
            if isinstance(environment, dict):
                values = {str(k): evaluate(str(v), repo.env) or "" if v is not None else "" for k, v in environment.items()}
                yield str(name), values


def isolation_lines(repo: Repository, stack: Mapping[str, Any]) -> list[str]:
    """`NAME = {WORKER_VARIABLE}` for the variables the app's services read for this stack's database, Redis and
    broker (a URL naming the service, or a HOST naming it and its PORT, USER, ... siblings), except names the
    plugin already sets for each worker."""
    kind_of = {name: svc["kind"] for name, svc in stack["services"].items()}
    hosts = {}  # compose service name (a host name on the copy's network) -> kind
    for f in repo.files:
        for name in f.data.get("services") or {}:
            if kind_of.get(stack_name(str(name))) in URL_OF:
                hosts[str(name)] = kind_of[stack_name(str(name))]
    lines: dict[str, str] = {}
    for service, env in environments(repo):
        if service in hosts:
            continue  # the database's own container settings
        prefixes: dict[str, str] = {}  # POSTGRES_ (of POSTGRES_HOST=db) -> postgres
        for key, value in env.items():
            if "://" in value:
                parts = urlsplit(value)
                kind = hosts.get(parts.hostname or "")
                scheme = parts.scheme.split("+", 1)[0]
                if kind and scheme in SCHEMES[kind] and key not in EXPORTED:
                    if parts.scheme == scheme or kind != "postgres":
                        lines.setdefault(key, "{" + URL_OF[kind] + "}")
                    else:  # a driver in the scheme (postgresql+asyncpg): the worker's parts under the app's scheme
                        lines.setdefault(key, f"{parts.scheme}://{{PGUSER}}:{{PGPASSWORD}}@{{PGHOST}}:{{PGPORT}}/{{PGDATABASE}}")
            elif key.upper().endswith("HOST") and value in hosts:
                prefixes[key[: -len("HOST")]] = hosts[value]
        for key, value in env.items():
            for prefix, kind in prefixes.items():
                part = key[len(prefix) :].upper() if key.startswith(prefix) else ""
                target = PART_OF[kind].get(part)
                if target and key not in EXPORTED and key != target:
                    lines.setdefault(key, "{" + target + "}")
    return [f"{key} = {template}" for key, template in lines.items()]


def find(repo: Repository, stack: Mapping[str, Any]) -> Suite | None:
    config = pytest_config(repo.root)
    if config is None:
        return None
    return Suite(config, runner_of(repo.root), isolation_lines(repo, stack))


def suite_mk(suite: Suite) -> str:
    return (
        f"# Written by `make adopt`: this repository's pytest suite ({suite.config}) and how it runs here.\n"
        "# parallel-stacks.mk turns the runner into a command: uv (uv run), poetry (poetry run), venv\n"
        "# (.venv/bin/python) or python; PYTEST=\"...\" on the command line overrides the command.\n"
        f"STACK_SUITE_RUNNER ?= {suite.runner}\n"
    )


def isolation_env_text(lines: list[str]) -> str:
    return (
        "# Written by `make adopt`: variables this repository's app reads for its database, Redis and broker,\n"
        "# filled from each test worker's own (the plugin's isolation_env lines: NAME = template with {VARIABLE}s,\n"
        "# see `parallel_context`). Edit freely: a later `make adopt` leaves this file as it is.\n"
        + "".join(f"{line}\n" for line in lines)
    )


def requirements_text(kinds: Iterable[str]) -> str:
    extra = [r for kind in sorted(set(kinds)) for r in KIND_REQUIREMENTS.get(kind, ())]
    return (
        "# What the isolation plugin needs in the suite's own environment (`make stack-test-setup`).\n"
        "# Ranges: the versions the team already pins win.\n" + "".join(f"{r}\n" for r in (*BASE_REQUIREMENTS, *extra))
    )
