"""Run `docker compose` for this copy: its project name, ports and volumes.

`up` checks ownership and ports first, starts everything with --wait and
prints the copy's URLs; other commands pass straight through.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import derive
from ..basics import StackError
from ..runner import run as run_command
from ..settings import Settings

WAIT_SECONDS = 180
POOLS_EXHAUSTED = "could not find an available, non-overlapping IPv4 address pool"  # the engine's words, Engine 20-28
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

    from .. import engine as docker_state

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


def run_files(settings: Settings, cmd: list[str], values: Mapping[str, str]) -> list[str]:
    """The compose files this copy runs: compose_files, or their legacy copies where start_interval is unknown."""
    files = compose_files(values)
    if start_interval_missing(settings, cmd) is None:
        return [str(p) for p in files]
    return [legacy_compose_file(settings, p) for p in files]


def compose_files(values: Mapping[str, str]) -> list[Path]:
    """The compose files this copy runs with: stack.yml's `compose.files` (an adopted project), else compose.yaml."""
    from ..config import compose_files as files_of
    from ..config import load_stack

    root = Path(values["STACK_WORKTREE"])
    return files_of(load_stack(root / "stack.yml"), root)


def base_args(settings: Settings, cmd: list[str], values: Mapping[str, str]) -> list[str]:
    """`compose -p <copy> -f <file>... [--profile <p>...] --project-directory <worktree>`: exactly the project's file set."""
    from ..config import compose_profiles, load_stack

    root = values["STACK_WORKTREE"]
    args = [*cmd, "-p", values["COMPOSE_PROJECT_NAME"]]
    for path in run_files(settings, cmd, values):
        args += ["-f", path]
    for profile in compose_profiles(load_stack(Path(root) / "stack.yml")):
        args += ["--profile", profile]
    return [*args, "--project-directory", root]


def files_text(values: Mapping[str, str]) -> str:
    """The copy's compose files, relative to its worktree, as `a.yml + b.yml` for messages."""
    return " + ".join(str(p.relative_to(values["STACK_WORKTREE"])) for p in compose_files(values))


def run(argv: list[str], env: Mapping[str, str]) -> int:
    """Run `argv` with `env`, its output to the terminal; its exit code (StackError when the program is missing)."""
    try:
        return subprocess.run(argv, env=env).returncode
    except FileNotFoundError:
        raise StackError(f"{argv[0]} not found") from None


def wait_healthy(settings: Settings, project: str) -> None:
    """Compose v1 has no --wait: poll container health, bounded."""
    from .. import engine as docker_state

    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        states = []
        for rec in docker_state.containers(settings, project):
            state = rec.get("State", {})
            states.append((state.get("Health") or {}).get("Status", "healthy" if state.get("Running") else "down"))
        if states and all(s == "healthy" for s in states):
            return
        time.sleep(1)
    raise StackError(f"{project} did not become healthy within {WAIT_SECONDS} s; see `make logs`")


def compose_config(settings: Settings, cmd: list[str], values: Mapping[str, str], env: Mapping[str, str]) -> dict[str, Any]:
    """The resolved compose model (`compose config`), or one StackError line."""
    return compose_config_text(settings, cmd, values, env)[1]


