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

WAIT_SECONDS = 180


def compose_command(configured: str | None = None) -> list[str]:
    """COMPOSE if set, else `docker compose` (v2), else `docker-compose` (v1)."""
    configured = (configured if configured is not None else os.environ.get("COMPOSE", "")).strip()
    if configured:
        return shlex.split(configured)
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    except (FileNotFoundError, subprocess.TimeoutExpired):
        pass
    import shutil

    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StackError("neither `docker compose` (v2) nor `docker-compose` (v1) was found; install Docker Compose")


def is_v1(cmd: list[str]) -> bool:
    proc = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and proc.stdout.strip().lstrip("v").startswith("1.")


def compose_files(values: Mapping[str, str]) -> list[Path]:
    """The compose files this copy runs with: stack.yml's `compose.files` (an adopted project), else compose.yaml."""
    from ..config import compose_files as files_of
    from ..config import load_stack

    root = Path(values["STACK_WORKTREE"])
    return files_of(load_stack(root / "stack.yml"), root)


def base_args(cmd: list[str], values: Mapping[str, str]) -> list[str]:
    """`compose -p <copy> -f <file>... [--profile <p>...] --project-directory <worktree>`: exactly the project's file set."""
    from ..config import compose_profiles, load_stack

    root = values["STACK_WORKTREE"]
    args = [*cmd, "-p", values["COMPOSE_PROJECT_NAME"]]
    for path in compose_files(values):
        args += ["-f", str(path)]
    for profile in compose_profiles(load_stack(Path(root) / "stack.yml")):
        args += ["--profile", profile]
    return [*args, "--project-directory", root]


def files_text(values: Mapping[str, str]) -> str:
    return " + ".join(str(p.relative_to(values["STACK_WORKTREE"])) for p in compose_files(values))


def run(argv: list[str], env: Mapping[str, str]) -> int:
    try:
        return subprocess.run(argv, env=env).returncode
    except FileNotFoundError:
        raise StackError(f"{argv[0]} not found") from None


def wait_healthy(project: str) -> None:
    """Compose v1 has no --wait: poll container health, bounded."""
    from .. import engine as docker_state

    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        states = []
        for rec in docker_state.containers(project):
            state = rec.get("State", {})
            states.append((state.get("Health") or {}).get("Status", "healthy" if state.get("Running") else "down"))
        if states and all(s == "healthy" for s in states):
            return
        time.sleep(1)
    raise StackError(f"{project} did not become healthy within {WAIT_SECONDS} s; see `make logs`")


