"""Unit tests of the generated project's pytest isolation plugin (imported directly)."""
from __future__ import annotations

import re


import pytest

from parallel_stacks.basics import StackError
from parallel_stacks.model import Copy
from parallel_stacks.settings import Settings
from parallel_stacks.kinds import postgres as pg
from parallel_stacks.pytest_plugin import isolation as iso

KINDS = {"postgres": "postgres", "redis": "redis", "api": "http", "ui": "http"}
SERVICES = list(KINDS)


def context(vals, worker, isolated=True, tmp=None, mode="db", kinds=KINDS):
    from pathlib import Path

    copy = vals if isinstance(vals, Copy) and kinds is KINDS else Copy.of_kinds(getattr(vals, "env", vals), kinds)
    return iso.build_context(copy, worker, isolated, tmp or Path("/tmp"), {"redis": mode})


def values(offset=0, project="shop", **changes):
    """A copy of the example stack at `offset` (its derived values, `changes` on top), as the plugin builds it."""
    return Copy.of_kinds({**derived(offset, project), **changes}, KINDS)


def derived(offset=0, project="shop"):
    base = {"postgres": 5432, "redis": 6379, "api": 8003, "ui": 3000}
    out = {
        "PORT_OFFSET": str(offset),
        "COMPOSE_PROJECT_NAME": f"{project}-{offset}",
        "DATABASE_URL": f"postgresql://app:pw@127.0.0.1:{5432 + offset}/{project}",
        "REDIS_URL": f"redis://127.0.0.1:{6379 + offset}/0",
        "BIND_ADDRESS": "127.0.0.1",
        "POSTGRES_USER": "app",
        "POSTGRES_PASSWORD": "pw",
        "POSTGRES_DB": project,
    }
    for name, port in base.items():
        out[f"{name.upper()}_PORT"] = str(port + offset)
        out[f"{name.upper()}_CONTAINER_PORT"] = str(port)
    return out


@pytest.mark.parametrize("worker, index", [("master", 0), ("gw0", 0), ("gw1", 1), ("gw13", 13)])
def test_worker_index(worker, index):
    assert iso.worker_index(worker) == index


@pytest.mark.parametrize("worker", ["gw", "gw-1", "worker1", "", "GW0"])
def test_bad_worker_id(worker):
    with pytest.raises(StackError, match="worker id"):
        iso.worker_index(worker)


def test_database_names_carry_project_offset_and_worker():
    assert pg.database_name(values(10000, "demo-stack"), "gw0") == "test_demo_stack_10000_gw0"
    assert pg.database_name(values(0, "demo-stack"), "template") == "test_demo_stack_0_template"
    with pytest.raises(StackError, match="63 characters"):
        pg.database_name(values(0, "x" * 60), "gw0")


@pytest.mark.parametrize(
    "name, owned",
    [
        ("test_shop_0_gw0", True),
        ("test_shop_0_gw12", True),
        ("test_shop_0_master", True),
        ("test_shop_0_template", True),
        ("test_shop_0_shared", True),
        ("test_shop_0_djtemplate", True),  # pytest-django's template, migrated once per run
        ("test_shop_0_gw3_1", True),  # a worker's database for a second Django alias
        ("test_shop_0_djtemplate_2", True),
        ("test_shop_10000_gw0", False),  # another copy
        ("test_shop_0_7_gw0", False),  # copy shop-0-7's (a project called shop-0)
        ("test_shop_0_gw0_gw1", False),
        ("test_test_shop_0_gw0_gw0", False),  # pytest-django's own naming: never ours to drop
        ("test_shop_0_gw0_extra", False),
        ("test_shop_0_gwx", False),
        ("shop", False),
        ("test_shop_0_", False),
    ],
)
def test_only_this_copys_databases_are_owned(name, owned):
    assert pg.owned_database(values(0), name) is owned


