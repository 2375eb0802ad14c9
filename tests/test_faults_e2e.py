"""Test runs never harm each other (issue 24): the fault matrix.

One copy on a real engine; a first run of a small suite (the worker's
database, a flushing Redis test, one test that holds the run open) and a
second run of the same copy. For each phase x each signal, one of the two
is interrupted there:

- "waiting": the second run, while it waits for the first's run lock (the
  Ctrl-C that once dropped the first run's databases);
- "template", "workers", "tests", "teardown": the first run, while it
  builds its template, while its workers make their databases, while a
  test runs, while its workers tear down; the second run (waiting) then
  goes on.

SIGINT goes to the run's whole process group (Ctrl-C in a terminal),
SIGTERM and SIGKILL to the pytest controller only (a CI timeout, `kill`;
a killed controller's workers live on). Every row: the other run passes
with the full count, the copy's dev data is untouched, and afterwards
nothing of either run is left (databases, Redis DBs, run directories,
locks, containers). Refusals (another worktree's copy, the stack down, a
bad option) exit with one line while the first run holds the copy and
change nothing at all.

FAULT_MATRIX=long (make soak) runs every row on 4 workers, three times.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from conftest import TEMPLATE, Project, bake

pytestmark = pytest.mark.docker

OFFSET = 6000  # every port of the copy below the ephemeral range
DOWN_OFFSET = 7000  # a copy of the same project that is not up
SUITE = TEMPLATE / "tests" / "suites" / "faults"
TESTS = 9  # in SUITE
LONG = os.environ.get("FAULT_MATRIX") == "long"
WORKERS = "4" if LONG else "2"
ROUNDS = 3 if LONG else 1
PHASES = ("template", "workers", "tests", "teardown")
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
DEV_KEY = "dev:precious"


@pytest.fixture(scope="module")
def copy(tmp_path_factory, image_env):
    """The copy at OFFSET, up, with dev data in its app database and Redis DB 0; nuked afterwards."""
    project = Project(bake(tmp_path_factory.mktemp("faults")), image_env)
    shutil.copytree(SUITE, project.path / "faults")
    try:
        project.make("up", PORT_OFFSET=OFFSET)
        values = project.values(PORT_OFFSET=OFFSET)
        with psycopg.connect(values["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS dev_rows (n int)")
            conn.execute("INSERT INTO dev_rows VALUES (42)")
        redis.Redis.from_url(values["REDIS_URL"]).set(DEV_KEY, "keep")
        yield project, values
    finally:
        project.make("nuke", check=False, PORT_OFFSET=OFFSET, FORCE="1")


STARTED: list[Run] = []


@pytest.fixture(autouse=True)
def no_run_outlives_its_test():
    """A row that fails leaves no run paused or running into the next row (nor into the copy's nuke)."""
    yield
    while STARTED:
        run = STARTED.pop()
        release(run.where)
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGINT)
            try:
                run.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait(timeout=30)


