"""Reading the repository: its compose files as compose itself finds them, `.env`, the names the files use."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import Refused, parse, used_variables

# compose's own precedence (compose-go's DefaultFileNames and DefaultOverrideFileNames): the first found wins
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml", "docker-compose.override.yaml")


@dataclass
class ComposeFile:
    path: Path
    name: str  # relative to the repository
    text: str
    data: Any
    node: Any


@dataclass
class Repository:
    root: Path
    env: dict[str, str]  # `.env`, as compose reads it for interpolation
    files: list[ComposeFile]
    profiles: list[str]
    from_variable: bool  # the file set came from COMPOSE_FILE
    names: set[str] = field(default_factory=set)  # every variable the files interpolate or set in containers


def dotenv(root: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    path = root / ".env"
    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}


def setting(name: str, env: Mapping[str, str]) -> str | None:
    """A COMPOSE_* setting as compose reads it: the environment, else `.env`."""
    return os.environ.get(name) if name in os.environ else env.get(name)


def file_set(root: Path, env: Mapping[str, str]) -> tuple[list[Path], bool]:
    """The files `docker compose` run in `root` uses: COMPOSE_FILE, else the first default name and its override."""
    listed = setting("COMPOSE_FILE", env)
    if listed:
        separator = setting("COMPOSE_PATH_SEPARATOR", env) or os.pathsep
        paths = []
        for name in [n for n in listed.split(separator) if n.strip()]:
            path = (root / name.strip()).resolve()
            if root not in path.parents:
                raise Refused(f"COMPOSE_FILE names {name}, outside the repository; adopt writes nothing outside it")
            if not path.is_file():
                raise Refused(f"COMPOSE_FILE names {name}, which does not exist")
            paths.append(path)
        if paths[0].parent != root:
            raise Refused(f"COMPOSE_FILE's first file {listed.split(separator)[0]} is not at the top of the repository; adopt that directory instead")
        return paths, True
    main = next((root / f for f in COMPOSE_FILES if (root / f).is_file()), None)
    if main is None:
        raise Refused(f"{root} has no compose file ({', '.join(COMPOSE_FILES)})")
    override = next((root / f for f in OVERRIDE_FILES if (root / f).is_file()), None)
    return [main] + ([override] if override else []), False


def read(root: Path) -> Repository:
    root = root.resolve()
    if not root.is_dir():
        raise Refused(f"TARGET={root} is not a directory")
    env = dotenv(root)
    paths, from_variable = file_set(root, env)
    files = []
    for path in paths:
        name = str(path.relative_to(root))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise Refused(f"{name} is not UTF-8 text") from None
        data, node = parse(text, name)
        files.append(ComposeFile(path, name, text, data, node))
    profiles = [p.strip() for p in (setting("COMPOSE_PROFILES", env) or "").split(",") if p.strip()]
    repo = Repository(root, env, files, profiles, from_variable)
    repo.names = names_in_use(repo)
    return repo


def compose_accepts(repo: Repository) -> None:
    """`docker compose config` by hand must accept the files as they are (adopt does not convert what compose refuses)."""
    args = ["docker", "compose"]
    for f in repo.files:
        args += ["-f", str(f.path)]
    for profile in repo.profiles:
        args += ["--profile", profile]
    try:
        proc = subprocess.run([*args, "--project-directory", str(repo.root), "config", "--quiet"], cwd=repo.root, capture_output=True, text=True, timeout=120)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return  # no compose here: the converted files are checked by `make stack-doctor` where it runs
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or [f"exit code {proc.returncode}"]
        raise Refused(f"docker compose refuses {' + '.join(f.name for f in repo.files)} as it is: {lines[-1].strip()}")


def names_in_use(repo: Repository) -> set[str]:
    """Every variable the compose files interpolate, and every key they set in containers (environment:, env_file:)."""
    from dotenv import dotenv_values

    names: set[str] = set()
    for f in repo.files:
        names |= used_variables(f.text)
        for svc in f.data["services"].values():
            if not isinstance(svc, dict):
                continue
            environment = svc.get("environment") or {}
            if isinstance(environment, dict):
                names |= {str(k) for k in environment}
            else:
                names |= {str(e).split("=", 1)[0] for e in environment}
            env_files = svc.get("env_file") or []
            for item in [env_files] if isinstance(env_files, (str, dict)) else env_files:
                rel = item.get("path") if isinstance(item, dict) else item
                path = f.path.parent / str(rel)
                if path.is_file():
                    names |= {k for k in dotenv_values(path)}
    return names