def test_port_blocks_follow_worker_and_offset():
    assert iso.port_block(values(0), 0, SERVICES) == iso.PortBlock(20000)
    assert iso.port_block(values(0), 1, SERVICES).start == 20010  # seed 002: base + index * block
    assert iso.port_block(values(10000), 4, SERVICES).start == 30040  # a replacement gw4 under -n 4
    # 20 workers per copy (seed 002 validates with -n 12); copies 200 apart never share a port
    blocks = [set(iso.port_block(values(o), i, SERVICES)) for o in (0, 200, 400, 1000, 10000) for i in range(20)]
    assert sum(len(b) for b in blocks) == len(set().union(*blocks)), "blocks overlap"
    assert len(blocks[0]) == 10 and iso.port_block(values(200), 0, SERVICES).start == iso.port_block(values(0), 19, SERVICES).stop


def test_port_block_range_runs_out_clearly():
    assert iso.port_block(values(0), 19, SERVICES).start == 20190
    with pytest.raises(StackError, match="worker 20 has no port block: range 20000-20199 holds 20 blocks of 10; use at most 20 workers"):
        iso.port_block(values(0), 20, SERVICES)
    with pytest.raises(StackError, match="past 65535; use an offset <= 45336"):
        iso.port_block(values(45400), 0, SERVICES)
    assert iso.port_block(values(45336), 19, SERVICES).stop - 1 == 65535


def test_port_block_never_overlaps_the_stack():
    v = values(0, UI_PORT="20005")
    with pytest.raises(StackError, match="overlaps the stack's ui port 20005"):
        iso.port_block(v, 0, SERVICES)
    for offset in (0, 1000, 10000, 20000):
        stack_ports = {int(derived(offset)[f"{s.upper()}_PORT"]) for s in SERVICES}
        for i in range(20):
            assert not stack_ports & set(iso.port_block(values(offset), i, SERVICES))


def test_port_block_index_checks():
    block = iso.PortBlock(20100)
    assert list(block)[:2] == [20100, 20101] and len(list(block)) == 10
    with pytest.raises(StackError, match="outside this worker's block"):
        block.port(10)


def test_topic_namespace_translates_and_strips():
    ns = iso.TopicNamespace("test/gw1")
    assert ns.topic("frigate/camera_0/fire") == "test/gw1/frigate/camera_0/fire"
    assert ns.topic("/a") == "test/gw1/a"
    assert ns.strip("test/gw1/frigate/camera_0/fire") == "frigate/camera_0/fire"
    assert ns.owns("test/gw1/x") and not ns.owns("test/gw10/x")
    with pytest.raises(StackError) as info:
        ns.strip("test/gw10/x")  # seed 002's str.replace would have mangled this
    assert str(info.value) == (
        "topic 'test/gw10/x' is outside this worker's namespace 'test/gw1': "
        "another worker's message, or a topic built without TopicNamespace.topic()"
    )
    assert isinstance(info.value, ValueError)  # what seed 002's callers caught
    assert ns.everything == "test/gw1/#" and iso.TopicNamespace.for_worker("gw3").prefix == "test/gw3"


def test_contexts_differ_per_worker_and_coincide_without_isolation(tmp_path):
    a = context(values(0), "gw0", True, tmp_path)
    b = context(values(0), "gw1", True, tmp_path)
    for field in ("database_name", "database_url", "ports", "tmp_dir", "topics"):
        assert getattr(a, field) != getattr(b, field), field
    assert a.redis.prefix != b.redis.prefix
    assert a.container_name("broker") != b.container_name("broker")
    assert "gw0" in a.tmp_dir.name and a.database_url.endswith("/test_shop_0_gw0")
    shared = [context(values(0), w, False, tmp_path) for w in ("gw0", "gw1")]
    for field in ("database_name", "ports", "tmp_dir", "topics"):
        assert getattr(shared[0], field) == getattr(shared[1], field), field


