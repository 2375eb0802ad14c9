"""`make test` / `make test-parallel` of a baked project on a real engine.

Real pytest-xdist workers, real per-worker databases cloned on each copy's
own PostgreSQL, real Redis.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import psutil
import psycopg
import pytest

from conftest import TEMPLATE, Project, bake, running_copies

pytestmark = pytest.mark.docker
OFFSETS = (0, 10000)


def passed_ids(junit_path) -> set[str]:
    ids = set()
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        if not any(child.tag in ("failure", "error", "skipped") for child in case):
            ids.add(f"{case.get('classname')}::{case.get('name')}")
    return ids


def test_databases(values: dict) -> set[str]:
    with psycopg.connect(values["DATABASE_URL"], autocommit=True, connect_timeout=10) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test%'")}


test_databases.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def copies(tmp_path_factory, image_env):
    """One baked project, copies at offsets 0 and 10000 both up; nuked afterwards."""
    with running_copies(tmp_path_factory.mktemp("worktree-par"), image_env, OFFSETS) as result:
        yield result


def test_sequential_and_parallel_pass_the_same_tests(copies, tmp_path):
    project, values = copies
    seq, par = tmp_path / "seq.xml", tmp_path / "par.xml"
    project.make("test", PORT_OFFSET=0, ARGS=f"--junitxml={seq}")
    out = project.make("test-parallel", PORT_OFFSET=0, PYTEST_WORKERS="2", ARGS=f"--junitxml={par}")
    assert "2 workers" in out.stdout
    assert passed_ids(seq) == passed_ids(par)
    assert len(passed_ids(seq)) >= 20
    assert test_databases(values[0]) == set(), "a run left databases behind"


def test_twelve_workers_pass_the_same_tests_as_one(copies, tmp_path):
    """Seed 002's validation (-n 12): every worker has a port block, a database, a Redis DB
    and a topic namespace of its own; `make soak` repeats this five times."""
    project, values = copies
    seq, par = tmp_path / "seq.xml", tmp_path / "par12.xml"
    project.make("test", PORT_OFFSET=0, ARGS=f"--junitxml={seq}")
    out = project.make("test-parallel", PORT_OFFSET=0, PYTEST_WORKERS="12", ARGS=f"--junitxml={par}")
    assert "12 workers" in out.stdout and "(12 workers)" in out.stdout  # the isolation: line counted them all
    assert passed_ids(par) == passed_ids(seq) and len(passed_ids(seq)) >= 25
    assert test_databases(values[0]) == set()


def test_two_copies_run_their_suites_at_the_same_time(copies):
    project, values = copies
    env = {**os.environ, "PYTHON": sys.executable, **project.base_env, "PYTEST_WORKERS": "2"}
    procs = [
        subprocess.Popen(
            ["make", "test-parallel"], cwd=project.path, env={**env, "PORT_OFFSET": str(offset)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for offset in OFFSETS
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
        assert " passed" in out and "failed" not in out
    for offset in OFFSETS:
        assert test_databases(values[offset]) == set()


def run_lock_held(path) -> bool:
    """True while some process holds the flock on `path` (a test run's lock)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_second_run_of_one_copy_waits_for_the_first(copies):
    """Two terminals, one copy: before, the second run dropped the first's databases and both failed."""
    import tempfile

    project, values = copies
    env = {**os.environ, "PYTHON": sys.executable, **project.base_env, "PORT_OFFSET": "0", "PYTEST_WORKERS": "2"}
    lock = os.path.join(tempfile.gettempdir(), f"parallel-stacks-{values[0]['COMPOSE_PROJECT_NAME']}.testlock")

    def start(target):
        return subprocess.Popen(["make", target], cwd=project.path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("test-parallel")
    deadline = time.monotonic() + 120
    while not run_lock_held(lock):
        assert first.poll() is None and time.monotonic() < deadline, "the first run never took the copy's lock"
        time.sleep(0.02)
    second = start("test")
    outs = [p.communicate(timeout=600) for p in (first, second)]
    for proc, (out, err) in zip((first, second), outs):
        assert proc.returncode == 0, out[-3000:] + err
        assert " passed" in out and "failed" not in out
    assert f"waiting for another test run of {values[0]['COMPOSE_PROJECT_NAME']} (pid " in outs[1][1]
    assert test_databases(values[0]) == set()


def test_killed_run_leaves_nothing_after_the_next_run(copies):
    project, values = copies
    env = {**os.environ, "PYTHON": sys.executable, **project.base_env, "PORT_OFFSET": "0", "PYTEST_WORKERS": "2"}
    proc = subprocess.Popen(
        ["make", "test-parallel"], cwd=project.path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("_gw" in n for n in seen):
        seen = test_databases(values[0])
        time.sleep(0.05)
    group = [p for p in psutil.process_iter() if _in_group(p, proc.pid)]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs(group, timeout=30)
    assert any("_gw" in n for n in seen), "the run never reached its workers' databases"
    assert not [p for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "workers survived kill -9"
    leftover = test_databases(values[0])
    assert leftover, "kill -9 should have left the killed run's databases"

    project.make("test-parallel", PORT_OFFSET=0, PYTEST_WORKERS="2")
    assert test_databases(values[0]) == set(), "databases of the killed run remain"


CRASHER = """
import os, signal

def test_this_worker_dies():
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
"""


@pytest.mark.parametrize("dist", ["load", "loadscope"])
def test_killed_worker_is_reported_and_leaves_nothing(copies, tmp_path, dist):
    project, values = copies
    crasher = tmp_path / "test_crash.py"
    crasher.write_text(CRASHER)
    junit = tmp_path / "crash.xml"
    out = project.make("test-parallel", check=False, timeout=300, PORT_OFFSET=0, PYTEST_WORKERS="2", PYTEST_DIST=dist,
                       ARGS=f"tests {crasher} --junitxml={junit}")
    assert out.returncode != 0 and "Error 1" in out.stderr  # pytest's 1: tests failed (not 2+: aborted)
    assert re.search(r"worker 'gw\d' crashed while running '[^']*::test_this_worker_dies'", out.stdout), out.stdout[-3000:]
    if dist == "load":  # replaced; the rest of the suite ran
        assert "replacing crashed worker" in out.stdout
        assert len(passed_ids(junit)) == len(passed_ids_of_a_clean_run(project, tmp_path))
    else:  # ended instead of hanging (pytest-xdist#1323)
        assert re.search(r"worker gw\d crashed and worker restarting disabled", out.stdout)
    assert test_databases(values[0]) == set(), "the crashed worker's database outlived the run"


def passed_ids_of_a_clean_run(project, tmp_path) -> set[str]:
    junit = tmp_path / "clean.xml"
    project.make("test-parallel", PORT_OFFSET=0, PYTEST_WORKERS="2", ARGS=f"--junitxml={junit}")
    return passed_ids(junit)


def _in_group(proc, pgid) -> bool:
    try:
        return os.getpgid(proc.pid) == pgid
    except (ProcessLookupError, psutil.Error):
        return False


UNADAPTED = (TEMPLATE / "tests" / "suites" / "unadapted" / "test_unadapted.py").read_text()


@pytest.mark.parametrize("target", ["test", "test-parallel"])
def test_a_suite_that_flushes_and_uses_libpq_defaults_leaves_dev_data_alone(copies, tmp_path, target):
    """The copy's own Redis DB 0 and database hold dev data: no test run may touch them."""
    import redis as redis_lib

    project, values = copies
    suite = tmp_path / "test_unadapted.py"
    suite.write_text(UNADAPTED)
    dev_redis = redis_lib.Redis.from_url(values[0]["REDIS_URL"])
    dev_redis.set("dev:keep", "precious")
    with psycopg.connect(values[0]["DATABASE_URL"], autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS dev_keep (v text)")
        conn.execute("INSERT INTO dev_keep VALUES ('precious')")
    try:
        out = project.make(target, check=False, PORT_OFFSET=0, PYTEST_WORKERS="2", ARGS=str(suite))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert "6 passed" in out.stdout
        assert dev_redis.get("dev:keep") == b"precious", "a test run flushed the app's Redis DB"
        with psycopg.connect(values[0]["DATABASE_URL"], autocommit=True, connect_timeout=10) as conn:
            assert conn.execute("SELECT count(*) FROM dev_keep").fetchone()[0] == 1
            assert conn.execute("SELECT to_regclass('public.unadapted')").fetchone()[0] is None, "a test wrote to the dev database"
    finally:
        dev_redis.delete("dev:keep")
        with psycopg.connect(values[0]["DATABASE_URL"], autocommit=True, connect_timeout=10) as conn:
            conn.execute("DROP TABLE IF EXISTS dev_keep")
    assert test_databases(values[0]) == set()


EARLY_CONFTEST = """
import os

import pytest

# what settings modules (Django's, a library's) see: read once, at import, before any fixture
AT_IMPORT = (os.environ.get("PGDATABASE"), os.environ.get("DATABASE_URL"), os.environ.get("REDIS_DB"), os.environ.get("TEST_WORKER_ID"),
             os.environ.get("MYLIB_TEST_DB"))  # a suite's own name, mapped in pytest.ini (isolation_env)


@pytest.fixture
def at_import():
    return AT_IMPORT
"""
EARLY_TEST = """
import pytest


@pytest.mark.parametrize("n", range(4))
def test_settings_read_at_import_are_this_workers(n, at_import, parallel_context):
    assert at_import == (parallel_context.database_name, parallel_context.database_url,
                         str(parallel_context.redis.db), parallel_context.worker,
                         f"{parallel_context.worker}:{parallel_context.database_name}")
"""


def test_a_conftest_reading_settings_at_import_sees_its_workers_values(copies, tmp_path):
    project, _ = copies
    suite = tmp_path / "early"
    suite.mkdir()
    (suite / "conftest.py").write_text(EARLY_CONFTEST)
    (suite / "test_early.py").write_text(EARLY_TEST)
    for target in ("test", "test-parallel"):
        mapping = "-o isolation_env=MYLIB_TEST_DB={TEST_WORKER_ID}:{PGDATABASE}"
        out = project.make(target, check=False, PORT_OFFSET=0, PYTEST_WORKERS="2", ARGS=f"{mapping} {suite}")
        assert out.returncode == 0 and "4 passed" in out.stdout, out.stdout[-3000:] + out.stderr


def test_suite_detects_collisions_without_isolation(copies):
    project, values = copies
    out = project.make("test-parallel", check=False, PORT_OFFSET=0, PYTEST_WORKERS="2", ARGS="--no-isolation")
    assert out.returncode != 0
    assert "already exists" in out.stdout or "already claimed" in out.stdout or "Address already in use" in out.stdout
    assert test_databases(values[0]) == set()


HOLDER = """
import os, time

def test_holds_a_broker(worker_broker):
    with open(os.environ["HOLD_MARK"], "w") as mark:
        mark.write(str(worker_broker.port))
    time.sleep(300)
"""


def worker_containers(copy: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=dev.parallel-stacks.test-copy={copy}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True).stdout
    nets = subprocess.run(["docker", "network", "ls", "--filter", f"label=dev.parallel-stacks.test-copy={copy}", "--format", "{{.Name}}"],
                          capture_output=True, text=True, check=True).stdout
    return sorted(out.split() + nets.split())


def test_a_workers_broker_lives_for_its_test_and_a_killed_runs_goes_at_the_next_run(copies, tmp_path):
    """Seed 002 phases 1 and 3: a broker container per worker, named and labelled per copy and worker;
    a killed run's is removed by the next run of its copy, never by another copy's."""
    project, values = copies
    names = {o: values[o]["COMPOSE_PROJECT_NAME"] for o in (0, 10000)}
    project.make("test-parallel", PORT_OFFSET=0, PYTEST_WORKERS="2", ARGS="-k broker_of_this_workers_own")
    assert worker_containers(names[0]) == [], "a finished run left its worker brokers"
    holder = project.path / "tests" / "test_hold_broker.py"
    holder.write_text(HOLDER)
    procs = {}
    try:
        for offset in (0, 10000):
            env = project.environment(PORT_OFFSET=offset, ARGS="tests/test_hold_broker.py", HOLD_MARK=str(tmp_path / f"mark-{offset}"))
            procs[offset] = subprocess.Popen(["make", "test"], cwd=project.path, env=env, start_new_session=True,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all((tmp_path / f"mark-{o}").exists() for o in procs):
            time.sleep(0.2)
        for offset, name in names.items():
            # at offset 0 the copy's Redis and broker sit on the default ports, which localhost routing (issue 27) sends to
            # servers of the worker's own: the suite's session fixture reaches them there, so they run beside the broker
            routed = [f"{name}-master-mqtt", f"{name}-master-redis"] if offset == 0 else []
            assert worker_containers(name) == sorted([f"{name}-master-broker", f"{name}-master-broker-net", *routed]), "the broker did not start"
    finally:
        group = [p for p in psutil.process_iter() if any(_in_group(p, proc.pid) for proc in procs.values())]
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        psutil.wait_procs(group, timeout=30)
        holder.unlink()
    assert worker_containers(names[0]) and worker_containers(names[10000]), "kill -9 should have left both brokers"
    project.make("test", PORT_OFFSET=0, ARGS="-k test_database_is_this_workers_clone")
    assert worker_containers(names[0]) == [], "the killed run's broker outlived the next run"
    assert worker_containers(names[10000]) == [f"{names[10000]}-master-broker", f"{names[10000]}-master-broker-net"], "another copy's run removed it"
    project.make("test", PORT_OFFSET=10000, ARGS="-k test_database_is_this_workers_clone")
    assert worker_containers(names[10000]) == []


def test_topics_shared_between_workers_show_cross_talk_on_the_real_broker(copies):
    """Proof the MQTT tests can fail: only the topic namespace shared (--no-isolation-of mqtt),
    everything else isolated, and the workers hear each other on the copy's broker."""
    project, values = copies
    out = project.make("test-parallel", check=False, PORT_OFFSET=0, PYTEST_WORKERS="2", ARGS="--no-isolation-of mqtt -p no:randomly")
    assert out.returncode != 0 and "Error 1" in out.stderr, out.stdout[-3000:] + out.stderr  # tests failed (not a usage error)
    assert "MQTT topic test/shared/claim was also claimed by ['gw" in out.stdout, out.stdout[-3000:]
    failed = {line.split()[1] for line in out.stdout.splitlines() if line.startswith("FAILED ")}
    assert all(f.startswith("tests/test_events.py::") for f in failed), failed  # the broker's tests or none: nothing else
    assert test_databases(values[0]) == set()


def test_suite_says_in_one_line_when_the_stack_is_down(copies):
    project, _ = copies
    out = project.make("test", check=False, PORT_OFFSET=9500)
    assert out.returncode != 0
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "is not up" in ln]
    assert len(lines) == 1 and "make up" in lines[0], out.stdout + out.stderr
    unit = project.make("test-unit", PORT_OFFSET=9500, PYTEST_WORKERS="2")
    assert " passed" in unit.stdout and "failed" not in unit.stdout


AWKWARD = "p@ss/w:rd%2F#1"  # every character with a meaning in a URL's userinfo, and a percent sign that looks encoded


def test_passwords_with_url_characters_work_end_to_end(tmp_path, image_env):
    """Credentials are percent-encoded in every URL the package builds: the copy starts (the api reaches its broker
    through its MQTT_URL), the example suite passes on two workers, and psycopg reads the host from DATABASE_URL."""
    from urllib.parse import quote

    project = Project(bake(tmp_path), image_env)
    (project.path / "env" / "local.env").write_text(f"POSTGRES_PASSWORD='{AWKWARD}'\nMQTT_PASSWORD='{AWKWARD}'\n")
    try:
        project.make("up", PORT_OFFSET=11500)
        values = project.values(PORT_OFFSET=11500)
        assert values["POSTGRES_PASSWORD"] == AWKWARD
        assert f":{quote(AWKWARD, safe='')}@127.0.0.1:{values['POSTGRES_PORT']}/" in values["DATABASE_URL"]
        with psycopg.connect(values["DATABASE_URL"], connect_timeout=10) as conn:
            assert conn.info.host == "127.0.0.1" and conn.info.port == int(values["POSTGRES_PORT"])
        out = project.make("test-parallel", PORT_OFFSET=11500, PYTEST_WORKERS="2")
        assert " passed" in out.stdout and "failed" not in out.stdout and "error" not in out.stdout.lower(), out.stdout[-3000:]
        shown = project.make("env", PORT_OFFSET=11500).stdout
        assert AWKWARD not in shown and quote(AWKWARD, safe="") not in shown, "make env printed the password"
    finally:
        project.make("nuke", check=False, PORT_OFFSET=11500, FORCE="1")


LEGACY_DB = """
def test_the_old_name_still_works(db, worker_db):
    assert db is worker_db
    assert db.execute("SELECT current_database()").fetchone()[0] == worker_db.info.dbname
"""


def test_the_old_db_fixture_is_a_deprecated_alias_without_pytest_django(copies, tmp_path):
    project, _ = copies
    suite = tmp_path / "test_legacy.py"
    suite.write_text(LEGACY_DB)
    out = project.make("test", PORT_OFFSET=0, ARGS=f"{suite} -p no:randomly")
    assert "1 passed" in out.stdout, out.stdout[-3000:]
    assert "PytestDeprecationWarning: the parallel-stacks fixture `db` is deprecated: use `worker_db`" in out.stdout
