"""Shared fixtures: the template's paths, the helper modules, Docker, bakes."""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parent.parent
PROJECT_TEMPLATE = TEMPLATE / "{{cookiecutter.project}}"
SCRIPTS = PROJECT_TEMPLATE / "scripts"
OFFLINE_PREFIX = "parallel-stacks-offline"

# The generated project's helpers contain no template tags: import them as-is.
sys.path.insert(0, str(SCRIPTS))

# A small project of the default shape, for unit tests of the helpers.
TEST_STACK_YML = """\
project: shop
services:
  postgres: {kind: postgres, container_port: 5432, host_port: 5432, volumes: [db_data]}
  redis: {kind: redis, container_port: 6379, host_port: 6379}
  api: {kind: http, container_port: 8003, host_port: 8003}
  ui: {kind: http, container_port: 3000, host_port: 3000}
"""


@pytest.fixture(scope="session", autouse=True)
def own_slot_registry(tmp_path_factory):
    """The suite's PORT_OFFSET=auto / task-id claims go to a registry of its own, never the user's."""
    if "PARALLEL_STACKS_STATE_DIR" not in os.environ:
        os.environ["PARALLEL_STACKS_STATE_DIR"] = str(tmp_path_factory.mktemp("slot-registry"))
    yield os.environ["PARALLEL_STACKS_STATE_DIR"]


def make_worktree(root: Path, dev_env: str = "POSTGRES_USER=app\n") -> Path:
    """A minimal project directory: stack.yml and env/dev.env."""
    (root / "env").mkdir(parents=True)
    (root / "stack.yml").write_text(TEST_STACK_YML)
    (root / "env" / "dev.env").write_text(dev_env)
    return root


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
    for var, kind in (("POSTGRES_IMAGE", "postgres"), ("REDIS_IMAGE", "redis"), ("PYTHON_IMAGE", "python")):
        name = f"{OFFLINE_PREFIX}/{kind}:bookworm"
        found = subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0
        if found:
            env[var] = name
    return env


def bake(output_dir: Path, **answers) -> Path:
    """Bake the template with --no-input (plus answers); return the project dir."""
    from cookiecutter.main import cookiecutter

    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output_dir), extra_context=answers))


class Project:
    """A baked project and a way to run its Makefile like a user would."""

    def __init__(self, path: Path, base_env: dict):
        self.path = path
        self.base_env = base_env

    INHERITED = ("PORT_OFFSET", "COMPOSE_PROJECT_NAME", "ENV", "STACK_ENV", "TASK_ID", "ZENFLOW_TASK_ID",
                 "CI_BUILD_NUMBER", "BUILD_NUMBER", "CI_JOB_ID", "GITHUB_RUN_ID")

    def environment(self, **env) -> dict:
        """The caller's environment without copy-selecting values, then base_env, then `env`."""
        full = {k: v for k, v in os.environ.items() if k not in self.INHERITED}
        return {**full, "PYTHON": sys.executable, **self.base_env, **{k: str(v) for k, v in env.items()}}

    def make(self, *targets, check=True, timeout=600, **env) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["make", *targets], cwd=self.path, env=self.environment(**env), capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"make {' '.join(targets)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def values(self, **env) -> dict:
        from dotenv import dotenv_values
        import io

        out = self.make("env", SHOW_SECRETS="1", **env).stdout
        return dict(dotenv_values(stream=io.StringIO(out)))


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