def test_two_copies_never_share_names(tmp_path):
    a = context(values(0), "gw0", True, tmp_path)
    b = context(values(10000), "gw0", True, tmp_path)
    assert a.database_name != b.database_name and a.redis.prefix != b.redis.prefix
    assert a.container_name("x") != b.container_name("x") and a.tmp_dir != b.tmp_dir
    assert not set(a.ports) & set(b.ports)


def test_redis_db_mode_respects_sixteen_databases(tmp_path):
    from parallel_stacks.kinds import Service, Worker, redis

    service = Service("redis", "REDIS", "127.0.0.1", 6379)

    def db_of(index):
        return redis.KIND.worker_resources(service, values(0), Worker(f"gw{index}", index, f"gw{index}", True, {"redis": "db"}))["redis"].db

    assert context(values(0), "gw3", True, tmp_path, "db").redis.db == 4
    assert db_of(14) == 15
    with pytest.raises(StackError, match="Redis has 16") as info:
        db_of(15)
    assert "DB 0 is the app's" in str(info.value)


@pytest.mark.parametrize("worker, isolated, mode", [
    ("master", True, "db"), ("gw0", True, "db"), ("gw5", True, "db"),
    ("gw0", False, "db"), ("gw3", True, "prefix"), ("gw3", False, "prefix"),
])
def test_tests_never_get_the_apps_redis_db(tmp_path, worker, isolated, mode):
    """DB 0 is the copy's own app data: a suite that calls flushdb() must never reach it."""
    ctx = context(values(0), worker, isolated, tmp_path, mode)
    assert ctx.redis.db >= 1 and ctx.env["REDIS_DB"] == str(ctx.redis.db)
    assert ctx.env["REDIS_URL"].endswith(f"/{ctx.redis.db}") and not ctx.env["REDIS_URL"].endswith("/0")


def test_the_namespace_client_talks_to_its_own_db(tmp_path):
    """redis-py's from_url(url, db=N) keeps the URL's /0: the client must carry its DB in the URL."""
    client = context(values(0), "gw4", True, tmp_path).redis.client()
    assert client.connection_pool.connection_kwargs["db"] == 5


def test_every_common_spelling_is_exported_per_worker(tmp_path):
    env = context(values(10000), "gw2", True, tmp_path).env
    assert env["DATABASE_URL"] == "postgresql://app:pw@127.0.0.1:15432/test_shop_10000_gw2"
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGPASSWORD"], env["PGDATABASE"]) == (
        "127.0.0.1", "15432", "app", "pw", "test_shop_10000_gw2")
    assert (env["REDIS_HOST"], env["REDIS_PORT"], env["REDIS_DB"]) == ("127.0.0.1", "16379", "3")
    assert env["REDIS_URL"] == "redis://127.0.0.1:16379/3"


def test_a_stack_without_postgres_or_redis_has_a_context(tmp_path):
    """Before, build_context raised KeyError 'DATABASE_URL' for a stack without Postgres."""
    vals = {k: v for k, v in derived(0).items() if not k.startswith(("DATABASE", "POSTGRES", "REDIS"))}
    ctx = context(vals, "gw1", True, tmp_path, kinds={"api": "http", "ui": "http"})
    assert ctx.database_name is None and ctx.redis is None and ctx.env == {}


def test_container_name_rejects_bad_service(tmp_path):
    ctx = context(values(0), "gw2", True, tmp_path)
    assert ctx.container_name("mqtt-broker") == "shop-0-gw2-mqtt-broker"
    with pytest.raises(ValueError):
        ctx.container_name("a b")


def test_unsafe_identifiers_are_refused():
    with pytest.raises(StackError, match="unsafe"):
        pg._ident('x"; DROP DATABASE postgres; --')


def test_services_are_read_from_the_derived_values(tmp_path):
    from conftest import make_worktree
    from parallel_stacks import derive

    root = make_worktree(tmp_path / "w")
    copy = derive.copy_of(root, Settings({"PORT_OFFSET": "0"}))
    assert iso.services_of(copy) == list(derive.services(root))


