"""Run `docker compose` for this copy: its project name, ports and volumes.

`up` checks ownership and ports first, starts everything with --wait and
prints the copy's URLs; other commands pass straight through.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import derive
from ..basics import StackError
from ..composecli import (
    LEGACY_INTERVAL,
    base_args,
    built_images,
    compose_command,
    compose_config_text,
    compose_version,
    is_v1,
    required_images,
    run_files,
    start_interval_missing,
)
from ..model import Copy
from ..runner import run as run_command
from ..settings import Settings

WAIT_SECONDS = 180
POOLS_EXHAUSTED = "could not find an available, non-overlapping IPv4 address pool"  # the engine's words, Engine 20-28


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
    copy: Copy,
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
        return run([*base_args(settings, cmd, copy), "build", *(only or [])], env)
    code, output = quiet([*base_args(settings, cmd, copy), "build", "--quiet", *(only or [])], env)
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


def up(settings: Settings, copy: Copy, env: Mapping[str, str], cmd: list[str], extra: list[str]) -> int:
    """`make up`: check ownership, ports, volumes and images, claim what it needs, build, start, wait until healthy, publish the named URLs; nothing created when a check fails."""
    from .. import engine as docker_state
    from .. import ownership, upstate
    from .. import probe as check_ports
    from ..config import compose_variables, data_dirs, load_stack
    from ..localenv import ensure_local_env

    project = copy.env["COMPOSE_PROJECT_NAME"]
    root = Path(copy.env["STACK_WORKTREE"])
    stack_services = derive.services(root)
    missing = [key for key in derive.secret_keys(stack_services) if not copy.env.get(key)]
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
    read_by_config = upstate.config_key(cmd, compose_version(cmd), run_files(settings, cmd, copy), env) if quick else None
    if not missing and quick:
        # a copy that is up, healthy and started from exactly these inputs: nothing for compose to do (upstate.py)
        ownership.ensure_owned(settings, copy)
        model = upstate.remembered_model(copy, read_by_config, settings)
        if model is None:
            config_text, config = compose_config_text(settings, cmd, copy, env)
            model = upstate.model_of(config_text, config)
        digest = upstate.inputs_digest(settings, cmd, model)
        if upstate.unchanged(copy, digest, model, settings, "_" if is_v1(cmd) else "-"):
            named_urls(copy, stack_services, settings)
            print(f"{project} is already up and healthy; nothing changed (`make ports` shows its URLs)")
            return 0
    records = ownership.check_ownership(settings, copy)
    check_ports.check(settings, copy, stack_services)
    locked = [key for key in derive.secret_keys(stack_services, stored=True) if key in missing]
    if locked:
        for key, name in copy.env.items():
            if key.endswith("_VOLUME") and docker_state.volume(settings, name) is not None:
                raise StackError(
                    f"volume {name} holds data set up with a secret this worktree no longer has "
                    f"({', '.join(locked)} {'is' if len(locked) == 1 else 'are'} missing from env/local.env); restore it there, or `make nuke` to start over"
                )
    # images before the secret file: a copy that cannot start changes nothing
    adopted = compose_variables(load_stack(root / "stack.yml")) is not None
    if not config or missing:  # (the quick check above may have asked already, or answered from its stamp)
        # (a baked compose file requires its secrets; an adopted one reads the team's own, never ours)
        config_text, config = compose_config_text(settings, cmd, copy, env if adopted else {**env, **{key: "unset" for key in missing}})
        model = upstate.model_of(config_text, config)
    selected = selected_services(config, settings.get("SERVICES"))
    if selected:
        config = {**config, "services": {n: s for n, s in (config.get("services") or {}).items() if n in selected}}
    ensure_images(settings, required_images(config))
    ensure_local_env(root, copy.env["STACK_ENV"])
    copy, env = derive.compose_environment(root, settings, claim=True)  # re-read: a secret may be new
    for variable in data_dirs(load_stack(root / "stack.yml")):
        Path(copy.env[variable]).mkdir(parents=True, exist_ok=True)  # the copy's own data directories, under the repository
    if quick and missing:  # a new secret: what compose reads, and so its answer, changed
        read_by_config = upstate.config_key(cmd, compose_version(cmd), run_files(settings, cmd, copy), env)
        config_text, full = compose_config_text(settings, cmd, copy, env)
        model = upstate.model_of(config_text, full)
    digest = upstate.inputs_digest(settings, cmd, model) if quick and model is not None else None  # images pulled by now
    upstate.forget(copy, settings)  # what runs from here on is not what the stamp says
    before = snapshot(records)  # the ownership check's records: under the operation lock nothing has changed them
    code = build(settings, cmd, copy, env, built_images(config, copy), sorted(n for n in selected if config["services"][n].get("build")))
    if code != 0:
        print(f"error: building the images of {project} failed (exit {code}); the output above says why", file=sys.stderr)
        return code
    v1 = is_v1(cmd)
    args = [*base_args(settings, cmd, copy), "up", "-d", "--remove-orphans"]
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
        upstate.record(copy, digest, settings, read_by_config, model)
    named_urls(copy, stack_services, settings)
    if before and snapshot(docker_state.containers(settings, project)) == before:
        print(f"{project} is already up and healthy; nothing changed (`make ports` shows its URLs)")
        return 0
    sys.stdout.write(derive.format_ports(derive.redact(copy.env, stack_services), stack_services))
    return 0


def named_urls(copy: Copy, stack_services: Mapping[str, Mapping[str, Any]], settings: Settings) -> None:
    """Route the copy's named URLs through the machine's proxy; if it cannot, say why in one line (numbered URLs still work)."""
    from .. import proxy

    try:
        proxy.publish(copy, stack_services, settings)
    except StackError as exc:
        print(f"warning: named URLs are not served: {exc}", file=sys.stderr)


def client_args(copy: Copy, client: str) -> list[str]:
    """`exec <service> <client ...>`: a client (psql, redis-cli) inside the copy's own container, no password to copy."""
    from .. import kinds

    for name, svc in derive.services(Path(copy.env["STACK_WORKTREE"])).items():
        kind = kinds.of(svc)
        if kind.client == client:
            tty = [] if sys.stdin.isatty() and sys.stdout.isatty() else ["-T"]
            return ["exec", *tty, name, *kind.client_command(copy)]
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

    copy, env = derive.compose_environment(None, settings, claim=command == "up")  # only up claims an auto slot
    cmd = compose_command(settings, compose)
    root = copy.worktree
    if command in ("up", "down"):
        from .. import oplock

        with oplock.hold(root, f"make {command} of {copy.compose_project}"):
            if command == "up":
                return up(settings, copy, env, cmd, extra)
            ownership.ensure_owned(settings, copy)  # another worktree's copy is never stopped from here
            code = run([*base_args(settings, cmd, copy), "down", "--remove-orphans", *extra], env)
            if code == 0:
                from .. import proxy

                proxy.withdraw(copy.compose_project, copy.named_urls_port, settings)
            return code
    if command in ("ps", "logs", "client"):
        ownership.ensure_owned(settings, copy)  # nor shown or entered as if it were this one
    if command == "client":
        if not extra:
            raise StackError("which client? e.g. `python -m parallel_stacks client psql`")
        return run([*base_args(settings, cmd, copy), *client_args(copy, extra[0]), *extra[1:]], env)
    return run([*base_args(settings, cmd, copy), command, *extra], env)
