"""pytest-django, first class: a Django project (models, migrations, an ordinary
pytest-django suite: tests/suites/django_shop) dropped into a baked project,
tested with real pytest-django, real xdist workers, real PostgreSQL.

The user's only changes are theirs to make anyway: Django in
requirements-dev.txt and `DJANGO_SETTINGS_MODULE` in pytest.ini.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from conftest import running_copies
from test_parallel_e2e import _in_group, passed_ids, test_databases

pytestmark = pytest.mark.docker
OFFSET = 4000


@pytest.fixture(scope="module")
def shop(tmp_path_factory, image_env):
    """The baked project with the Django app in it, its copy at OFFSET up; nuked afterwards."""
    with running_copies(tmp_path_factory.mktemp("worktree-django"), image_env, (OFFSET,)) as (project, values):
        project.add_django_suite()
        project.use_own_virtualenv()
        yield project, values[OFFSET]


def run(project, target, tmp_path, name, **env):
    """`make <target>` of the Django suite; its junit report and the databases the tests saw."""
    report = tmp_path / f"{name}-seen"
    report.mkdir()
    junit = tmp_path / f"{name}.xml"
    out = project.make(target, check=False, PORT_OFFSET=OFFSET, SHOP_REPORT_DIR=str(report), ARGS=f"shop --junitxml={junit}", **env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    names = {p.name for p in report.iterdir()}
    migrated = {n for n in names if n.startswith("migrated-")}
    return passed_ids(junit), names - migrated, len(migrated)


def test_django_suite_passes_the_same_tests_sequentially_and_on_2_and_4_workers(shop, tmp_path):
    project, values = shop
    copy = values["COMPOSE_PROJECT_NAME"].replace("-", "_")
    seq, seen, migrated = run(project, "test", tmp_path, "seq")
    assert len(seq) == 19, sorted(seq)
    assert seen == {f"master-test_{copy}_master"} and migrated == 1
    for workers in ("2", "4"):
        par, seen, migrated = run(project, "test-parallel", tmp_path, f"par{workers}", PYTEST_WORKERS=workers)
        assert par == seq
        worker, database = next(iter(seen)).split("-", 1)
        assert database == f"test_{copy}_{worker}", seen  # Django's database is this copy's and this worker's
        assert migrated == 1, f"migrations ran {migrated} times in one run: once, into the template, is the point"
        assert test_databases(values) == set(), "a run left Django test databases behind"


def test_without_isolation_the_django_suite_collides(shop, tmp_path):
    """Proof the suite can fail: workers sharing one database see each other's committed rows."""
    project, values = shop
    out = project.make("test-parallel", check=False, PORT_OFFSET=OFFSET, PYTEST_WORKERS="2", ARGS="shop --no-isolation -p no:randomly")
    assert out.returncode != 0 and "Error 1" in out.stderr, out.stdout[-3000:] + out.stderr  # pytest's 1: tests failed
    failed = [line for line in out.stdout.splitlines() if line.startswith("FAILED shop/")]
    assert failed, out.stdout[-3000:]
    assert test_databases(values) == set()


def test_a_killed_django_run_leaves_nothing_after_the_next_run(shop, tmp_path):
    project, values = shop
    env = project.environment(PORT_OFFSET=OFFSET, PYTEST_WORKERS="2", ARGS="shop -k committed")
    proc = subprocess.Popen(["make", "test-parallel"], cwd=project.path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    group: list[psutil.Process] = []
    try:
        while time.monotonic() < deadline and not any(n.endswith("_gw1") for n in test_databases(values)):
            time.sleep(0.2)
        assert any(n.endswith("_gw1") for n in test_databases(values)), "the run never made its worker databases"
    finally:
        group = [p for p in psutil.process_iter() if _in_group(p, proc.pid)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        psutil.wait_procs(group, timeout=30)
    # only the killed run's own processes: a match on command lines caught an unrelated shell on the CI machine
    assert not [p for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "workers survived kill -9"
    left = test_databases(values)
    assert left, "nothing was left to clean up: the kill came too late to test anything"
    copy = values["COMPOSE_PROJECT_NAME"].replace("-", "_")
    assert all(n.startswith(f"test_{copy}_") for n in left), left
    run(project, "test", tmp_path, "after-kill")
    assert test_databases(values) == set()