def test_a_suites_own_variable_names_are_mapped_from_the_workers(tmp_path):
    ctx = context(values(10000), "gw1", True, tmp_path)
    variables = iso.worker_variables(ctx)
    mapped = iso.mapped_variables(["MYLIB_TEST_DB = {DATABASE_URL}", "MYLIB_TEST_HOST={PGHOST}:{PGPORT}", "PLAIN = x"], variables)
    assert mapped == {"MYLIB_TEST_DB": ctx.database_url, "MYLIB_TEST_HOST": "127.0.0.1:15432", "PLAIN": "x"}
    assert variables["TEST_WORKER_ID"] == "gw1" and variables["MEDIA_ROOT"] == str(ctx.tmp_dir)


@pytest.mark.parametrize("line, expect", [
    ("MYLIB_DB = {DATABSE_URL}", "names {DATABSE_URL}, not one of this worker's variables"),
    ("no equals sign", "is not NAME = value"),
    ("1BAD = x", "is not NAME = value"),
    ("X = {0}", "isolation_env: 'X = {0}'"),
])
def test_a_bad_mapping_is_one_line(tmp_path, line, expect):
    with pytest.raises(StackError, match=re.escape(expect)) as info:
        iso.mapped_variables([line], iso.worker_variables(context(values(0), "gw0", True, tmp_path)))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- -n auto
def test_cgroup_quota_is_read_and_rounded_up(tmp_path):
    from parallel_stacks.pytest_plugin import workers

    cpu_max = tmp_path / "cpu.max"
    for text, cpus in (("max 100000\n", None), ("150000 100000\n", 2), ("100000 100000", 1), ("50000 100000", 1), ("junk", None)):
        cpu_max.write_text(text)
        assert workers.cgroup_cpus(str(cpu_max)) == cpus, text
    assert workers.cgroup_cpus(str(tmp_path / "absent")) is None
    cpu_max.write_text("100000 100000")
    assert workers.usable_cpus(str(cpu_max)) == 1


def test_auto_workers_never_exceed_what_the_copy_can_isolate():
    from parallel_stacks import kinds
    from parallel_stacks.pytest_plugin import workers

    stack = {kinds.get("postgres"), kinds.get("redis"), kinds.get("http")}
    assert workers.auto_workers(stack, {"redis": "db"}, 2) == 2
    assert workers.auto_workers(stack, {"redis": "db"}, 64) == 15  # Redis DBs 1-15
    assert workers.auto_workers({kinds.get("http")}, {}, 64) == 20  # twenty test-port blocks per copy
    assert workers.auto_workers(stack, {"redis": "db"}, 0) == 1


def test_isolation_line_reports_template_and_clone_times():
    from parallel_stacks.pytest_plugin import isolation_line

    assert isolation_line(120.4, []) == "isolation: template 120 ms"
    assert isolation_line(120.4, [30.2]) == "isolation: template 120 ms, clone median 30 ms, max 30 ms (1 worker)"
    assert isolation_line(99.6, [10, 50, 20, 40]) == "isolation: template 100 ms, clone median 30 ms, max 50 ms (4 workers)"


def test_a_killed_run_whose_process_is_a_zombie_counts_as_gone():
    """A SIGKILLed pytest stays a zombie until its parent reaps it: its run's leftovers are still stale."""
    import os
    import subprocess
    import time

    from parallel_stacks.basics import pid_alive as _alive

    child = subprocess.Popen(["sleep", "30"])
    assert _alive(child.pid)
    child.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child.pid):
        time.sleep(0.05)
    assert not _alive(child.pid), "a zombie was taken for a live run"
    assert os.waitpid(child.pid, 0)[0] == child.pid  # it was a zombie until now: this reaps it
    assert _alive(os.getpid())


