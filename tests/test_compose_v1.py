"""The generated project on a real Compose v1 (the old Python `docker-compose` 1.x).

compose_run.py falls back to `docker-compose` when `docker compose` (v2) is
missing, and COMPOSE=... selects a compose command outright. This runs a baked
project through both on a real v1, installed into its own virtualenv from
env/requirements-compose-v1.txt (build/venv-compose-v1, ~20 s the first time).
Without it: a skip locally, a failure under CI=true.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEMPLATE, Project, bake

pytestmark = pytest.mark.docker

REQUIREMENTS = TEMPLATE / "env" / "requirements-compose-v1.txt"
VENV = TEMPLATE / "build" / "venv-compose-v1"
OFFSET = 8000  # every port below the ephemeral range (32768+)
SLUG = "compose-v1-check"  # a name of its own: no other test's project or volume at this offset
PROJECT_LABEL = "com.docker.compose.project"
SERVICES = {"postgres", "redis", "mqtt", "api", "ui"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def install_v1() -> Path:
    """build/venv-compose-v1/bin/docker-compose, installed from the pinned requirements if missing or stale."""
    exe = VENV / "bin" / "docker-compose"
    marker = VENV / ".installed"
    wanted = REQUIREMENTS.read_text()
    if exe.exists() and marker.exists() and marker.read_text() == wanted:
        return exe
    pip = [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        # PyYAML<6 has no wheel for this Python and needs Cython<3 to build: no build isolation
        [*pip, "-c", str(REQUIREMENTS), "Cython", "wheel"],
        [*pip, "--no-build-isolation", "-r", str(REQUIREMENTS)],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"`{' '.join(step)}` failed ({proc.returncode}):\n{tail}")
    marker.write_text(wanted)
    return exe


@pytest.fixture(scope="module")
def compose_v1(docker_engine) -> Path:
    """The path of a working Compose v1; skip without one, fail under CI=true."""
    try:
        exe = install_v1()
        version = subprocess.run([str(exe), "version", "--short"], capture_output=True, text=True, timeout=60)
        if version.returncode != 0 or not version.stdout.strip().startswith("1."):
            raise RuntimeError(f"{exe} version --short: {version.stdout.strip()} {version.stderr.strip()}")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        message = f"Compose v1 could not be installed from {REQUIREMENTS.name}: {exc}"
        if in_ci():
            pytest.fail(message + "\nCI=true, so this is a failure, not a skip")
        pytest.skip(message)
    return exe


def labelled(kind: str, project: str) -> list[str]:
    """Ids/names of every container, volume or network carrying the compose project's label."""
    filt = ["--filter", f"label={PROJECT_LABEL}={project}"]
    args = ["ps", "-aq", *filt] if kind == "container" else [kind, "ls", "-q", *filt]
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.split()


def inspect(ids: list[str]) -> list[dict]:
    return json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout) if ids else []


def test_up_ps_nuke_on_compose_v1(tmp_path, image_env, compose_v1):
    project = Project(bake(tmp_path / "worktree", project_name="Compose V1 Check"), {**image_env, "PORT_OFFSET": str(OFFSET)})
    name = f"{SLUG}-{OFFSET}"
    assert project.values()["COMPOSE_PROJECT_NAME"] == name
    volume = project.values()["DB_DATA_VOLUME"]
    assert labelled("container", name) == [] and labelled("volume", name) == [], f"{name} exists already"
    try:
        out = project.make("up", COMPOSE=str(compose_v1))
        assert f"copy {name}" in out.stdout and "127.0.0.1:16003" in out.stdout

        records = inspect(labelled("container", name))
        assert {r["Config"]["Labels"]["com.docker.compose.service"] for r in records} == SERVICES
        for rec in records:
            labels = rec["Config"]["Labels"]
            # made by v1 (v2 would name it <project>-<service>-1), for this worktree, and healthy once `up` returned
            assert labels["com.docker.compose.version"].startswith("1."), (rec["Name"], labels)
            assert rec["Name"] == f"/{name}_{labels['com.docker.compose.service']}_1"
            assert os.path.realpath(labels["com.docker.compose.project.working_dir"]) == os.path.realpath(project.path)
            assert rec["State"]["Health"]["Status"] == "healthy", rec["Name"]

        listed = project.make("ps", COMPOSE=str(compose_v1)).stdout
        for service in SERVICES:
            row = next((ln for ln in listed.splitlines() if ln.startswith(f"{name}_{service}_1 ")), None)
            assert row is not None and "Up (healthy)" in row, listed

        doctor = project.make("doctor", check=False, COMPOSE=str(compose_v1), PARALLEL_STACKS_STATE_DIR=str(tmp_path / "state"))
        assert "compose: " in doctor.stdout and "1.29" in doctor.stdout, doctor.stdout

        nuked = project.make("nuke", FORCE="1")
        assert "removed 5 container(s), 1 network(s), 2 volume(s), " in nuked.stdout, nuked.stdout
        for kind in ("container", "volume", "network"):
            assert labelled(kind, name) == [], f"{kind}s of {name} left after nuke"
        assert subprocess.run(["docker", "volume", "inspect", volume], capture_output=True).returncode != 0
    finally:
        project.make("nuke", check=False, FORCE="1")
        # v1 tags what it builds <project>_<service>; these images are this test's alone
        subprocess.run(["docker", "image", "rm", f"{name}_api", f"{name}_ui"], capture_output=True)
