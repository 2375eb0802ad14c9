"""Layer 4: the compose CLI for a copy: which command (`docker compose`, `docker-compose`, COMPOSE), its
version, whether it and the engine take a health check's start_interval, the copy's file set and command
line, and the model it resolves (`compose config`).

Library code for the commands that run compose (commands/compose.py: up, down ...; doctor; k8s) and for the
quick `make up` (upstate.py); nothing here starts or removes anything.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .basics import StackError
from .model import Copy
from .settings import Settings

# A health check's start_interval (compose.yaml) needs Docker Engine 25 (API 1.44) and Compose v2.24;
# older ones get a copy of compose.yaml without it (legacy_compose_file).
START_INTERVAL_API = (1, 44)
START_INTERVAL_COMPOSE = (2, 24)
_VERSIONS: dict[tuple[str, ...], str] = {}  # compose command -> `version --short`, as compose_command's probe saw it
_LEGACY: dict[tuple[str, ...], str | None] = {}  # compose command -> why it gets the legacy file (None: it does not)


def compose_command(settings: Settings, configured: str | None = None) -> list[str]:
    """COMPOSE if set, else `docker compose` (v2), else `docker-compose` (v1)."""
    configured = (configured if configured is not None else settings.get("COMPOSE")).strip()
    if configured:
        return shlex.split(configured)
    plugin = compose_plugin(settings)
    known = _plugin_version(settings, plugin) if plugin else None
    if known:
        _VERSIONS[("docker", "compose")] = known
        return ["docker", "compose"]
    try:
        probe = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            _VERSIONS[("docker", "compose")] = str(probe.stdout or "").strip()
            if plugin:
                _plugin_version(settings, plugin, _VERSIONS[("docker", "compose")])
            return ["docker", "compose"]
    except (FileNotFoundError, subprocess.TimeoutExpired):
        pass
    import shutil

    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StackError("neither `docker compose` (v2) nor `docker-compose` (v1) was found; install Docker Compose")


PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def compose_plugin(settings: Settings) -> str | None:
    """The Compose v2 plugin the docker CLI runs for `docker compose` (its own search order), if docker is on PATH."""
    import shutil

    if not shutil.which("docker"):
        return None
    config = settings.docker_config_dir()
    for directory in (os.path.join(config, "cli-plugins"), *PLUGIN_DIRS):
        path = os.path.join(directory, "docker-compose")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _plugin_version(settings: Settings, path: str, learned: str | None = None) -> str | None:
    """The plugin's `version --short` as last probed, kept in the user's cache by the binary's size and mtime
    (an upgrade is a new entry): `make up` need not start compose just to learn its version. With `learned`: store it."""
    import json

    cache = os.path.join(settings.cache_dir(), "compose-version.json")
    try:
        st = os.stat(path)
        stamp = [path, st.st_size, st.st_mtime_ns]
    except OSError:
        return None
    try:
        with open(cache, encoding="utf-8") as handle:
            entry = json.load(handle)
    except (OSError, ValueError):
        entry = None
    if learned is None:
        return str(entry[1]) if isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp and entry[1] else None
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump([stamp, learned], handle)
        os.replace(tmp, cache)
    except OSError:
        pass
    return learned


def compose_version(cmd: list[str]) -> str:
    """`cmd version --short` ("2.26.1", "1.29.2"; "" if it does not answer), asked once if compose_command probed it."""
    known = _VERSIONS.get(tuple(cmd))
    if known is not None:
        return known
    try:
        proc = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return ""
    version = proc.stdout.strip() if proc.returncode == 0 else ""
    if version:
        _VERSIONS[tuple(cmd)] = version  # once per process (v1 takes ~0.5 s to say it)
    return version


def is_v1(cmd: list[str]) -> bool:
    """True for Compose v1 (`docker-compose` 1.x), whose flags and labels differ."""
    return compose_version(cmd).lstrip("v").startswith("1.")


def start_interval_missing(settings: Settings, cmd: list[str]) -> str | None:
    """Why this compose and engine cannot take a health check's start_interval (None: they can).

    STACK_LEGACY_HEALTHCHECKS=1 says so for any engine (what older ones get, on purpose).
    """
    if settings.flag("STACK_LEGACY_HEALTHCHECKS"):
        return "STACK_LEGACY_HEALTHCHECKS is set"
    key = tuple(cmd)
    if key not in _LEGACY:
        _LEGACY[key] = _start_interval_missing(settings, cmd)
    return _LEGACY[key]


def _start_interval_missing(settings: Settings, cmd: list[str]) -> str | None:
    import re

    from . import engine as docker_state

    version = compose_version(cmd).lstrip("v")
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if len(numbers) == 2 and numbers < START_INTERVAL_COMPOSE:
        return f"Compose {version}"
    api = docker_state.api_version(settings)
    if api is not None and api < START_INTERVAL_API:
        return f"Docker Engine API {api[0]}.{api[1]} (Engine < 25)"
    return None


LEGACY_INTERVAL = 2.0  # seconds: the checks' interval before start_interval (each check costs ~15 ms of CPU)


def duration_seconds(text: Any) -> float | None:
    """A compose duration ("1s", "1m30s", "500ms") in seconds; None if it is not one."""
    import re

    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        return None
    return sum(float(n) * units[u] for n, u in parts)


def without_start_interval(model: Any) -> Any:
    """The compose model with every health check's start_interval removed and its interval set to the start
    interval, but no shorter than LEGACY_INTERVAL: startup is still noticed within seconds; an idle copy pays
    what every copy paid before start_interval existed."""
    if isinstance(model, dict):
        if "start_interval" in model:
            start = model.pop("start_interval")
            seconds = duration_seconds(start)
            if "interval" in model or "test" in model:
                model["interval"] = start if seconds is not None and seconds >= LEGACY_INTERVAL else f"{LEGACY_INTERVAL:g}s"
        for value in model.values():
            without_start_interval(value)
    elif isinstance(model, list):
        for value in model:
            without_start_interval(value)
    return model


def legacy_compose_file(settings: Settings, source: Path) -> str:
    """A compose file without start_interval, for engines and composes older than it, in the user's cache
    directory ($XDG_CACHE_HOME/parallel-stacks/compose/), rewritten only when it changes; the file itself when it
    has no start_interval (or is not plain YAML). Relative paths still mean the worktree: compose runs with
    --project-directory."""
    import yaml

    with open(source, encoding="utf-8") as handle:
        original = handle.read()
    if "start_interval" not in original:
        return str(source)
    try:
        model = without_start_interval(yaml.safe_load(original) or {})
    except yaml.YAMLError:
        return str(source)  # compose's own tags (!reset): left to the engine
    dumper: Any = type("NoAliases", (yaml.SafeDumper,), {"ignore_aliases": lambda self, data: True})
    text = f"# Written by parallel-stacks from {source}, without start_interval (this engine or compose predates it); do not edit.\n"
    text += yaml.dump(model, Dumper=dumper, sort_keys=False, default_flow_style=False)
    path = os.path.join(settings.cache_dir(), "compose", str(source).strip(os.sep).replace(os.sep, "%"))
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return path
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def run_files(settings: Settings, cmd: list[str], copy: Copy) -> list[str]:
    """The compose files this copy runs: compose_files, or their legacy copies where start_interval is unknown."""
    files = compose_files(copy)
    if start_interval_missing(settings, cmd) is None:
        return [str(p) for p in files]
    return [legacy_compose_file(settings, p) for p in files]


def compose_files(copy: Copy) -> list[Path]:
    """The compose files this copy runs with: stack.yml's `compose.files` (an adopted project), else compose.yaml."""
    from .config import compose_files as files_of
    from .config import load_stack

    root = Path(copy.env["STACK_WORKTREE"])
    return files_of(load_stack(root / "stack.yml"), root)