def compose_config_text(
    settings: Settings, cmd: list[str], values: Mapping[str, str], env: Mapping[str, str]
) -> tuple[str, dict[str, Any]]:
    """(`compose config`'s text, the model it describes), or one StackError line."""
    import yaml

    missing = [p for p in compose_files(values) if not p.is_file()]
    if missing:
        raise StackError(f"compose file {missing[0].name} (stack.yml) does not exist in {values['STACK_WORKTREE']}")
    proc = subprocess.run([*base_args(settings, cmd, values), "config"], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise StackError(f"{files_text(values)} is not usable: {lines[-1]}")
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


def built_images(config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
    """{image: service} of the images `up` builds (compose names them <project>-<service>)."""
    return {
        svc.get("image") or f"{values['COMPOSE_PROJECT_NAME']}-{name}": name
        for name, svc in (config.get("services") or {}).items()
        if svc.get("build")
    }


def ensure_images(settings: Settings, needed: dict[str, str]) -> None:
    """Pull what is missing before anything is created; one line if an image cannot be had."""
    from .. import engine as docker_state

    for image in docker_state.missing_images(settings, list(needed)):
        print(f"pulling {image} for service {needed[image]} (not on this machine yet)", file=sys.stderr, flush=True)
        try:
            docker_state.pull(settings, image)
        except StackError as exc:
            raise StackError(
                f"image {image} (service {needed[image]}) is not on this machine and could not be pulled "
                f"({exc}); pull it, or point its *_IMAGE setting at an image you have"
            ) from None


def quiet(argv: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    """Run a compose step with its output kept back: (exit code, output) for the caller to show on failure."""
    try:
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        raise StackError(f"{argv[0]} not found") from None
    return proc.returncode, proc.stdout


def show_tail(output: str, lines: int = 40) -> None:
    """The last `lines` lines of a command's captured output, on stderr (what a failure needs to be understood)."""
    tail = output.rstrip().splitlines()[-lines:]
    if tail:
        print("\n".join(tail), file=sys.stderr)


def build(
    settings: Settings,
    cmd: list[str],
    values: Mapping[str, str],
    env: Mapping[str, str],
    images: dict[str, str],
    only: list[str] | None = None,
) -> int:
    """Build this copy's images (`only`: of those services): progress shown for a first build, otherwise quiet unless it fails."""
    from .. import engine as docker_state

    if not images:
        return 0
    missing = docker_state.missing_images(settings, list(images))
    if missing:
        names = ", ".join(images[i] for i in missing)
        print(f"building images for {names} (first build of this copy; later ones are quiet)", file=sys.stderr, flush=True)
        return run([*base_args(settings, cmd, values), "build", *(only or [])], env)
    code, output = quiet([*base_args(settings, cmd, values), "build", "--quiet", *(only or [])], env)
    if code != 0:
        show_tail(output)
    return code


def selected_services(config: Mapping[str, Any], raw: str) -> set[str]:
    """SERVICES="db redis": those services and what they depend on (compose starts those too); empty: every service."""
    names = raw.replace(",", " ").split()
    if not names:
        return set()
    services = config.get("services") or {}
    unknown = [n for n in names if n not in services]
    if unknown:
        raise StackError(f"SERVICES names {', '.join(unknown)}, not a service of this copy (services: {', '.join(sorted(services))})")
    selected: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in selected:
            continue
        selected.add(name)
        depends = services[name].get("depends_on") or {}
        todo += list(depends)
    return selected


def snapshot(records: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """{container id: (started at, running, health)} of the copy's inspect records: what `up` changed, if anything."""
    return {
        rec["Id"]: (rec["State"].get("StartedAt"), rec["State"].get("Running"), (rec["State"].get("Health") or {}).get("Status"))
        for rec in records
    }


def up(settings: Settings, values: Mapping[str, str], env: Mapping[str, str], cmd: list[str], extra: list[str]) -> int:
    """`make up`: check ownership, ports, volumes and images, claim what it needs, build, start, wait until healthy, publish the named URLs; nothing created when a check fails."""
    from .. import engine as docker_state
    from .. import ownership
    from .. import probe as check_ports
    from ..config import compose_variables, data_dirs, load_stack
    from ..localenv import ensure_local_env
    from . import upstate

    project = values["COMPOSE_PROJECT_NAME"]
    root = Path(values["STACK_WORKTREE"])
    stack_services = derive.services(root)
    missing = [key for key in derive.secret_keys(stack_services) if not values.get(key)]
    legacy = start_interval_missing(settings, cmd)
    if legacy:
        print(
            f"note: {legacy}: no health-check start_interval, so this copy's checks run every {LEGACY_INTERVAL:g} s "
            "all the time, not every 30 s once healthy (docs/TROUBLESHOOTING.md)",
            file=sys.stderr,
        )
    digest: str | None = None
    config: dict[str, Any] = {}
    model: dict[str, Any] | None = None
    # only a whole copy started as `make up` starts it is stamped (not SERVICES=..., not extra compose arguments)
    quick = not extra and not settings.get("SERVICES").strip()
    read_by_config = upstate.config_key(cmd, compose_version(cmd), run_files(settings, cmd, values), env) if quick else None
    if not missing and quick:
        # a copy that is up, healthy and started from exactly these inputs: nothing for compose to do (upstate.py)
        ownership.ensure_owned(settings, values)
        model = upstate.remembered_model(values, read_by_config, settings)
        if model is None:
            config_text, config = compose_config_text(settings, cmd, values, env)
            model = upstate.model_of(config_text, config)
        digest = upstate.inputs_digest(settings, cmd, model)
        if upstate.unchanged(values, digest, model, settings, "_" if is_v1(cmd) else "-"):
            named_urls(values, stack_services, settings)
            print(f"{project} is already up and healthy; nothing changed (`make ports` shows its URLs)")
            return 0
    records = ownership.check_ownership(settings, values)
    check_ports.check(settings, values, stack_services)
    locked = [key for key in derive.secret_keys(stack_services, stored=True) if key in missing]
    if locked:
        for key, name in values.items():
            if key.endswith("_VOLUME") and docker_state.volume(settings, name) is not None:
                raise StackError(
                    f"volume {name} holds data set up with a secret this worktree no longer has "
                    f"({', '.join(locked)} {'is' if len(locked) == 1 else 'are'} missing from env/local.env); restore it there, or `make nuke` to start over"
                )
    # images before the secret file: a copy that cannot start changes nothing
    adopted = compose_variables(load_stack(root / "stack.yml")) is not None
    if not config or missing:  # (the quick check above may have asked already, or answered from its stamp)
        # (a baked compose file requires its secrets; an adopted one reads the team's own, never ours)
        config_text, config = compose_config_text(settings, cmd, values, env if adopted else {**env, **{key: "unset" for key in missing}})
        model = upstate.model_of(config_text, config)
    selected = selected_services(config, settings.get("SERVICES"))
    if selected:
        config = {**config, "services": {n: s for n, s in (config.get("services") or {}).items() if n in selected}}
    ensure_images(settings, required_images(config))
    ensure_local_env(root, values["STACK_ENV"])
    values, env = derive.compose_environment(root, settings, claim=True)  # re-read: a secret may be new
    for variable in data_dirs(load_stack(root / "stack.yml")):
        Path(values[variable]).mkdir(parents=True, exist_ok=True)  # the copy's own data directories, under the repository
    if quick and missing:  # a new secret: what compose reads, and so its answer, changed
        read_by_config = upstate.config_key(cmd, compose_version(cmd), run_files(settings, cmd, values), env)
        config_text, full = compose_config_text(settings, cmd, values, env)
        model = upstate.model_of(config_text, full)
    digest = upstate.inputs_digest(settings, cmd, model) if quick and model is not None else None  # images pulled by now
    upstate.forget(values, settings)  # what runs from here on is not what the stamp says
    before = snapshot(records)  # the ownership check's records: under the operation lock nothing has changed them
    code = build(
        settings, cmd, values, env, built_images(config, values), sorted(n for n in selected if config["services"][n].get("build"))
    )
    if code != 0:
        print(f"error: building the images of {project} failed (exit {code}); the output above says why", file=sys.stderr)
        return code
    v1 = is_v1(cmd)
    args = [*base_args(settings, cmd, values), "up", "-d", "--remove-orphans"]
    if not v1:
        args += ["--wait", "--wait-timeout", str(WAIT_SECONDS)]
    if not before:
        print(f"starting {project}; back when every service is healthy (at most {WAIT_SECONDS} s)", file=sys.stderr, flush=True)
    code, output = quiet(args + extra + sorted(selected), env)
    if code != 0:
        show_tail(output)
        if POOLS_EXHAUSTED in output:
            print(
                f"error: the engine has no address range left for {project}'s network (each copy has one; the engine's default "
                "pools hold about 30): remove copies you do not need (`make slots`, `make nuke` there), or give the engine "
                "more, smaller pools (default-address-pools in daemon.json, docs/TROUBLESHOOTING.md)",
                file=sys.stderr,
            )
            return code
        print(f"error: `compose up` failed for {project} (exit {code}); see the output above and `make logs`", file=sys.stderr)
        return code
    if v1:
        wait_healthy(settings, project)
    if quick:
        upstate.record(values, digest, settings, read_by_config, model)
    named_urls(values, stack_services, settings)
    if before and snapshot(docker_state.containers(settings, project)) == before:
        print(f"{project} is already up and healthy; nothing changed (`make ports` shows its URLs)")
        return 0
    sys.stdout.write(derive.format_ports(derive.redact(values, stack_services), stack_services))
    return 0


def named_urls(values: Mapping[str, str], stack_services: Mapping[str, Mapping[str, Any]], settings: Settings) -> None:
    """Route the copy's named URLs through the machine's proxy; if it cannot, say why in one line (numbered URLs still work)."""
    from .. import proxy

    try:
        proxy.publish(values, stack_services, settings)
    except StackError as exc:
        print(f"warning: named URLs are not served: {exc}", file=sys.stderr)


def client_args(values: Mapping[str, str], client: str) -> list[str]:
    """`exec <service> <client ...>`: a client (psql, redis-cli) inside the copy's own container, no password to copy."""
    from .. import kinds

    for name, svc in derive.services(Path(values["STACK_WORKTREE"])).items():
        kind = kinds.of(svc)
        if kind.client == client:
            tty = [] if sys.stdin.isatty() and sys.stdout.isatty() else ["-T"]
            return ["exec", *tty, name, *kind.client_command(values)]
    raise StackError(f"no service in stack.yml offers {client} (its kind has no such client)")


def main(argv: list[str] | None = None) -> int:
    """`python -m parallel_stacks {up,down,ps,logs,config,client}`: one compose command for this copy."""
    settings = Settings.read()
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down", "ps", "logs", "config", "client"], help="compose command to run for this copy")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="extra arguments passed to compose (client: its name first, e.g. psql)")
    parser.add_argument("--compose", default=None, help="compose command (default: $COMPOSE, else auto-detect)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: dispatch(settings, args.command, args.args, args.compose))


def dispatch(settings: Settings, command: str, extra: list[str], compose: str | None) -> int:
    """Run compose `command` for this copy (up and down under the worktree's operation lock; never on another worktree's copy)."""
    from .. import ownership

    values, env = derive.compose_environment(None, settings, claim=command == "up")  # only up claims an auto slot
    cmd = compose_command(settings, compose)
    root = Path(values["STACK_WORKTREE"])
    if command in ("up", "down"):
        from .. import oplock

        with oplock.hold(root, f"make {command} of {values['COMPOSE_PROJECT_NAME']}"):
            if command == "up":
                return up(settings, values, env, cmd, extra)
            ownership.ensure_owned(settings, values)  # another worktree's copy is never stopped from here
            code = run([*base_args(settings, cmd, values), "down", "--remove-orphans", *extra], env)
            if code == 0:
                from .. import proxy

                proxy.withdraw(values["COMPOSE_PROJECT_NAME"], values.get("NAMED_URLS_PORT", "off"), settings)
            return code
    if command in ("ps", "logs", "client"):
        ownership.ensure_owned(settings, values)  # nor shown or entered as if it were this one
    if command == "client":
        if not extra:
            raise StackError("which client? e.g. `python -m parallel_stacks client psql`")
        return run([*base_args(settings, cmd, values), *client_args(values, extra[0]), *extra[1:]], env)
    return run([*base_args(settings, cmd, values), command, *extra], env)