def compose_config(cmd: list[str], values: Mapping[str, str], env: Mapping[str, str]) -> dict[str, Any]:
    """The resolved compose model (`compose config`), or one StackError line."""
    import yaml

    missing = [p for p in compose_files(values) if not p.is_file()]
    if missing:
        raise StackError(f"compose file {missing[0].name} (stack.yml) does not exist in {values['STACK_WORKTREE']}")
    proc = subprocess.run([*base_args(cmd, values), "config"], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise StackError(f"{files_text(values)} is not usable: {lines[-1]}")
    return yaml.safe_load(proc.stdout) or {}


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


def ensure_images(needed: dict[str, str]) -> None:
    """Pull what is missing before anything is created; one line if an image cannot be had."""
    from .. import engine as docker_state

    for image in docker_state.missing_images(list(needed)):
        print(f"pulling {image} for service {needed[image]} (not on this machine yet)", file=sys.stderr, flush=True)
        try:
            docker_state.pull(image)
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
    tail = output.rstrip().splitlines()[-lines:]
    if tail:
        print("\n".join(tail), file=sys.stderr)


def build(cmd: list[str], values: Mapping[str, str], env: Mapping[str, str], images: dict[str, str], only: list[str] | None = None) -> int:
    """Build this copy's images (`only`: of those services): progress shown for a first build, otherwise quiet unless it fails."""
    from .. import engine as docker_state

    if not images:
        return 0
    missing = docker_state.missing_images(list(images))
    if missing:
        names = ", ".join(images[i] for i in missing)
        print(f"building images for {names} (first build of this copy; later ones are quiet)", file=sys.stderr, flush=True)
        return run([*base_args(cmd, values), "build", *(only or [])], env)
    code, output = quiet([*base_args(cmd, values), "build", "--quiet", *(only or [])], env)
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


def up(values: Mapping[str, str], env: Mapping[str, str], environ: Mapping[str, str], cmd: list[str], extra: list[str]) -> int:
    from .. import engine as docker_state
    from .. import ownership
    from .. import probe as check_ports
    from ..config import compose_variables, data_dirs, load_stack
    from ..localenv import ensure_local_env

    project = values["COMPOSE_PROJECT_NAME"]
    root = Path(values["STACK_WORKTREE"])
    records = ownership.check_ownership(values)
    stack_services = derive.services(root)
    check_ports.check(values, stack_services)
    missing = [key for key in derive.secret_keys(stack_services) if not values.get(key)]
    locked = [key for key in derive.secret_keys(stack_services, stored=True) if key in missing]
    if locked:
        for key, name in values.items():
            if key.endswith("_VOLUME") and docker_state.volume(name) is not None:
                raise StackError(
                    f"volume {name} holds data set up with a secret this worktree no longer has "
                    f"({', '.join(locked)} {'is' if len(locked) == 1 else 'are'} missing from env/local.env); restore it there, or `make nuke` to start over"
                )
    # images before the secret file: a copy that cannot start changes nothing
    adopted = compose_variables(load_stack(root / "stack.yml")) is not None
    # (a baked compose file requires its secrets; an adopted one reads the team's own, never ours)
    config = compose_config(cmd, values, env if adopted else {**env, **{key: "unset" for key in missing}})
    selected = selected_services(config, environ.get("SERVICES", ""))
    if selected:
        config = {**config, "services": {n: s for n, s in (config.get("services") or {}).items() if n in selected}}
    ensure_images(required_images(config))
    ensure_local_env(root)
    values, env = derive.compose_environment(root, environ, claim=True)  # re-read: a secret may be new
    for variable in data_dirs(load_stack(root / "stack.yml")):
        Path(values[variable]).mkdir(parents=True, exist_ok=True)  # the copy's own data directories, under the repository
    before = snapshot(records)  # the ownership check's records: under the operation lock nothing has changed them
    code = build(cmd, values, env, built_images(config, values), sorted(n for n in selected if config["services"][n].get("build")))
    if code != 0:
        print(f"error: building the images of {project} failed (exit {code}); the output above says why", file=sys.stderr)
        return code
    v1 = is_v1(cmd)
    args = [*base_args(cmd, values), "up", "-d", "--remove-orphans"]
    if not v1:
        args += ["--wait", "--wait-timeout", str(WAIT_SECONDS)]
    if not before:
        print(f"starting {project}; back when every service is healthy (at most {WAIT_SECONDS} s)", file=sys.stderr, flush=True)
    code, output = quiet(args + extra + sorted(selected), env)
    if code != 0:
        show_tail(output)
        print(f"error: `compose up` failed for {project} (exit {code}); see the output above and `make logs`", file=sys.stderr)
        return code
    if v1:
        wait_healthy(project)
    named_urls(values, stack_services, environ)
    if before and snapshot(docker_state.containers(project)) == before:
        print(f"{project} is already up and healthy; nothing changed (`make ports` shows its URLs)")
        return 0
    sys.stdout.write(derive.format_ports(derive.redact(values, stack_services), stack_services))
    return 0


def named_urls(values: Mapping[str, str], stack_services: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]) -> None:
    """Route the copy's named URLs through the machine's proxy; if it cannot, say why in one line (numbered URLs still work)."""
    from .. import proxy

    try:
        proxy.publish(values, stack_services, environ)
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
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down", "ps", "logs", "config", "client"], help="compose command to run for this copy")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="extra arguments passed to compose (client: its name first, e.g. psql)")
    parser.add_argument("--compose", default=None, help="compose command (default: $COMPOSE, else auto-detect)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: dispatch(args.command, args.args, args.compose))


def dispatch(command: str, extra: list[str], compose: str | None) -> int:
    from .. import ownership

    values, env = derive.compose_environment(None, os.environ, claim=command == "up")  # only up claims an auto slot
    cmd = compose_command(compose)
    root = Path(values["STACK_WORKTREE"])
    if command in ("up", "down"):
        from .. import oplock

        with oplock.hold(root, f"make {command} of {values['COMPOSE_PROJECT_NAME']}"):
            if command == "up":
                return up(values, env, dict(os.environ), cmd, extra)
            ownership.ensure_owned(values)  # another worktree's copy is never stopped from here
            code = run([*base_args(cmd, values), "down", "--remove-orphans", *extra], env)
            if code == 0:
                from .. import proxy

                proxy.withdraw(values["COMPOSE_PROJECT_NAME"], values.get("NAMED_URLS_PORT", "off"), os.environ)
            return code
    if command in ("ps", "logs", "client"):
        ownership.ensure_owned(values)  # nor shown or entered as if it were this one
    if command == "client":
        if not extra:
            raise StackError("which client? e.g. `python -m parallel_stacks client psql`")
        return run([*base_args(cmd, values), *client_args(values, extra[0]), *extra[1:]], env)
    return run([*base_args(cmd, values), command, *extra], env)
