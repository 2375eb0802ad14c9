"""Check this copy's machine and settings; one line per check (ok, warn, FAIL).

Exit status 1 when any check fails, else 0 (warnings do not fail).
"""

from __future__ import annotations

import argparse
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import derive
from ..basics import StackError
from ..config import project_root, read_env_file
from ..model import Copy
from ..settings import Settings


class Report:
    """The verdicts printed so far, and whether any failed."""

    def __init__(self) -> None:
        self.failed = False

    def line(self, level: str, topic: str, text: str) -> None:
        """Print one check's verdict (`ok`, `warn`, `FAIL`) and remember a failure."""
        self.failed |= level == "FAIL"
        print(f"{level:<5} {topic}: {text}")


@dataclass
class Checked:
    """What every check looks at: this copy's values and services, the environment, and what the engine said."""

    root: Path
    copy: Copy
    services: dict[str, Any]
    settings: Settings
    running: list[dict[str, Any]] | None = None  # the engine's running containers; None: it did not answer
    compose: list[str] | None = None  # the compose command; None: none found


def check_env_files(report: Report, c: Checked) -> None:
    """Every env file (and .env.dynamic) parses; a line that does not is named."""
    root = c.root
    files = sorted((root / "env").glob("*.env")) + ([root / ".env.dynamic"] if (root / ".env.dynamic").exists() else [])
    for path in files:
        try:
            read_env_file(path)
        except StackError as exc:
            report.line("FAIL", "env files", str(exc))
            return
    report.line("ok", "env files", f"{len(files)} parse cleanly")
    local = root / "env" / "local.env"
    if local.exists() and stat.S_IMODE(local.stat().st_mode) & 0o077:
        report.line("warn", "secrets", f"{local.relative_to(root)} is readable by others (chmod 600 it)")


def check_inherited(report: Report, c: Checked) -> None:
    """Shell variables that disagree with the computed ones (a stale export from another worktree)."""
    derived, shell = c.copy.env, c.settings.layer
    clashes = [
        f"{key}={shell(key)} (computed {derived[key]})"
        for key in derived
        if (key == "COMPOSE_PROJECT_NAME" or key.endswith("_PORT")) and shell(key) not in (None, derived[key])
    ]
    if clashes:
        report.line("warn", "shell", "inherited " + ", ".join(clashes) + "; make ignores them, but tools you run by hand may not")
    else:
        report.line("ok", "shell", "no inherited COMPOSE_PROJECT_NAME or *_PORT disagrees")


def check_remote_bind(report: Report, c: Checked) -> None:
    """A copy on another host bound to that host's loopback is reachable from that host only."""
    import ipaddress

    values = c.copy.env
    if not c.copy.remote:
        return
    if ipaddress.ip_address(values["BIND_ADDRESS"]).is_loopback:
        report.line(
            "warn",
            "bind",
            f"the engine is on {values.get('STACK_HOST')} but ports bind to its {values['BIND_ADDRESS']}: only that host reaches them "
            "(set BIND_ADDRESS=0.0.0.0, or its address, in env/local.env; or tunnel with ssh -L)",
        )
    else:
        report.line("ok", "bind", f"ports published on {values['BIND_ADDRESS']} of {values.get('STACK_HOST')}")


def check_engine(report: Report, c: Checked) -> None:
    """The engine answers (which one, and where); its running containers are kept for the checks after it."""
    from .. import engine as docker_state

    try:
        version = docker_state.docker(c.settings, "version", "--format", "{{.Server.Version}}").strip()
        local = not c.copy.remote
        where = "on this machine" if local else f"at {c.copy.engine} (host {c.copy.env.get('STACK_HOST')})"
        report.line("ok", "engine", f"Docker {version} reachable, {where}")
        c.running = docker_state.running_containers(c.settings)
    except StackError as exc:
        report.line("FAIL", "engine", str(exc))


def check_compose(report: Report, c: Checked) -> None:
    """A compose command exists (v2 plugin, or v1), and which version."""
    from .. import composecli as compose_run

    try:
        cmd = compose_run.compose_command(c.settings)
        out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=30).stdout.strip()
        report.line("ok", "compose", f"{' '.join(cmd)} {out}")
        c.compose = cmd
    except StackError as exc:
        report.line("FAIL", "compose", str(exc))


