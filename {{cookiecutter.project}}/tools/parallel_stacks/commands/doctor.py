"""Check this copy's machine and settings; one line per check (ok, warn, FAIL).

Exit status 1 when any check fails, else 0 (warnings do not fail).
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from .. import derive
from ..basics import StackError
from ..config import project_root, read_env_file


class Report:
    def __init__(self) -> None:
        self.failed = False

    def line(self, level: str, topic: str, text: str) -> None:
        """Print one check's verdict (`ok`, `warn`, `FAIL`) and remember a failure."""
        self.failed |= level == "FAIL"
        print(f"{level:<5} {topic}: {text}")


def check_env_files(report: Report, root: Path) -> None:
    """Every env file (and .env.dynamic) parses; a line that does not is named."""
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


def check_inherited(report: Report, values: Mapping[str, str], environ: Mapping[str, str]) -> None:
    """Shell variables that disagree with the computed ones (a stale export from another worktree)."""
    clashes = [
        f"{key}={environ[key]} (computed {values[key]})"
        for key in values
        if (key == "COMPOSE_PROJECT_NAME" or key.endswith("_PORT")) and key in environ and environ[key] != values[key]
    ]
    if clashes:
        report.line("warn", "shell", "inherited " + ", ".join(clashes) + "; make ignores them, but tools you run by hand may not")
    else:
        report.line("ok", "shell", "no inherited COMPOSE_PROJECT_NAME or *_PORT disagrees")


def check_remote_bind(report: Report, values: Mapping[str, str]) -> None:
    """A copy on another host bound to that host's loopback is reachable from that host only."""
    import ipaddress

    if values.get("STACK_ENGINE", "local") == "local":
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


def check_compose_files(report: Report, cmd: list[str], environ: Mapping[str, str]) -> None:
    """The compose files this copy uses exist and `compose config` accepts them, with this copy's variables."""
    from ..config import compose_variables, load_stack
    from . import compose as compose_run

    values, env = derive.compose_environment(None, environ)
    root = Path(values["STACK_WORKTREE"])
    if compose_variables(load_stack(root / "stack.yml")) is None:  # a baked compose file requires secrets `make up` writes first
        env = {**env, **{key: "unset" for key in derive.secret_keys(derive.services(root)) if not values.get(key)}}
    files = compose_run.compose_files(values)
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        report.line("FAIL", "compose files", f"{', '.join(missing)} (stack.yml) does not exist")
        return
    proc = subprocess.run([*compose_run.base_args(cmd, values), "config", "--quiet"], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        report.line("FAIL", "compose files", f"{compose_run.files_text(values)}: compose refuses them: {lines[-1]}")
    else:
        report.line("ok", "compose files", f"{compose_run.files_text(values)} accepted by compose")


def main(argv: list[str] | None = None) -> int:
    """`make doctor`: what is wrong with this copy's setup, one line per check; exit 1 if any check failed."""
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks doctor", description=__doc__.splitlines()[0])
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = Report()
    environ = os.environ
    try:
        root = project_root()
        values = derive.load(root, environ)
        services = derive.services(root)
        report.line(
            "ok",
            "config",
            f"stack.yml valid; copy {values['COMPOSE_PROJECT_NAME']}, PORT_OFFSET={values['PORT_OFFSET']} from {values['PORT_OFFSET_SOURCE']}",
        )
    except StackError as exc:
        report.line("FAIL", "config", str(exc))
        return 1
    check_env_files(report, root)
    check_inherited(report, values, environ)
    check_remote_bind(report, values)

    from .. import engine as docker_state
    from .. import probe as check_ports

    running = None
    try:
        version = docker_state.docker("version", "--format", "{{.Server.Version}}").strip()
        where = (
            "on this machine"
            if values.get("STACK_ENGINE", "local") == "local"
            else f"at {values['STACK_ENGINE']} (host {values.get('STACK_HOST')})"
        )
        report.line("ok", "engine", f"Docker {version} reachable, {where}")
        running = docker_state.running_containers()
    except StackError as exc:
        report.line("FAIL", "engine", str(exc))
    try:
        from . import compose as compose_run

        cmd = compose_run.compose_command()
        out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=30).stdout.strip()
        report.line("ok", "compose", f"{' '.join(cmd)} {out}")
        check_compose_files(report, cmd, environ)
    except StackError as exc:
        report.line("FAIL", "compose", str(exc))

    try:
        check_ports.check(values, services, running)
        report.line("ok", "ports", "every port free or already this copy's")
    except StackError as exc:
        report.line("FAIL", "ports", str(exc))

    from .. import registry

    inside, low, high = check_ports.ephemeral_ports(values, services)
    if inside:
        report.line(
            "warn", "ephemeral", f"ports {inside} lie in the kernel's ephemeral range {low}-{high}: outgoing connections may take them"
        )
    else:
        report.line("ok", "ephemeral", f"no port in the ephemeral range {low}-{high}")

    try:
        from . import fleet

        with registry.Registry(registry.state_dir(environ)) as reg:
            claims = dict(reg.claims)
        copies = fleet.docker_copies() if running is not None else None
        stale = fleet.stale_claims(claims, copies, time.time())
        if stale:
            report.line(
                "warn", "registry", f"{len(stale)} stale claim(s) of {len(claims)}: `make gc` lists them, `make gc FORCE=1` frees them"
            )
        else:
            report.line("ok", "registry", f"{len(claims)} claim(s), none stale")
    except StackError as exc:
        report.line("warn", "registry", str(exc))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
