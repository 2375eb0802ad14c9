"""Baking the template and driving a baked project's Makefile: shared by the
template's tests (tests/conftest.py), `make bench` and `make soak`, so none of
them imports another's files. On the path through pytest.ini's `pythonpath`
and the Makefile's PYTHONPATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
PROJECT_TEMPLATE = TEMPLATE / "{{cookiecutter.project}}"
PACKAGE = PROJECT_TEMPLATE / "tools" / "parallel_stacks"  # installed editable into .venv (Makefile)
OFFLINE_PREFIX = "parallel-stacks-offline"

# A small project of the default shape, for unit tests of the helpers.
TEST_STACK_YML = """\
project: shop
services:
  postgres: {kind: postgres, container_port: 5432, host_port: 5432, volumes: [db_data]}
  redis: {kind: redis, container_port: 6379, host_port: 6379}
  api: {kind: http, container_port: 8003, host_port: 8003}
  ui: {kind: http, container_port: 3000, host_port: 3000}
"""



def make_worktree(root: Path, dev_env: str = "POSTGRES_USER=app\n") -> Path:
    """A minimal project directory: stack.yml and env/dev.env."""
    (root / "env").mkdir(parents=True)
    (root / "stack.yml").write_text(TEST_STACK_YML)
    (root / "env" / "dev.env").write_text(dev_env)
    return root


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
        """The caller's environment without copy-selecting values, then base_env, then `env` (None: unset)."""
        full = {k: v for k, v in os.environ.items() if k not in self.INHERITED}
        merged = {**full, "PYTHON": sys.executable, **self.base_env, **{k: str(v) for k, v in env.items() if v is not None}}
        return {k: v for k, v in merged.items() if env.get(k, "") is not None}

    def make(self, *targets, check=True, timeout=600, **env) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["make", *targets], cwd=self.path, env=self.environment(**env), capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"make {' '.join(targets)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def use_own_virtualenv(self) -> None:
        """Install and from now on run the project's own .venv, as its Makefile makes it (not the caller's interpreter)."""
        self.make("setup", PYTHON=None)
        self.base_env = {**self.base_env, "PYTHON": str(self.path / ".venv" / "bin" / "python")}

    def add_django_suite(self) -> None:
        """Drop tests/suites/django_shop into the project with the two edits a Django user makes anyway:
        Django in requirements-dev.txt, DJANGO_SETTINGS_MODULE in pytest.ini. (Then use_own_virtualenv.)"""
        import shutil

        shutil.copytree(TEMPLATE / "tests" / "suites" / "django_shop", self.path, dirs_exist_ok=True)
        reqs = self.path / "requirements-dev.txt"
        reqs.write_text(reqs.read_text() + (TEMPLATE / "env" / "requirements-django.txt").read_text())
        ini = self.path / "pytest.ini"
        ini.write_text(ini.read_text() + "DJANGO_SETTINGS_MODULE = shop.settings\n")

    def values(self, **env) -> dict:
        from dotenv import dotenv_values
        import io

        out = self.make("env", SHOW_SECRETS="1", **env).stdout
        return dict(dotenv_values(stream=io.StringIO(out)))


# ---------------------------------------------------------------- what containers cost (bench, soak)
def container_stats(container_id: str) -> dict:
    """One-shot engine stats of a container: {"cpu_ns": CPU time so far, "mem_mib": memory now (as `docker stats`)}."""
    import json

    from parallel_stacks import engine
    from parallel_stacks.settings import Settings

    body = engine.engine_get(Settings.read(), f"/containers/{container_id}/stats?stream=false&one-shot=true")
    if body is None:
        return {"cpu_ns": 0, "mem_mib": 0.0}
    stats = json.loads(body)
    memory = stats.get("memory_stats") or {}
    inner = memory.get("stats") or {}
    used = memory.get("usage", 0) - inner.get("inactive_file", inner.get("total_inactive_file", 0))
    return {"cpu_ns": int((stats.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage", 0)), "mem_mib": used / 2**20}


def project_stats(projects) -> dict:
    """{compose project: {"cpu_ns", "mem_mib", "containers"}} summed over its running containers (engine stats)."""
    from parallel_stacks import engine
    from parallel_stacks.settings import Settings

    out = {p: {"cpu_ns": 0, "mem_mib": 0.0, "containers": 0} for p in projects}
    for entry in engine.labelled_containers(Settings.read(), "com.docker.compose.project") or []:
        project = (entry.get("Labels") or {}).get("com.docker.compose.project")
        if project in out and entry.get("State") == "running":
            stats = container_stats(entry["Id"])
            out[project]["cpu_ns"] += stats["cpu_ns"]
            out[project]["mem_mib"] += stats["mem_mib"]
            out[project]["containers"] += 1
    return out


def idle_cpu(projects, seconds: float) -> dict:
    """{compose project: share of one core its containers used over `seconds` of doing nothing} (engine stats)."""
    import time

    first = project_stats(projects)
    start = time.monotonic()
    time.sleep(seconds)
    second = project_stats(projects)
    elapsed = time.monotonic() - start
    return {p: (second[p]["cpu_ns"] - first[p]["cpu_ns"]) / 1e9 / elapsed for p in projects}