def check_compose_files(report: Report, c: Checked) -> None:
    """The compose files this copy uses exist and `compose config` accepts them, with this copy's variables."""
    from .. import composecli as compose_run
    from ..config import compose_variables, load_stack

    if c.compose is None:
        return  # check_compose said why
    try:
        copy, env = derive.compose_environment(None, c.settings)
        root = copy.worktree
        if compose_variables(load_stack(root / "stack.yml")) is None:  # a baked compose file requires secrets `make up` writes first
            env = {**env, **{key: "unset" for key in derive.secret_keys(derive.services(root)) if not copy.env.get(key)}}
        missing = [p.name for p in compose_run.compose_files(copy) if not p.is_file()]
        if missing:
            report.line("FAIL", "compose files", f"{', '.join(missing)} (stack.yml) does not exist")
            return
        args = [*compose_run.base_args(c.settings, c.compose, copy), "config", "--quiet"]
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    except (StackError, OSError, subprocess.TimeoutExpired) as exc:
        report.line("FAIL", "compose files", str(exc) or type(exc).__name__)
        return
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        report.line("FAIL", "compose files", f"{compose_run.files_text(copy)}: compose refuses them: {lines[-1]}")
    else:
        report.line("ok", "compose files", f"{compose_run.files_text(copy)} accepted by compose")


def check_ports(report: Report, c: Checked) -> None:
    """Every host port of the copy is free, or already this copy's."""
    from .. import probe

    try:
        probe.check(c.settings, c.copy, c.services, c.running)
        report.line("ok", "ports", "every port free or already this copy's")
    except StackError as exc:
        report.line("FAIL", "ports", str(exc))


def check_ephemeral(report: Report, c: Checked) -> None:
    """No port of the copy lies where the kernel picks outgoing connections' ports."""
    from .. import probe

    inside, low, high = probe.ephemeral_ports(c.copy)
    if inside:
        report.line(
            "warn", "ephemeral", f"ports {inside} lie in the kernel's ephemeral range {low}-{high}: outgoing connections may take them"
        )
    else:
        report.line("ok", "ephemeral", f"no port in the ephemeral range {low}-{high}")


def check_registry(report: Report, c: Checked) -> None:
    """The slot registry reads, and how many of its claims are stale (read-only: doctor changes nothing)."""
    from .. import fleet
    from ..registry import store

    try:
        with store.Registry(c.settings, write=False) as reg:
            claims = dict(reg.claims)
        copies = fleet.docker_copies(c.settings) if c.running is not None else None
        stale = fleet.stale_claims(c.settings, claims, copies, time.time())
        if stale:
            report.line(
                "warn", "registry", f"{len(stale)} stale claim(s) of {len(claims)}: `make gc` lists them, `make gc FORCE=1` frees them"
            )
        else:
            report.line("ok", "registry", f"{len(claims)} claim(s), none stale")
    except StackError as exc:
        report.line("warn", "registry", str(exc))


# In this order: the engine's and compose's answers are kept for the checks after them.
CHECKS: list[Callable[[Report, Checked], None]] = [
    check_env_files,
    check_inherited,
    check_remote_bind,
    check_engine,
    check_compose,
    check_compose_files,
    check_ports,
    check_ephemeral,
    check_registry,
]


def main(argv: list[str] | None = None) -> int:
    """`make doctor`: what is wrong with this copy's setup, one line per check; exit 1 if any check failed."""
    settings = Settings.read()
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks doctor", description=__doc__.splitlines()[0])
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = Report()
    try:
        root = project_root(settings)
        values = derive.load(root, settings)
        checked = Checked(root, Copy.of(values, derive.services(root)), derive.services(root), settings)
        report.line(
            "ok",
            "config",
            f"stack.yml valid; copy {values['COMPOSE_PROJECT_NAME']}, PORT_OFFSET={values['PORT_OFFSET']} from {values['PORT_OFFSET_SOURCE']}",
        )
    except StackError as exc:
        report.line("FAIL", "config", str(exc))
        return 1
    for check in CHECKS:
        check(report, checked)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