def test_the_work_decides_how_many_workers_auto_starts():
    from parallel_stacks.pytest_plugin import workers

    key = workers.selection_key
    assert key(["-n", "auto", "--dist", "load", "-m", "unit", "--junitxml=x.xml", "tests"]) == "-m unit tests"
    assert key(["-n4", "--numprocesses=2", "--no-stack", "-k", "db"]) == "--no-stack -k db"
    assert key(["tests", "-n", "2"]) == key(["tests"])  # `make test` and `make test-parallel` select alike
    assert workers.work_workers(None, 8) == (8, "")  # no record: the CPUs decide
    assert workers.work_workers({"seconds": "x", "tests": 3}, 8) == (8, "")  # a damaged record is ignored
    assert workers.work_workers({"seconds": 100.0, "tests": 500}, 8) == (8, "")
    assert workers.work_workers({"seconds": 7.9, "tests": 500}, 8)[0] == 3
    assert workers.work_workers({"seconds": 100.0, "tests": 2}, 8)[0] == 2  # never more workers than tests
    none, why = workers.work_workers({"seconds": 1.2, "tests": 40}, 8)
    assert none == 0 and why.startswith("-n auto: one process, no workers: the last run of these 40 tests took 1.2 s")


def _count_under_lock(path: str, counter: str, rounds: int) -> None:
    """In a child process: `rounds` times, take the lock, read-modify-write the counter slowly, release."""
    import time as _time
    from pathlib import Path as _Path

    from parallel_stacks.oplock import hold_file, release_file

    for _ in range(rounds):
        fd = hold_file(_Path(path), lambda pid: "")
        value = int(_Path(counter).read_text())
        _time.sleep(0.001)  # widen the window a second holder would need
        _Path(counter).write_text(str(value + 1))
        release_file(_Path(path), fd)


def test_lock_files_exclude_each_other_and_go_with_their_last_holder(tmp_path):
    """hold_file/release_file (the test-run and worker locks): no two holders at once although every release
    removes the file a waiter may already have opened, and no lock file is left afterwards."""
    import multiprocessing

    lock, counter = tmp_path / "copy.testlock", tmp_path / "counter"
    counter.write_text("0")
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_count_under_lock, args=(str(lock), str(counter), 40)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    assert counter.read_text() == "160"  # a lost update would mean two holders at once
    assert not lock.exists()


def test_a_killed_holders_lock_file_is_taken_over_and_removed(tmp_path):
    import os
    import subprocess
    import sys

    from parallel_stacks.oplock import hold_file, release_file

    lock = tmp_path / "copy.testlock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from parallel_stacks.oplock import hold_file; "
                               f"hold_file(Path({str(lock)!r}), str); print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    said = []
    holder.kill()
    holder.wait()
    assert lock.read_text() == str(holder.pid)  # what `kill -9` leaves: the file, with its holder's pid
    fd = hold_file(lock, lambda pid: said.append(pid) or "")
    assert lock.read_text() == str(os.getpid()) and said == []
    release_file(lock, fd)
    assert not lock.exists()


def test_only_kinds_whose_servers_a_run_prepares_must_answer_before_it_starts():
    """The stack-down refusal (before the run lock) asks the servers a run makes or removes something on:
    an api or ui that is down does not stop a suite; a Postgres or Redis that is down does, in one line."""
    from parallel_stacks import kinds

    assert {name for name in kinds.names() if kinds.get(name).prepares_tests} == {"postgres", "redis"}


def test_a_run_of_some_services_still_keeps_workers_off_the_others_ports():
    """SERVICES=postgres: the run isolates postgres only, but a worker's port block still avoids every port of the
    stack (the api another team member runs by hand holds its own)."""
    copy = values(0, UI_PORT="20005").only({"postgres"})
    assert [s.name for s in copy.services] == ["postgres"] and "ui" in [s.name for s in copy.all_services]
    with pytest.raises(StackError, match="overlaps the stack's ui port 20005"):
        iso.port_block(copy, 0, iso.services_of(copy))
    ctx = context(values(0).only({"postgres"}), "gw1", True)
    assert ctx.redis is None and ctx.database_name  # only what the run works on is isolated
