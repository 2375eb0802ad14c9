"""Writing stack.yml (services, kinds, volumes, the compose file set and the adoption's variables) and env/*.env."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import Refused, stack_name, whole_ref
from .composefiles import Repository
from .convert import Conversion

ONE_PER_STACK = ("postgres", "redis", "mqtt")  # their DATABASE_URL / REDIS_URL / MQTT_URL are stack-wide

STACK_HEADER = """\
# Written by parallel-stacks' `make adopt` from the compose files; the one
# declarative file of this stack. For a PORT_OFFSET, every host port is
# host_port + PORT_OFFSET and every volume <project>_<volume>_<PORT_OFFSET>
# (see `make stack-env`). PORT_OFFSET unset (0): the ports as before.
# compose: the files compose uses here, and the only variables a copy hands it.
"""


def compose_project(root: Path, data: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The project name compose itself uses by hand (its volumes are `<it>_<volume>`): `name:`, else
    COMPOSE_PROJECT_NAME (environment, .env), else the directory's name, normalised as compose does."""
    raw = str(data.get("name") or os.environ.get("COMPOSE_PROJECT_NAME") or env.get("COMPOSE_PROJECT_NAME") or root.resolve().name)
    return re.sub(r"^[_-]+", "", re.sub(r"[^a-z0-9_-]", "", raw.lower()))


def project_name(root: Path, data: Mapping[str, Any]) -> str:
    raw = str(data.get("name") or root.resolve().name)
    name = re.sub(r"[^a-z0-9_-]", "", raw.lower())
    name = re.sub(r"^[^a-z]+", "", name)
    if not name:
        raise Refused(f"cannot make a project name from {raw!r}; add `name: <project>` to the compose file")
    return name


def previous(root: Path) -> dict[str, Any]:
    """stack.yml as an earlier adoption wrote it ({} if none)."""
    import yaml

    path = root / "stack.yml"
    if not path.is_file():
        return {}
    existing = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return existing if isinstance(existing, dict) else {}


def build(project: str, repo: Repository, conv: Conversion) -> dict[str, Any]:
    services: dict[str, Any] = {}
    by_stack_name = {stack_name(name): kind for name, kind in conv.kinds.items()}
    kinds_used: set[str] = set()
    for port in conv.published:
        kind = by_stack_name.get(port.stack_name, "http")
        if kind in kinds_used and kind in ONE_PER_STACK:
            kind = "http"
        kinds_used.add(kind)
        services[port.stack_name] = {"kind": kind, "container_port": port.container, "host_port": port.host}
    loose = []
    for vol, service in conv.mounts.items():
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
    compose: dict[str, Any] = {"files": [f.name for f in repo.files]}
    if repo.profiles:
        compose["profiles"] = repo.profiles
    from .common import used_variables

    in_files = set().union(*(used_variables(t) for t in conv.texts.values()))
    kept = {var: src for var, src in conv.namer.previous.items() if var in in_files}  # an earlier adoption's, still used
    compose["variables"] = dict(sorted({**kept, **conv.namer.chosen}.items()))
    if conv.data_dirs:
        compose["data_dirs"] = dict(sorted(conv.data_dirs.items()))
    if conv.networks:
        compose["networks"] = dict(sorted(conv.networks.items()))
    stack["compose"] = compose
    return stack


def text(stack: Mapping[str, Any]) -> str:
    import yaml

    return STACK_HEADER + yaml.safe_dump(dict(stack), sort_keys=False, default_flow_style=None, width=4096)


def captured_settings(repo: Repository, stack: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(committed settings, private settings) the copy's derived values must agree with: the Postgres service's
    user, database and password as its compose entry sets them (literal: committed; from .env: private)."""
    public: dict[str, str] = {}
    private: dict[str, str] = {}
    postgres = [n for n, s in stack["services"].items() if s["kind"] == "postgres"]
    if not postgres:
        return public, private
    for f in repo.files:
        for name, svc in f.data["services"].items():
            if stack_name(name) != postgres[0] or not isinstance(svc, dict):
                continue
            environment = svc.get("environment") or {}
            if isinstance(environment, list):
                environment = dict(str(e).split("=", 1) if "=" in str(e) else (str(e), "") for e in environment)
            for key in ("POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"):
                raw = str(environment.get(key, "") or "").strip()
                if not raw:
                    continue
                found = whole_ref(raw)
                if not found:
                    public[key] = raw  # literal: already committed in the compose file
                else:  # ${VAR}: the value .env gives it
                    from .common import evaluate

                    value = evaluate(raw, repo.env)
                    if value:
                        (private if key == "POSTGRES_PASSWORD" else public)[key] = value
    public.setdefault("POSTGRES_USER", "postgres")  # the image's defaults
    public.setdefault("POSTGRES_DB", public["POSTGRES_USER"])
    return public, private


def validate(text_: str) -> None:
    """The new stack.yml must load with the package's own checks."""
    import tempfile

    from parallel_stacks.basics import StackError
    from parallel_stacks.config import load_stack

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.yml"
        path.write_text(text_)
        try:
            load_stack(path)
        except StackError as exc:
            raise Refused(f"the stack.yml adopt would write is not valid: {exc}") from None
