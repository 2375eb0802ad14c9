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


@pytest.fixture(scope="session", autouse=True)
def own_named_url_proxy():
    """The suite's copies get their named URLs from a proxy of its own (port 17355), never the user's on 7355."""
    os.environ.setdefault("NAMED_URLS_PORT", "17355")
    yield os.environ["NAMED_URLS_PORT"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (scripts/provision-browser.sh installs it): skip locally without it, fail under CI=true."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not path:
        message = "no Chromium on PATH (bash scripts/provision-browser.sh installs Debian's)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI=true, so this is a failure, not a skip")
        pytest.skip(message)
    return path


def browser_dom(chromium: str, url: str, tmp_path: Path) -> str:
    """The DOM of `url` after its scripts ran, as headless Chromium renders it (it resolves *.localhost to loopback)."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", "--dump-dom",
    ]
    proc = subprocess.run([chromium, *flags, url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


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
    for var, kind in (("POSTGRES_IMAGE", "postgres"), ("REDIS_IMAGE", "redis"), ("MOSQUITTO_IMAGE", "mosquitto"), ("CADDY_IMAGE", "caddy"), ("PYTHON_IMAGE", "python")):
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
