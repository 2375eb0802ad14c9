"""`make adopt`, the test half: an existing repository's own pytest suite runs isolated against its copies.

tests/suites/adopted_shop is a small repository as a team has it: compose for
its Postgres and Redis (and an app image nobody here can build), settings read
at import time from POSTGRES_* and CACHE_URL (not the names the plugin sets),
a suite that creates the same table in every test and flushes its cache, and
its own virtualenv. After `make adopt` and nothing else: two copies, the suite
on two workers against each at once, every worker apart, dev data untouched;
without isolation of its database the same suite fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from conftest import TEMPLATE
from test_adopt import adopt, git, make

pytestmark = pytest.mark.docker

SUITE = TEMPLATE / "tests" / "suites" / "adopted_shop"
OFFSETS = (4700, 5200)  # every port below the ephemeral range; no other test's copy there
TESTS = 16


@pytest.fixture(scope="module")
def shop(tmp_path_factory, image_env):
    """The repository, its own .venv (pytest, psycopg, redis: what the team installed), adopted; copies at OFFSETS
    with only `db` and `cache` up; nuked afterwards."""
    repo = tmp_path_factory.mktemp("adopted") / "shop"
    shutil.copytree(SUITE, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the shop as its team wrote it")
    subprocess.run([sys.executable, "-m", "venv", str(repo / ".venv")], check=True)
    pins = [line for line in (TEMPLATE / "{{cookiecutter.project}}" / "requirements-dev.txt").read_text().splitlines()
            if line.split("==")[0] in ("pytest", "psycopg[binary]", "redis")]
    subprocess.run([str(repo / ".venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins], check=True, timeout=600)
    adopted = adopt(repo)
    assert adopted.returncode == 0, adopted.stderr
    env = {**image_env, "NAMED_URLS_PORT": "off", "SERVICES": "db cache"}
    try:
        for offset in OFFSETS:
            make(repo, "stack-up", PORT_OFFSET=str(offset), **env)
        yield repo, adopted.stdout, env
    finally:
        for offset in OFFSETS:
            make(repo, "stack-nuke", check=False, PORT_OFFSET=str(offset), FORCE="1", **env)


def values(repo: Path, offset: int, env: dict) -> dict[str, str]:
    out = make(repo, "stack-env", SHOW_SECRETS="1", PORT_OFFSET=str(offset), **env).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_adopt_finds_the_suite_its_runner_and_the_variables_its_settings_read(shop):
    repo, out, _ = shop
    assert "your test suite (pytest.ini, run with .venv/bin/python -m pytest)" in out, out
    mapped = (repo / "parallel-stacks" / "isolation_env").read_text()
    for line in ("POSTGRES_HOST = {PGHOST}", "POSTGRES_PORT = {PGPORT}", "POSTGRES_DB = {PGDATABASE}",
                 "POSTGRES_USER = {PGUSER}", "POSTGRES_PASSWORD = {PGPASSWORD}", "CACHE_URL = {REDIS_URL}"):
        assert f"\n{line}\n" in mapped and f"  {line}\n" in out, (line, mapped)
    assert "STACK_SUITE_RUNNER ?= venv" in (repo / "parallel-stacks" / "suite.mk").read_text()
    assert "stack-test-parallel" in make(repo, "stack-help").stdout


def test_two_copies_run_the_teams_suite_at_once_each_worker_apart(shop, tmp_path):
    repo, _, env = shop
    dev = {offset: values(repo, offset, env) for offset in OFFSETS}
    for offset, v in dev.items():  # the copies' own data, which no test may touch
        with psycopg.connect(v["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS dev_rows (n int)")
            conn.execute("INSERT INTO dev_rows VALUES (%s)", (offset,))
        redis.Redis.from_url(v["REDIS_URL"]).set("dev:visits", offset)
    reports = {offset: tmp_path / str(offset) for offset in OFFSETS}
    procs = {}
    for offset in OFFSETS:
        reports[offset].mkdir()
        procs[offset] = subprocess.Popen(
            ["make", "stack-test-parallel"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **env, "PORT_OFFSET": str(offset), "PYTEST_WORKERS": "2", "SHOP_REPORT_DIR": str(reports[offset])},
        )
    outs = {offset: proc.communicate(timeout=900)[0] for offset, proc in procs.items()}
    for offset, proc in procs.items():
        assert proc.returncode == 0, outs[offset][-4000:]
        assert f"{TESTS} passed" in outs[offset] and "2 workers" in outs[offset], outs[offset][-4000:]
    seen = {}
    for offset, where in reports.items():
        by_pid: dict[str, set[str]] = {}
        for name in os.listdir(where):
            pid, what = name.split("-", 1)
            by_pid.setdefault(pid, set()).add(what)
        assert len(by_pid) == 2, by_pid  # both workers ran tests
        databases = [next(w for w in whats if w.startswith("db=")) for whats in by_pid.values()]
        caches = [next(w for w in whats if w.startswith("cache=")) for whats in by_pid.values()]
        assert len(set(databases)) == 2 and len(set(caches)) == 2, by_pid  # each worker its own
        port = urlsplit(dev[offset]["DATABASE_URL"]).port  # this copy's Postgres, reached through POSTGRES_* as the app does
        assert all(d.endswith(f":{port}") for d in databases), (port, databases)
        seen[offset] = set(databases) | set(caches)
    assert not seen[OFFSETS[0]] & seen[OFFSETS[1]], seen  # and the two runs' workers are apart
    for offset, v in dev.items():
        with psycopg.connect(v["DATABASE_URL"], autocommit=True) as conn:
            assert conn.execute("SELECT n FROM dev_rows").fetchall() == [(offset,)]
            left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test%'").fetchall()
            assert left == [], left
        assert redis.Redis.from_url(v["REDIS_URL"]).get("dev:visits") == str(offset).encode()


def test_without_isolation_of_its_database_the_same_suite_fails(shop):
    """The test above can fail: the suite's tables collide once its workers share one database."""
    repo, _, env = shop
    out = make(repo, "stack-test-parallel", check=False, PORT_OFFSET=str(OFFSETS[0]), PYTEST_WORKERS="2",
               ARGS="--no-isolation-of postgres -p no:randomly", **env)
    assert out.returncode != 0 and "failed" in out.stdout, out.stdout[-3000:]
    assert "DuplicateTable" in out.stdout or "UniqueViolation" in out.stdout or "already exists" in out.stdout, out.stdout[-3000:]