def base_args(settings: Settings, cmd: list[str], copy: Copy) -> list[str]:
    """`compose -p <copy> -f <file>... [--profile <p>...] --project-directory <worktree>`: exactly the project's file set."""
    from .config import compose_profiles, load_stack

    root = copy.env["STACK_WORKTREE"]
    args = [*cmd, "-p", copy.env["COMPOSE_PROJECT_NAME"]]
    for path in run_files(settings, cmd, copy):
        args += ["-f", path]
    for profile in compose_profiles(load_stack(Path(root) / "stack.yml")):
        args += ["--profile", profile]
    return [*args, "--project-directory", root]


def files_text(copy: Copy) -> str:
    """The copy's compose files, relative to its worktree, as `a.yml + b.yml` for messages."""
    return " + ".join(str(p.relative_to(copy.env["STACK_WORKTREE"])) for p in compose_files(copy))


def compose_config(settings: Settings, cmd: list[str], copy: Copy, env: Mapping[str, str]) -> dict[str, Any]:
    """The resolved compose model (`compose config`), or one StackError line."""
    return compose_config_text(settings, cmd, copy, env)[1]


def compose_config_text(settings: Settings, cmd: list[str], copy: Copy, env: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """(`compose config`'s text, the model it describes), or one StackError line."""
    import yaml

    missing = [p for p in compose_files(copy) if not p.is_file()]
    if missing:
        raise StackError(f"compose file {missing[0].name} (stack.yml) does not exist in {copy.env['STACK_WORKTREE']}")
    proc = subprocess.run([*base_args(settings, cmd, copy), "config"], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise StackError(f"{files_text(copy)} is not usable: {lines[-1]}")
    return proc.stdout, yaml.safe_load(proc.stdout) or {}


def required_images(config: Mapping[str, Any]) -> dict[str, str]:
    """{image: service} of every image `up` needs and does not build (bases of builds included)."""
    needed: dict[str, str] = {}
    for name, svc in (config.get("services") or {}).items():
        build = svc.get("build")
        if build:
            for key, value in ((build.get("args") or {}) if isinstance(build, dict) else {}).items():
                if key.endswith("_IMAGE") and value:
                    needed.setdefault(value, name)
        elif svc.get("image"):
            needed.setdefault(svc["image"], name)
    return needed


def built_images(config: Mapping[str, Any], copy: Copy) -> dict[str, str]:
    """{image: service} of the images `up` builds (compose names them <project>-<service>)."""
    return {
        svc.get("image") or f"{copy.env['COMPOSE_PROJECT_NAME']}-{name}": name
        for name, svc in (config.get("services") or {}).items()
        if svc.get("build")
    }