class Run:
    """One pytest run of the fault suite on the copy, its output in a file."""

    def __init__(self, project: Project, where: Path, name: str, pause: str | None = None, args=(), cwd=None, offset=OFFSET):
        self.where = where
        STARTED.append(self)
        schema = "faults/slow_schema.sql" if pause == "template" else "faults/schema.sql"
        env = project.environment(PORT_OFFSET=offset, FAULT_DIR=str(where), PYTHONHASHSEED="0")
        env.pop("FAULT_PAUSE", None)
        if pause:
            env["FAULT_PAUSE"] = pause
        self.log = where / f"{name}.log"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", WORKERS, "-o", f"isolation_schema={schema}",
                   "faults", *args]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(command, cwd=cwd or project.path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        return self.log.read_text()

    def family(self) -> list[psutil.Process]:
        try:
            me = psutil.Process(self.proc.pid)
            return [me, *me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def send(self, sig: signal.Signals) -> None:
        if sig == signal.SIGINT:
            os.killpg(self.proc.pid, sig)  # Ctrl-C: the terminal signals the whole foreground group
        else:
            os.kill(self.proc.pid, sig)  # `kill`, a CI timeout: the controller only

    def finish(self, timeout: float = 180) -> str:
        self.proc.wait(timeout=timeout)
        return self.output()


def wait_until(condition, what: str, timeout: float = 120, run: Run | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if run is not None and run.proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{run.output()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}" + (f":\n{run.output()[-3000:]}" if run else "")
        time.sleep(0.05)


def databases(values: dict) -> set[str]:
    with psycopg.connect(values["DATABASE_URL"], autocommit=True, connect_timeout=10) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test%'")}


def redis_sizes(values: dict) -> dict[int, int]:
    base = values["REDIS_URL"].rsplit("/", 1)[0]
    return {db: redis.Redis.from_url(f"{base}/{db}").dbsize() for db in range(1, 16)}


def files(values: dict) -> set[str]:
    copy = values["COMPOSE_PROJECT_NAME"]
    tmp = Path(tempfile.gettempdir())
    return {p.name for p in [*tmp.glob(f"{copy}-testrun-*"), *tmp.glob(f"parallel-stacks-{copy}.testlock*")]}


def test_containers(values: dict) -> list[str]:
    from parallel_stacks.engine import TEST_COPY_LABEL

    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={TEST_COPY_LABEL}={values['COMPOSE_PROJECT_NAME']}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


test_containers.__test__ = False


def snapshot(values: dict) -> dict:
    return {"databases": databases(values), "redis": redis_sizes(values), "files": files(values), "containers": test_containers(values)}


def assert_nothing_left(values: dict) -> None:
    left = snapshot(values)
    assert left == {"databases": set(), "redis": dict.fromkeys(range(1, 16), 0), "files": set(), "containers": []}, left
    with psycopg.connect(values["DATABASE_URL"], autocommit=True) as conn:
        assert conn.execute("SELECT n FROM dev_rows").fetchall() == [(42,)], "the copy's dev data changed"
    assert redis.Redis.from_url(values["REDIS_URL"]).get(DEV_KEY) == b"keep", "the app's Redis DB 0 changed"


def assert_full_pass(out: str, run: Run) -> None:
    assert run.proc.returncode == 0, out[-4000:]
    summary = [line for line in out.splitlines() if line.startswith("=") and " in " in line][-1]
    assert re.fullmatch(rf"=+ {TESTS} passed(, \d+ warnings?)? in [\d.]+s( \([\d:]+\))? =+", summary), out[-4000:]


def release(where: Path) -> None:
    (where / "release").touch()


def reached(where: Path, phase: str, values: dict, everyone: bool = False):
    """True once the first run is in `phase` (`everyone`: every worker is, and the run's state holds still)."""
    if phase == "template":  # the slow schema runs inside the run's template database
        name = f"test_{values['COMPOSE_PROJECT_NAME'].replace('-', '_')}_template"
        return lambda: name in databases(values)
    return lambda: len(list(where.glob(f"{phase}-*"))) >= (int(WORKERS) if everyone else 1)


def waiting(run: Run):
    return lambda: "waiting for another test run of" in run.output()


def settle(*families: list[psutil.Process]) -> None:
    """Every process of the runs has ended (a killed controller's workers finish their test first)."""
    gone, alive = psutil.wait_procs([p for fam in families for p in fam], timeout=120)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], f"processes outlived the runs: {alive}"


ROWS = [pytest.param(phase, sig, id=f"{phase}-{sig}") for phase in ("waiting", *PHASES) for sig in SIGNALS]


@pytest.mark.parametrize("phase,sig", ROWS)
def test_an_interrupted_run_never_harms_the_other(copy, tmp_path, phase, sig):
    project, values = copy
    for round_ in range(ROUNDS):
        where = tmp_path / f"round{round_}"
        where.mkdir()
        assert_nothing_left(values)
        if phase == "waiting":
            first = Run(project, where, "first", pause="teardown")  # every worker holds still, its resources made
            wait_until(reached(where, "teardown", values, everyone=True), "the first run's workers hold still", run=first)
            second = Run(project, where, "second")
            wait_until(waiting(second), "the second run waits for the first", run=second)
            before = snapshot(values)
            family = second.family()
            second.send(SIGNALS[sig])
            second.finish()
            settle(family)
            assert second.proc.returncode != 0
            assert snapshot(values) == before, "the interrupted waiting run touched the first run's resources"
            release(where)
            assert_full_pass(first.finish(), first)
        else:
            first = Run(project, where, "first", pause=phase)
            wait_until(reached(where, phase, values), f"the first run reached '{phase}'", run=first)
            second = Run(project, where, "second")
            wait_until(waiting(second), "the second run waits for the first", run=second)
            family = first.family()
            first.send(SIGNALS[sig])
            release(where)
            first.finish()
            assert_full_pass(second.finish(), second)
            settle(family, second.family())
        assert_nothing_left(values)


REFUSALS = ["another-worktree", "stack-down", "bad-option"]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_refused_run_changes_nothing(copy, tmp_path, refusal):
    project, values = copy
    first = Run(project, tmp_path, "first", pause="teardown")
    wait_until(reached(tmp_path, "teardown", values, everyone=True), "the first run's workers hold still", run=first)
    before = snapshot(values)
    if refusal == "another-worktree":  # the same project baked elsewhere, same offset: the copy is the first's
        other = bake(tmp_path / "other")
        shutil.copytree(SUITE, other / "faults")
        refused = Run(project, tmp_path, "refused", cwd=other)
        expected = "belongs to another worktree"
    elif refusal == "stack-down":
        refused = Run(project, tmp_path, "refused", offset=DOWN_OFFSET)
        expected = "is not up"
    else:
        refused = Run(project, tmp_path, "refused", args=["--no-isolation-of", "nosuchkind"])
        expected = "--no-isolation-of nosuchkind: not a kind"
    out = refused.finish()
    assert refused.proc.returncode not in (0, 1), out  # a usage error, not failed tests
    errors = [line for line in out.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and expected in errors[0], out
    assert snapshot(values) == before, f"the refused run ({refusal}) changed something"
    release(tmp_path)
    assert_full_pass(first.finish(), first)
    assert_nothing_left(values)


def test_a_failed_teardown_is_reported_not_silent(copy, tmp_path):
    """The copy's Redis stops under a run: its teardown cannot flush the workers' Redis DBs and says so."""
    project, values = copy
    run = Run(project, tmp_path, "run", pause="teardown")
    wait_until(reached(tmp_path, "teardown", values, everyone=True), "every worker tears down", run=run)
    container = f"{values['COMPOSE_PROJECT_NAME']}-redis-1"
    subprocess.run(["docker", "stop", "-t", "1", container], check=True, capture_output=True)
    try:
        release(tmp_path)
        out = run.finish()
    finally:
        subprocess.run(["docker", "start", container], check=True, capture_output=True)
        project.make("up", PORT_OFFSET=OFFSET)  # healthy again for the rows after this one
        redis.Redis.from_url(values["REDIS_URL"]).set(DEV_KEY, "keep")  # the app's data as the fixture left it
    assert "PytestWarning: parallel-stacks could not remove redis's test data of worker gw" in out, out[-4000:]
    assert "the next test run of this copy removes it" in out
    assert f"{TESTS} passed" in out
    # the next run does remove it
    again = Run(project, tmp_path, "again")
    assert_full_pass(again.finish(), again)
    assert_nothing_left(values)
