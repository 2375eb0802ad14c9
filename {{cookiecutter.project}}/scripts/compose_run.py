#!/usr/bin/env python3
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

import stack_config
from stack_config import ROOT, StackError

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


def base_args(cmd: list[str], values: dict) -> list[str]:
    return [*cmd, "-p", values["COMPOSE_PROJECT_NAME"], "-f", str(ROOT / "compose.yaml"), "--project-directory", str(ROOT)]


def run(argv: list[str], env: dict) -> int:
    try:
        return subprocess.run(argv, env=env).returncode
    except FileNotFoundError:
        raise StackError(f"{argv[0]} not found") from None


def wait_healthy(project: str) -> None:
    """Compose v1 has no --wait: poll container health, bounded."""
    import docker_state

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


def required_images(cmd: list[str], values: dict, env: dict) -> dict[str, str]:
    """{image: service} of every image `up` needs and does not build (bases of builds included)."""
    import yaml

    proc = subprocess.run([*base_args(cmd, values), "config"], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise StackError(f"compose.yaml is not usable: {lines[-1]}")
    needed = {}
    for name, svc in (yaml.safe_load(proc.stdout).get("services") or {}).items():
        build = svc.get("build")
        if build:
            for key, value in ((build.get("args") or {}) if isinstance(build, dict) else {}).items():
                if key.endswith("_IMAGE") and value:
                    needed.setdefault(value, name)
        elif svc.get("image"):
            needed.setdefault(svc["image"], name)
    return needed


def ensure_images(cmd: list[str], values: dict, env: dict) -> None:
    """Pull what is missing before anything is created; one line if an image cannot be had."""
    import docker_state

    needed = required_images(cmd, values, env)
    for image in docker_state.missing_images(list(needed)):
        print(f"pulling {image} for service {needed[image]} (not on this machine yet)", file=sys.stderr, flush=True)
        try:
            docker_state.pull(image)
        except StackError as exc:
            raise StackError(
                f"image {image} (service {needed[image]}) is not on this machine and could not be pulled "
                f"({exc}); pull it, or point its *_IMAGE setting at an image you have"
            ) from None


def up(values: dict, env: dict, environ: dict, cmd: list[str], extra: list[str]) -> int:
    import check_ports
    import docker_state

    docker_state.check_ownership(values)
    check_ports.check(values, stack_config.services())
    if not values["POSTGRES_PASSWORD"]:
        for key, name in values.items():
            if key.endswith("_VOLUME") and docker_state.volume(name) is not None:
                raise StackError(
                    f"volume {name} holds a database set up with a password this worktree no longer has "
                    "(POSTGRES_PASSWORD is missing from env/local.env); restore it there, or `make nuke` to start over"
                )
    # images before the secret file: a copy that cannot start changes nothing
    ensure_images(cmd, values, {**env, "POSTGRES_PASSWORD": values["POSTGRES_PASSWORD"] or "unset"})
    stack_config.ensure_local_env(ROOT)
    values, env = stack_config.compose_environment(ROOT, environ)  # re-read: the password may be new
    v1 = is_v1(cmd)
    args = [*base_args(cmd, values), "up", "-d", "--build", "--remove-orphans"]
    if not v1:
        args += ["--wait", "--wait-timeout", str(WAIT_SECONDS)]
    code = run(args + extra, env)
    if code != 0:
        print(f"error: `compose up` failed for {values['COMPOSE_PROJECT_NAME']} (exit {code}); see `make logs`", file=sys.stderr)
        return code
    if v1:
        wait_healthy(values["COMPOSE_PROJECT_NAME"])
    sys.stdout.write(stack_config.format_ports(stack_config.redact(values), stack_config.services()))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="compose_run.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "ps", "logs", "config"], help="compose command to run for this copy")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="extra arguments passed to compose")
    parser.add_argument("--compose", default=None, help="compose command (default: $COMPOSE, else auto-detect)")
    args = parser.parse_args(argv)
    try:
        values, env = stack_config.compose_environment(ROOT, os.environ)
        cmd = compose_command(args.compose)
        if args.command in ("up", "down"):
            import oplock

            with oplock.hold(ROOT, f"make {args.command} of {values['COMPOSE_PROJECT_NAME']}"):
                if args.command == "up":
                    return up(values, env, dict(os.environ), cmd, args.args)
                return run([*base_args(cmd, values), "down", "--remove-orphans", *args.args], env)
        return run([*base_args(cmd, values), args.command, *args.args], env)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