# ---------------------------------------------------------------- detection (no engine)
@pytest.mark.parametrize("files,config", [
    ({"pytest.ini": "[pytest]\n"}, "pytest.ini"),
    ({"pyproject.toml": "[project]\nname='x'\n\n[tool.pytest.ini_options]\naddopts='-q'\n"}, "pyproject.toml"),
    ({"setup.cfg": "[metadata]\nname=x\n[tool:pytest]\ntestpaths=tests\n"}, "setup.cfg"),
    ({"tox.ini": "[tox]\n[pytest]\naddopts=-q\n"}, "tox.ini"),
    ({"tests/conftest.py": ""}, "tests/conftest.py"),
    ({"pyproject.toml": "[project]\nname='x'\n", "setup.cfg": "[metadata]\nname=x\n"}, None),
], ids=["pytest.ini", "pyproject", "setup.cfg", "tox.ini", "conftest", "none"])
def test_a_pytest_suite_is_found_where_pytest_looks(tmp_path, files, config):
    from adopt import suite

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert suite.pytest_config(tmp_path) == config


@pytest.mark.parametrize("marker,runner", [("uv.lock", "uv"), ("poetry.lock", "poetry"), (".venv/bin/python", "venv"), (None, "python")])
def test_the_suite_runs_the_way_the_team_runs_it(tmp_path, marker, runner):
    from adopt import suite

    if marker:
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).write_text("")
    assert suite.runner_of(tmp_path) == runner


APP_COMPOSE = """
services:
  pg: {image: "postgis/postgis:16-3.4", ports: ["5432:5432"], environment: {POSTGRES_PASSWORD: x}}
  kv: {image: "valkey/valkey:8", ports: ["6379:6379"]}
  web:
    build: .
    ports: ["8000:8000"]
    environment:
      DATABASE_URL: postgres://app:x@pg:5432/app
      ASYNC_DB: postgresql+asyncpg://app:x@pg:5432/app
      DB_HOST: pg
      DB_PORT: "5432"
      DB_NAME: app
      CELERY_BROKER_URL: redis://kv:6379/1
      REDIS_HOST: kv
      SENTRY_DSN: https://key@sentry.example.com/1
      OTHER_HOST: example.com
"""


def test_the_variables_an_app_reads_for_its_services_become_isolation_env_lines(tmp_path):
    """By URL (a scheme of the kind naming the service's host) or by a HOST naming it and its siblings; never a
    name the plugin sets already (DATABASE_URL, REDIS_HOST) nor anything that names another host."""
    from adopt import cli

    (tmp_path / "compose.yaml").write_text(APP_COMPOSE)
    lines = cli.plan(tmp_path, check_compose=False).suite
    assert lines is None  # no pytest configuration: no suite
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    found = cli.plan(tmp_path, check_compose=False).suite
    assert found is not None and sorted(found.isolation_env) == sorted([
        "ASYNC_DB = postgresql+asyncpg://{PGUSER}:{PGPASSWORD}@{PGHOST}:{PGPORT}/{PGDATABASE}",
        "DB_HOST = {PGHOST}",
        "DB_PORT = {PGPORT}",
        "DB_NAME = {PGDATABASE}",
        "CELERY_BROKER_URL = {REDIS_URL}",
    ])
