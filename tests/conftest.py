"""Shared fixtures: the template's paths, the helper modules, Docker, bakes."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from bakery import OFFLINE_PREFIX, PACKAGE, PROJECT_TEMPLATE, TEMPLATE, TEST_STACK_YML, Project, bake, make_worktree  # noqa: F401  (the tests import them from here)


@pytest.fixture(scope="session", autouse=True)
def own_slot_registry(tmp_path_factory):
    """The suite's PORT_OFFSET=auto / task-id claims go to a registry of its own, never the user's."""
    if "PARALLEL_STACKS_STATE_DIR" not in os.environ:
        os.environ["PARALLEL_STACKS_STATE_DIR"] = str(tmp_path_factory.mktemp("slot-registry"))
    yield os.environ["PARALLEL_STACKS_STATE_DIR"]


def docker_ok() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine():
    """A reachable Docker engine: skip locally without one, fail under CI=true."""
    if not docker_ok():
        message = "no Docker engine answers `docker info` (see README: Prerequisites)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI=true, so this is a failure, not a skip")
        pytest.skip(message)
    return True


@pytest.fixture(scope="session")
def image_env(docker_engine) -> dict:
    """Image overrides: the offline stand-ins when built here, else the official images."""
    env = {}
    for var, kind in (("POSTGRES_IMAGE", "postgres"), ("REDIS_IMAGE", "redis"), ("MOSQUITTO_IMAGE", "mosquitto"), ("PYTHON_IMAGE", "python")):
        name = f"{OFFLINE_PREFIX}/{kind}:bookworm"
        found = subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0
        if found:
            env[var] = name
    return env


@contextmanager
def running_copies(directory: Path, image_env: dict, offsets):
    """Bake one project into `directory`, `make up` a copy per offset; nuke them all afterwards.

    Yields (project, {offset: values as `make env` prints them}).
    """
    project = Project(bake(directory), image_env)
    try:
        for offset in offsets:
            project.make("up", PORT_OFFSET=offset)
        yield project, {offset: project.values(PORT_OFFSET=offset) for offset in offsets}
    finally:
        for offset in offsets:
            project.make("nuke", check=False, PORT_OFFSET=offset, FORCE="1")


def one_error_line(stderr: str) -> str:
    """The single `error: ...` line a failing helper must print; fails if there are 0 or 2+."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one error line, got {len(errors)}:\n{stderr}"
    return errors[0]


def docker_snapshot() -> dict:
    """Every container, volume and network on the engine (ids/names)."""
    def lines(*args):
        return sorted(subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.split())

    return {
        "containers": lines("ps", "-aq", "--no-trunc"),
        "volumes": lines("volume", "ls", "-q"),
        "networks": lines("network", "ls", "-q", "--no-trunc"),
    }
