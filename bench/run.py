#!/usr/bin/env python3
"""Measure what isolation costs, against the alternatives, in one run (`make bench`).

Bakes a project into build/bench/, runs every measurement several times and
prints medians and ratios against a baseline measured in the same run:

1. helper overhead: `make env`, `make ports` vs `python -c pass`
2. collision check: `make check-ports`, all free and one port taken
3. stack start: `make up` vs bare `docker compose up -d --build --wait`
4. a database per worker: template clone vs fresh schema vs a new container
   (testcontainers-python)
5. the example suite: `make test` vs `make test-parallel`, and the limit two
   cores allow
6. 50 concurrent PORT_OFFSET=auto claims vs port-for and portpicker
7. a fleet: 1, 5 and 10 copies up at once: time to healthy, memory per copy
8. the first `make` of a fresh clone: its virtualenv with pip vs uv
9. adopted suites (a Django app, an unadapted suite), sequential vs parallel
10. clone cost per Postgres mode (durable; test mode: durability off, data
    on tmpfs) and strategy (WAL_LOG, FILE_COPY), and the wait each worker
    reports (`isolation:` line), against a container per worker
11. a realistic suite of 300 tests mixing database, Redis and HTTP work,
    sequential vs 2 workers
12. adoption: `make adopt` on the largest compose file of the corpus
    (tests/adopt/), and `make stack-env` in the adopted repository vs the
    interpreter's floor (the same target as a baked project's: <= 2x)
13. stopping a copy and `make up` on one that is up, against bare `docker
    compose down` and `docker compose up -d --wait` on the same copy
14. what an idle copy costs: CPU over 30 s against an idle bare Postgres
    container, and `make up` with the health checks before and after issue 28
15. `make dashboard` with three copies up: time to first byte of its page
    and of `/api/copies`, a fresh snapshot and a shared one, against `make
    slots FORMAT=json` (the same snapshot, printed) in the same run

Writes the table into docs/PERFORMANCE.md (between the bench markers) and a
plot to docs/performance.png. Not part of CI: absolute times on a shared
machine mean little; the ratios from one run are the result.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
OUT = TEMPLATE / "build" / "bench"
DOC = TEMPLATE / "docs" / "PERFORMANCE.md"
PLOT = TEMPLATE / "docs" / "performance.png"
OFFSET = "22000"  # the bench's main copy
TEST_MODE_OFFSET = "22400"  # a copy with POSTGRES_DURABILITY=off (section 10)
FREE_OFFSET = "41000"  # nothing runs there
FLEET_BASE = 23000  # fleet copies at 23000, 24000, ...
STOP_OFFSET = 43000  # sections 13 and 14 (--offset): this copy, and the one 1000 above it with the old health checks
DASH_OFFSET = 17000  # section 15 (--dashboard-offset): three copies at this offset, 1000 and 2000 above
DASH_PORT, DASH_PROXY = "27464", "27465"  # section 15: its dashboard, and a named-URL proxy of its own
STARTED = []  # (project, offset) of fleet copies, nuked at the end whatever happens


# ---------------------------------------------------------------- measuring
def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class Table:
    """Rows of (section, label, median seconds, ratio, baseline label, target, note)."""

    def __init__(self):
        self.rows = []

    def add(self, section, label, times, base=None, target="", note=""):
        med = statistics.median(times) if times else float("nan")
        ratio = med / statistics.median(base) if base else None
        self.rows.append((section, label, med, ratio, len(times), target, note))
        shown = f"{ratio:6.2f}x" if ratio is not None else "   base"
        print(f"  {label:<58} {fmt(med):>10}  n={len(times):<2} {shown}  {target}  {note}", flush=True)
        return med

    def note(self, section, label, text):
        self.rows.append((section, label, None, None, 0, "", text))
        print(f"  {label:<58} {text}", flush=True)

    def markdown(self) -> str:
        lines = []
        section = None
        for sec, label, med, ratio, n, target, note in self.rows:
            if sec != section:
                section = sec
                lines += ["", f"### {sec}", "", "| measurement | median | ratio | target | note |", "|---|---|---|---|---|"]
            med_s = fmt(med) if med is not None else ""
            ratio_s = f"{ratio:.2f}x" if ratio is not None else ("baseline" if med is not None else "")
            lines.append(f"| {label} | {med_s} | {ratio_s} | {target} | {note} |")
        return "\n".join(lines).strip() + "\n"


def fmt(seconds) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# ---------------------------------------------------------------- the baked project
def image_env() -> dict:
    """Image settings: the caller's, else the offline stand-ins when this machine has them."""
    from demo import OFFLINE, image_overrides

    return {**image_overrides(), **{var: os.environ[var] for var in OFFLINE if os.environ.get(var)}}


def bake_project(directory: Path):
    from bakery import Project, bake

    return Project(bake(directory), image_env())


def run(cmd, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


# ---------------------------------------------------------------- 1, 2: helpers
def helpers(table: Table, project, repeat: int) -> dict:
    section = "1-2. Helper overhead (vs the interpreter's floor)"
    print(f"\n{section}")
    env = project.environment(PORT_OFFSET=FREE_OFFSET)
    floor = timed(lambda: run([sys.executable, "-c", "pass"]), repeat)
    table.add(section, f"`{Path(sys.executable).name} -c pass` (floor)", floor)
    make = lambda target, e=env: run(["make", target], cwd=project.path, env=e)  # noqa: E731
    make("env")  # fill the cache
    out = {}
    out["env"] = table.add(section, "`make env`", timed(lambda: make("env"), repeat), floor, "<= 2x")
    out["ports"] = table.add(section, "`make ports`", timed(lambda: make("ports"), repeat), floor, "<= 2x")
    from parallel_stacks.cache import cache_file

    cache = Path(cache_file(str(project.path.resolve())))

    def cold():
        cache.unlink(missing_ok=True)
        make("env")

    table.add(section, "`make env`, cache emptied first (first call after an edit)", timed(cold, repeat), floor, "", "what every call cost before the cache")
    out["check"] = table.add(section, "`make check-ports`, every port free", timed(lambda: make("check-ports"), repeat), floor, "<= 3x")
    values = project.values(PORT_OFFSET=FREE_OFFSET)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(values["API_PORT"])))
        listener.listen()
        taken = timed(lambda: run(["make", "check-ports"], cwd=project.path, env=env, check=False), repeat)
    table.add(section, "`make check-ports`, one port taken (owner named via psutil)", taken, floor)
    out["floor"] = statistics.median(floor)
    return out


# ---------------------------------------------------------------- 8: virtualenv setup
def venv_setup(table: Table, project, repeat: int) -> None:
    section = "8. First `make` of a fresh clone: the virtualenv (scripts/bootstrap-venv.sh)"
    print(f"\n{section}")
    script, req = project.path / "scripts" / "bootstrap-venv.sh", project.path / "requirements-dev.txt"
    target, caches = OUT / "venv", OUT / "caches"

    def setup(**env):
        shutil.rmtree(target, ignore_errors=True)
        run(["bash", str(script), str(target), str(req)], env={**os.environ, **env})

    setup(UV="none")  # pip's own wheel cache warm, as on any machine that has installed these once
    pip_t = timed(lambda: setup(UV="none"), repeat)
    table.add(section, "pip (`UV=none`), pip's cache warm", pip_t)

    def cold():
        shutil.rmtree(caches, ignore_errors=True)
        setup(XDG_CACHE_HOME=str(caches), UV="")

    table.add(section, "uv, first ever: uv fetched from PyPI, every cache empty", timed(cold, max(2, repeat // 2)), pip_t, "",
              "a user's very first bake")
    warm = timed(lambda: setup(XDG_CACHE_HOME=str(caches), UV=""), repeat)
    table.add(section, "uv, cached (every later clone or worktree)", warm, pip_t, "<= 0.2x")
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(caches, ignore_errors=True)


# ---------------------------------------------------------------- 3: stack start
def stack_start(table: Table, project, repeat: int) -> None:
    section = "3. Stack start (fresh volume each time)"
    print(f"\n{section}")
    offset = "42000"
    env = project.environment(PORT_OFFSET=offset, FORCE="1")
    values = project.values(PORT_OFFSET=offset)
    compose_env = {**env, **values}
    bare_cmd = ["docker", "compose", "-p", values["COMPOSE_PROJECT_NAME"], "-f", str(project.path / "compose.yaml"),
                "--project-directory", str(project.path), "up", "-d", "--build", "--wait"]
    make_t, bare_t = [], []
    for i in range(repeat):
        for label in (("make", "bare") if i % 2 == 0 else ("bare", "make")):  # alternate: no order bias
            start = time.perf_counter()
            if label == "make":
                run(["make", "up"], cwd=project.path, env=env)
                make_t.append(time.perf_counter() - start)
            else:
                run(bare_cmd, cwd=project.path, env=compose_env)
                bare_t.append(time.perf_counter() - start)
            run(["make", "nuke"], cwd=project.path, env=env)
    table.add(section, "bare `docker compose up -d --build --wait`", bare_t)
    table.add(section, "`make up` (ownership, ports, images, secret, then the same compose)", make_t, bare_t, "<= 1.10x")
    run(["make", "up"], cwd=project.path, env=env)
    table.add(section, "`make up` on a copy that is already up", timed(lambda: run(["make", "up"], cwd=project.path, env=env), repeat))
    run(["make", "nuke"], cwd=project.path, env=env)


# ---------------------------------------------------------------- 4: a database per worker
def heavy_schema(tables: int) -> str:
    """A schema the size of a real project's migration history."""
    return "\n".join(
        f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL, ref integer, created timestamptz DEFAULT now(), payload jsonb);"
        f"CREATE INDEX t{i}_name ON t{i} (name); CREATE INDEX t{i}_ref ON t{i} (ref);"
        for i in range(tables)
    )


def container_per_worker(count: int) -> list[float]:
    """Seconds for a Postgres container per worker (testcontainers: start, connect, stop), `count` times."""
    import psycopg

    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the reaper image needs a registry
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    from testcontainers.postgres import PostgresContainer

    image = image_env().get("POSTGRES_IMAGE", "postgres:16-alpine")

    def container():
        with PostgresContainer(image, driver=None) as pg:
            psycopg.connect(pg.get_connection_url()).close()

    return timed(container, count)


def databases(table: Table, project, values: dict, repeat: int, tables: int, containers: int) -> None:
    import psycopg

    section = "4. A database per worker"
    print(f"\n{section}")
    admin = values["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    base = admin.rsplit("/", 1)[0]
    clone_times = {}
    with psycopg.connect(admin, autocommit=True) as conn:
        for label, schema in (("example schema", (project.path / "db" / "schema.sql").read_text()),
                              (f"{tables}-table schema", heavy_schema(tables))):
            conn.execute("DROP DATABASE IF EXISTS bench_tpl WITH (FORCE)")
            conn.execute("CREATE DATABASE bench_tpl")
            with psycopg.connect(base + "/bench_tpl", autocommit=True) as tpl:
                tpl.execute(schema)

            def clone():  # what a worker pays: connect, clone, connect to its database
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute("DROP DATABASE IF EXISTS bench_w WITH (FORCE)")
                    c.execute("CREATE DATABASE bench_w TEMPLATE bench_tpl")
                psycopg.connect(base + "/bench_w").close()

            def fresh():
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute("DROP DATABASE IF EXISTS bench_w WITH (FORCE)")
                    c.execute("CREATE DATABASE bench_w")
                with psycopg.connect(base + "/bench_w", autocommit=True) as w:
                    w.execute(schema)

            fresh_t = timed(fresh, repeat)
            table.add(section, f"fresh database + schema ({label})", fresh_t)
            clone_times[label] = timed(clone, repeat)
            table.add(section, f"template clone ({label})", clone_times[label], fresh_t)
        conn.execute("DROP DATABASE IF EXISTS bench_w WITH (FORCE)")
        conn.execute("DROP DATABASE IF EXISTS bench_tpl WITH (FORCE)")

    cont_t = container_per_worker(containers)
    table.add(section, "testcontainers `PostgresContainer` per worker (start, connect, stop)", cont_t)
    table.add(section, "template clone (example schema) vs a container per worker", clone_times["example schema"], cont_t, "<= 0.05x")


# ---------------------------------------------------------------- 5: the suite
SCALED_MODULE = """
import pytest

pytestmark = pytest.mark.api


@pytest.mark.parametrize("n", range(5))
def test_scaled(db, redis_namespace, n):
    db.execute("INSERT INTO items VALUES (%s, 'x', 1) ON CONFLICT (id) DO NOTHING", (1000 + n,))
    db.execute("SELECT pg_sleep(0.1)")
    client = redis_namespace.client()
    assert client.incr(redis_namespace.key(f"scaled:{n}")) >= 1
    assert db.execute("SELECT count(*) FROM items WHERE id = %s", (1000 + n,)).fetchone()[0] == 1
"""


def suite(table: Table, project, repeat: int, modules: int) -> dict:
    section = "5. The example suite, sequential vs parallel"
    print(f"\n{section} ({os.cpu_count()} CPUs)")
    make = lambda target, **e: project.make(target, PORT_OFFSET=OFFSET, **e)  # noqa: E731
    make("test")  # warm-up
    out = {}
    for label, extra in (("example suite (22 tests)", 0), (f"example suite + {modules * 5} api tests of ~0.1 s I/O", modules)):
        for i in range(extra):
            (project.path / "tests" / f"test_bench_scaled_{i}.py").write_text(SCALED_MODULE)
        seq = timed(lambda: make("test"), repeat)
        table.add(section, f"`make test`, {label}", seq)
        par = timed(lambda: make("test-parallel", PYTEST_WORKERS="2"), repeat)
        table.add(section, f"`make test-parallel` (2 workers), {label}", par, seq, ">= 2x faster (<= 0.50x)")
        # fixed costs: the same runs with every test deselected
        seq0 = statistics.median(timed(lambda: make("test", check=False, ARGS="-k no_test_matches_this"), repeat))
        par0 = statistics.median(timed(lambda: make("test-parallel", check=False, PYTEST_WORKERS="2", ARGS="-k no_test_matches_this"), repeat))
        work = statistics.median(seq) - seq0
        limit = statistics.median(seq) / (par0 + work / 2)
        table.note(section, f"two-core limit, {label}",
                   f"fixed cost {fmt(seq0)} sequential, {fmt(par0)} parallel; work {fmt(work)}; "
                   f"best possible on 2 workers {limit:.2f}x faster, measured {statistics.median(seq) / statistics.median(par):.2f}x")
        out[label] = (statistics.median(seq), statistics.median(par), limit)
    for path in project.path.glob("tests/test_bench_scaled_*.py"):
        path.unlink()
    return out


# ---------------------------------------------------------------- 6: concurrent claims
CLAIMER = """
import sys, time
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
t = time.perf_counter()
if sys.argv[3] == "registry":
    from parallel_stacks import derive
    from pathlib import Path
    out = derive.load(Path(sys.argv[1]), {{"PORT_OFFSET": "auto", "PARALLEL_STACKS_STATE_DIR": {state!r}}})["PORT_OFFSET"]
elif sys.argv[3] == "port-for":
    import port_for
    out = port_for.select_random()
else:
    import portpicker
    out = portpicker.pick_unused_port()
print(out, time.perf_counter() - t)
"""


def claims(table: Table, count: int) -> None:
    section = f"6. {count} concurrent claims"
    print(f"\n{section}")
    from bakery import make_worktree

    base = OUT / "claims"
    shutil.rmtree(base, ignore_errors=True)
    roots = [make_worktree(base / f"w{i}") for i in range(count)]
    state = base / "state"
    guarantees = {
        "registry": "a slot per worktree, 4 ports each, kept until released, below the ephemeral range, "
                    "checked against listeners and containers, remembered in .env.dynamic",
        "port-for": "one free port now, outside the ephemeral range; nothing stops another process taking it next",
        "portpicker": "one port free now, inside the ephemeral range (any outgoing connection may take it); no reservation without portserver",
    }
    for tool in ("registry", "port-for", "portpicker"):
        code = CLAIMER.format(state=str(state))
        start = time.time() + 3
        procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(start), tool], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in roots]
        results = [p.communicate(timeout=300) for p in procs]
        wall = time.time() - start
        ok = [r[0].split() for p, r in zip(procs, results) if p.returncode == 0 and r[0].strip()]
        distinct = len({o[0] for o in ok})
        per_claim = statistics.median(float(o[1]) for o in ok) if ok else float("nan")
        table.note(section, f"{tool}: {count} at once",
                   f"{distinct}/{count} distinct, wall {wall:.2f} s, median per claim {fmt(per_claim)}; {guarantees[tool]}")
    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- 7: the fleet
def memory_of(projects: list[str]) -> dict[str, float]:
    """{compose project: MiB} summed over its running containers (docker stats)."""
    out = run(["docker", "stats", "--no-stream", "--format", "{{json .}}"]).stdout
    units = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    mem = {p: 0.0 for p in projects}
    for line in out.splitlines():
        rec = json.loads(line)
        used = rec["MemUsage"].split("/")[0].strip()
        number = used.rstrip("BKMGib")
        unit = used[len(number):]
        for p in projects:
            if rec["Name"].startswith(p + "-"):
                mem[p] += float(number) * units.get(unit, 1)
    return mem


def fleet(table: Table, sizes: list[int]) -> dict:
    section = "7. A fleet: copies up at once, one worktree each"
    print(f"\n{section}")
    results = {}
    baked = [bake_project(OUT / "fleet" / f"w{i}") for i in range(max(sizes))]
    for size in sizes:
        members = baked[:size]
        offsets = [str(FLEET_BASE + 1000 * i) for i in range(size)]
        names = [m.values(PORT_OFFSET=o)["COMPOSE_PROJECT_NAME"] for m, o in zip(members, offsets)]
        STARTED.extend(zip(members, offsets))
        start = time.perf_counter()
        procs = [subprocess.Popen(["make", "up"], cwd=m.path, env=m.environment(PORT_OFFSET=o), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for m, o in zip(members, offsets)]
        errors = [p.communicate()[1] for p in procs]
        elapsed = time.perf_counter() - start
        failed = sum(p.returncode != 0 for p in procs)
        time.sleep(2)  # let the containers settle before sampling memory
        mem = memory_of(names)
        per_copy = statistics.mean(mem.values())
        start = time.perf_counter()
        nukes = [subprocess.Popen(["make", "nuke"], cwd=m.path, env=m.environment(PORT_OFFSET=o, FORCE="1"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for m, o in zip(members, offsets)]
        for p in nukes:
            p.wait()
        nuke_s = time.perf_counter() - start
        results[size] = (elapsed, per_copy, nuke_s, failed)
        note = f"memory {per_copy:.0f} MiB per copy; all nuked in {nuke_s:.1f} s" + (f"; {failed} FAILED: {errors[0][-200:]}" if failed else "")
        table.add(section, f"{size} cop{'y' if size == 1 else 'ies'}: `make up` in each at once, until all healthy",
                  [elapsed], [results[sizes[0]][0]] if size != sizes[0] else None, "", note)
    return results


# ---------------------------------------------------------------- 15: the dashboard
def first_byte(port: str, path: str) -> float:
    """Seconds from sending GET `path` to the first byte of the answer's body."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    try:
        start = time.perf_counter()
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        answer = conn.getresponse()
        answer.read(1)
        elapsed = time.perf_counter() - start
        answer.read()
        assert answer.status == 200, answer.status
        return elapsed
    finally:
        conn.close()


def dashboard(table: Table, repeat: int, offset: int) -> None:
    section = "15. `make dashboard` (issue 26): time to first byte with three copies up"
    print(f"\n{section}")
    state = OUT / "dashboard-state"
    extra = {"PARALLEL_STACKS_STATE_DIR": str(state), "NAMED_URLS_PORT": DASH_PROXY, "DASHBOARD_PORT": DASH_PORT}
    members = [bake_project(OUT / "dashboard" / f"w{i}") for i in range(3)]
    offsets = [str(offset + 1000 * i) for i in range(3)]
    for member in members:
        member.base_env = {**member.base_env, **extra}
    STARTED.extend(zip(members, offsets))
    try:
        for member, copy in zip(members, offsets):
            member.make("up", PORT_OFFSET=copy)
        members[0].make("dashboard")
        slots = timed(lambda: members[0].make("slots", FORMAT="json"), repeat)
        table.add(section, "`make slots FORMAT=json` (the same snapshot, printed)", slots)

        def fresh(path):
            time.sleep(1.1)  # the shared snapshot is older than a second: this request takes a new one (not timed)
            return first_byte(DASH_PORT, path)

        for path, label in (("/", "the page"), ("/api/copies", "`/api/copies`")):
            times = [fresh(path) for _ in range(repeat)]
            table.add(section, f"{label}, a new snapshot taken", times, slots, "<= 1x")
            first_byte(DASH_PORT, path)
            shared = [first_byte(DASH_PORT, path) for _ in range(repeat)]  # within the second: the snapshot is shared
            table.add(section, f"{label}, the snapshot another tab took (< 1 s old)", shared, slots, "", "what every other open tab costs")
    finally:
        members[0].make("dashboard", check=False, STOP="1")
        for member, copy in zip(members, offsets):
            member.make("nuke", check=False, PORT_OFFSET=copy, FORCE="1")


# ---------------------------------------------------------------- 9: adopted suites
ADOPT_OFFSET = "23000"


def adopted_suites(table: Table, repeat: int) -> None:
    """A Django project's pytest-django suite and an unadapted suite, as a user drops them into a baked project."""
    section = "9. Adopted suites, sequential vs parallel (2 workers)"
    print(f"\n{section}")
    project = bake_project(OUT / "adopted")
    STARTED.append((project, ADOPT_OFFSET))
    project.add_django_suite()
    shutil.copy(TEMPLATE / "tests" / "suites" / "unadapted" / "test_unadapted.py", project.path / "unadapted_test.py")
    project.use_own_virtualenv()
    make = lambda target, args, **e: project.make(target, PORT_OFFSET=ADOPT_OFFSET, ARGS=args, **e)  # noqa: E731
    make("up", "")
    for label, args in (("Django suite (18 tests, pytest-django)", "shop"), ("unadapted suite (6 tests, flushdb, libpq defaults)", "unadapted_test.py")):
        make("test", args)  # warm-up
        seq = timed(lambda: make("test", args), repeat)
        table.add(section, f"`make test`, {label}", seq)
        par = timed(lambda: make("test-parallel", args, PYTEST_WORKERS="2"), repeat)
        table.add(section, f"`make test-parallel`, {label}", par, seq)
    # what the template clone saves: pytest-django's own way, migrating every worker's database
    # (less the one test that checks the database is ours: under pytest-django's own naming it is not)
    own = timed(lambda: make("test-parallel", "shop -k 'not agree' -p no:parallel_stacks.djangodb", PYTEST_WORKERS="2"), repeat)
    table.add(section, "Django suite, pytest-django migrating per worker (baseline)", own)
    ours = timed(lambda: make("test-parallel", "shop -k 'not agree'", PYTEST_WORKERS="2"), repeat)
    table.add(section, "Django suite, workers cloned from one migrated template", ours, own)
    project.make("nuke", PORT_OFFSET=ADOPT_OFFSET, FORCE="1")


# ---------------------------------------------------------------- 10: clone cost per mode
def clone_modes(table: Table, project, repeat: int, containers: int) -> None:
    """What a worker's database costs in each Postgres mode and strategy, against a container per worker."""
    import psycopg

    section = "10. A worker's database per Postgres mode and clone strategy"
    print(f"\n{section}")
    copies = {"durable": (OFFSET, {}), "test mode (fsync off, tmpfs)": (TEST_MODE_OFFSET, {"POSTGRES_DURABILITY": "off"})}
    schema = (project.path / "db" / "schema.sql").read_text()
    waits = {}
    for mode, (offset, env) in copies.items():
        project.make("up", PORT_OFFSET=offset, **env)
        STARTED.append((project, offset))
        values = project.values(PORT_OFFSET=offset, **env)
        admin = values["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench_tpl WITH (FORCE)")
            conn.execute("CREATE DATABASE bench_tpl")
            with psycopg.connect(admin.rsplit("/", 1)[0] + "/bench_tpl", autocommit=True) as tpl:
                tpl.execute(schema)
            conn.execute("ALTER DATABASE bench_tpl WITH ALLOW_CONNECTIONS false")
            for strategy in ("WAL_LOG", "FILE_COPY"):
                def clone():  # the statement the plugin runs, on an open admin connection
                    conn.execute("DROP DATABASE IF EXISTS bench_w")
                    conn.execute(f"CREATE DATABASE bench_w TEMPLATE bench_tpl STRATEGY {strategy}")
                table.add(section, f"CREATE DATABASE ... TEMPLATE, {mode}, {strategy}", timed(clone, repeat * 4))
            conn.execute("DROP DATABASE IF EXISTS bench_w")
            conn.execute("DROP DATABASE IF EXISTS bench_tpl")
        # what the plugin reports: every worker's wait for its own database and Redis DB
        medians, templates = [], []
        for _ in range(repeat):
            out = project.make("test-parallel", PORT_OFFSET=offset, PYTEST_WORKERS="2", **env).stdout
            line = next(ln for ln in out.splitlines() if ln.startswith("isolation:"))
            medians.append(float(line.split("clone median ")[1].split(" ms")[0]) / 1000)
            templates.append(float(line.split("template ")[1].split(" ms")[0]) / 1000)
        waits[mode] = medians
        table.add(section, f"controller, once per run: leftovers and template (`isolation: template`), {mode}", templates)
        table.add(section, f"worker's wait for its database (`isolation:` median, 2 workers), {mode}", medians)
        project.make("nuke", PORT_OFFSET=offset, FORCE="1", **env)
    cont_t = container_per_worker(containers)
    table.add(section, "a Postgres container per worker (testcontainers: start, connect, stop)", cont_t)
    table.add(section, "worker's wait, test mode, vs a container per worker", waits["test mode (fsync off, tmpfs)"], cont_t, "<= 0.02x")


# ---------------------------------------------------------------- 11: a realistic suite
REALISTIC = {
    "orders": """
import pytest

pytestmark = pytest.mark.api


@pytest.fixture
def shop(db):
    db.execute("DELETE FROM orders")
    db.execute("DELETE FROM items")
    with db.cursor() as cur:
        cur.executemany("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)", [(i, f"item {i}", i % 17 + 0.5) for i in range(1, 201)])
    yield db
    db.execute("DELETE FROM orders")
    db.execute("DELETE FROM items")


@pytest.mark.parametrize("n", range(10))
def test_order_totals(shop, n):
    with shop.cursor() as cur:
        cur.executemany("INSERT INTO orders (item_id, quantity) VALUES (%s, %s)", [(1 + (i * 7 + n) % 200, 1 + i % 5) for i in range(100)])
    total = shop.execute("SELECT sum(i.price * o.quantity) FROM orders o JOIN items i ON i.id = o.item_id").fetchone()[0]
    expected = sum((1 + (i * 7 + n) % 200) % 17 + 0.5 for i in range(100) for _ in range(1 + i % 5))
    assert float(total) == pytest.approx(expected)
    top = shop.execute("SELECT item_id FROM orders GROUP BY item_id ORDER BY sum(quantity) DESC, item_id LIMIT 1").fetchone()
    assert top is not None
""",
    "cache": """
import pytest

pytestmark = pytest.mark.api


@pytest.mark.parametrize("n", range(10))
def test_cart_in_redis(redis_namespace, n):
    client = redis_namespace.client()
    cart = redis_namespace.key(f"cart:{n}")
    pipe = client.pipeline()
    for i in range(200):
        pipe.hincrby(cart, f"sku{i % 37}", 1 + i % 3)
    pipe.execute()
    assert sum(int(v) for v in client.hvals(cart)) == sum(1 + i % 3 for i in range(200))
    client.zadd(redis_namespace.key("rank"), {f"sku{i}": i * n for i in range(50)})
    assert len(client.zrevrange(redis_namespace.key("rank"), 0, 9)) == 10
    client.delete(cart, redis_namespace.key("rank"))
""",
    "http": """
import json
import urllib.request

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("n", range(10))
def test_api_answers(stack, n):
    with urllib.request.urlopen(stack["API_URL"] + ("/health" if n % 2 else "/"), timeout=10) as resp:
        body = json.load(resp)
    assert resp.status == 200 and body["port_offset"] == int(stack["PORT_OFFSET"])
""",
}


def realistic(table: Table, project, repeat: int) -> None:
    section = "11. A realistic suite: 300 tests of database, Redis and HTTP work"
    print(f"\n{section}")
    suite = project.path / "tests" / "realistic"
    suite.mkdir()
    for kind, text in REALISTIC.items():
        for i in range(10):
            (suite / f"test_{kind}_{i}.py").write_text(text)
    make = lambda target, **e: project.make(target, PORT_OFFSET=OFFSET, ARGS="tests/realistic", **e)  # noqa: E731
    project.make("up", PORT_OFFSET=OFFSET)
    out = make("test").stdout
    assert " 300 passed" in out, out[-500:]
    seq = timed(lambda: make("test"), repeat)
    table.add(section, "`make test`", seq)
    par = timed(lambda: make("test-parallel", PYTEST_WORKERS="2"), repeat)
    table.add(section, "`make test-parallel` (2 workers)", par, seq, "<= 0.55x")
    auto = timed(lambda: make("test-parallel"), repeat)
    table.add(section, "`make test-parallel` (-n auto: the work and the CPUs decide)", auto, seq)
    shutil.rmtree(suite)
    project.make("nuke", PORT_OFFSET=OFFSET, FORCE="1")


# ---------------------------------------------------------------- 13: stop, and up on an up copy
def bytecode_compiled() -> None:
    """Compile the helper package and the virtualenv's modules once, as pip does at install: with
    PYTHONDONTWRITEBYTECODE=1 (set on some machines) and uv installs nothing is cached, and every helper
    call would compile ~45 modules (~0.2-0.3 s) that a user's machine compiles once."""
    import compileall
    import sysconfig

    from bakery import PACKAGE

    for directory in (PACKAGE, Path(sysconfig.get_paths()["purelib"])):
        compileall.compile_dir(str(directory), quiet=2, workers=2)


def stop_and_restart(table: Table, project, repeat: int, offset: str) -> None:
    section = "13. Stopping a copy; `make up` on a copy that is up (issue 24)"
    print(f"\n{section}")
    bytecode_compiled()
    env = project.environment(PORT_OFFSET=offset, FORCE="1")
    values = project.values(PORT_OFFSET=offset)
    compose_env = {**env, **values}
    bare = ["docker", "compose", "-p", values["COMPOSE_PROJECT_NAME"], "-f", str(project.path / "compose.yaml"),
            "--project-directory", str(project.path)]
    make = lambda target: run(["make", target], cwd=project.path, env=env)  # noqa: E731
    STARTED.append((project, offset))
    down_make, down_bare = [], []
    for i in range(repeat):
        for label in (("make", "bare") if i % 2 == 0 else ("bare", "make")):  # alternate: no order bias
            make("up")  # a healthy copy, started the usual way
            start = time.perf_counter()
            if label == "make":
                make("down")
                down_make.append(time.perf_counter() - start)
            else:
                run([*bare, "down"], cwd=project.path, env=compose_env)
                down_bare.append(time.perf_counter() - start)
    table.add(section, "bare `docker compose down` of a healthy copy", down_bare)
    table.add(section, "`make down` (ownership, then the same compose, then its named URLs withdrawn)", down_make, down_bare,
              "< 3 s", "was 11.4 s: the Postgres stand-in ignored its stop signal")
    make("up")
    up_bare = timed(lambda: run([*bare, "up", "-d", "--wait"], cwd=project.path, env=compose_env), repeat)
    table.add(section, "bare `docker compose up -d --wait` on a copy that is up", up_bare)
    make("up")  # the stamp of what runs now (bare compose left none)
    up_make = timed(lambda: make("up"), repeat)
    table.add(section, "`make up` on a copy that is up (nothing changed: no compose build or up)", up_make, up_bare, "< 1 s",
              "was 2.1-2.7 s: compose's own round of checks, and a build")
    make("nuke")


# ---------------------------------------------------------------- 14: idle cost, start with the old and new checks
# compose.yaml's health checks before issue 28: every 2 s, the api and ui through a new interpreter (the api's
# --check asked /health, which queried Postgres, Redis and the broker)
OLD_CHECKS = {"api": ["CMD", "python3", "/app/app.py", "--check"], "ui": ["CMD", "python3", "/app/server.py", "--check"]}


def with_old_health_checks(path: Path) -> None:
    import yaml

    compose = path / "compose.yaml"
    model = yaml.safe_load(compose.read_text())
    model.pop("x-healthcheck", None)
    for name, svc in model["services"].items():
        test = OLD_CHECKS.get(name, svc["healthcheck"]["test"])
        svc["healthcheck"] = {"test": test, "interval": "2s", "timeout": "5s", "retries": 60}
    compose.write_text(yaml.safe_dump(model, sort_keys=False))


def bare_postgres_idle(seconds: float) -> float:
    """Share of a core an idle Postgres container alone uses over `seconds` (the same image the copies use)."""
    from bakery import container_stats

    image = image_env().get("POSTGRES_IMAGE", "postgres:16-alpine")
    cid = run(["docker", "run", "-d", "--rm", "-e", "POSTGRES_PASSWORD=bench", "--label", "dev.parallel-stacks.bench=idle", image]).stdout.strip()
    try:
        deadline = time.monotonic() + 120
        while run(["docker", "exec", cid, "pg_isready", "-h", "127.0.0.1", "-U", "postgres"], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the bare postgres container did not become ready")
            time.sleep(0.5)
        time.sleep(5)  # settle
        first, start = container_stats(cid)["cpu_ns"], time.monotonic()
        time.sleep(seconds)
        return (container_stats(cid)["cpu_ns"] - first) / 1e9 / (time.monotonic() - start)
    finally:
        run(["docker", "rm", "-f", cid], check=False)


def idle_cost(table: Table, project, repeat: int, offset: str, seconds: float = 30) -> None:
    from bakery import idle_cpu

    section = f"14. An idle copy's cost (issue 28): CPU over {seconds:.0f} s, and `make up` with the old and new health checks"
    print(f"\n{section}")
    bytecode_compiled()
    old = bake_project(OUT / "old-checks")
    with_old_health_checks(old.path)
    old_offset = str(int(offset) + 1000)
    copies = {"new": (project, offset), "old": (old, old_offset)}
    STARTED.extend(copies.values())
    ups = {"new": [], "old": []}
    for i in range(repeat):
        for label in (("new", "old") if i % 2 == 0 else ("old", "new")):
            member, at = copies[label]
            start = time.perf_counter()
            member.make("up", PORT_OFFSET=at)
            ups[label].append(time.perf_counter() - start)
            member.make("nuke", PORT_OFFSET=at, FORCE="1")
    table.add(section, "`make up`, fresh volume, health checks before issue 28 (every 2 s; api and ui via python3)", ups["old"])
    table.add(section, "`make up`, fresh volume, start_interval 1 s, then every 30 s", ups["new"], ups["old"], "<= 1.00x")
    bare = [bare_postgres_idle(seconds)]
    share = lambda x: f"{x * 100:.2f}% of one core"  # noqa: E731
    table.add(section, f"idle bare Postgres container: CPU time per {seconds:.0f} s", [bare[0] * seconds], None, "", share(bare[0]))
    for label, text in (("old", "health checks before issue 28"), ("new", "health checks of issue 28")):
        member, at = copies[label]
        member.make("up", PORT_OFFSET=at)
        time.sleep(5)  # settle: start-up work done
        name = member.values(PORT_OFFSET=at)["COMPOSE_PROJECT_NAME"]
        used = idle_cpu([name], seconds)[name]
        table.add(section, f"idle copy (5 services), {text}: CPU time per {seconds:.0f} s", [used * seconds], [bare[0] * seconds],
                  "<= 1% of one core" if label == "new" else "", share(used))
        member.make("nuke", PORT_OFFSET=at, FORCE="1")


# ---------------------------------------------------------------- report
def plot(helper: dict, suite_out: dict, fleet_out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    sizes = sorted(fleet_out)
    ax.plot(sizes, [fleet_out[s][0] for s in sizes], "o-", label="time until all healthy (s)")
    ax.plot(sizes, [fleet_out[s][2] for s in sizes], "s--", label="time to nuke all (s)")
    ax.set_xlabel("copies started at once (2 cores)")
    ax.set_ylabel("seconds")
    ax2 = ax.twinx()
    ax2.plot(sizes, [fleet_out[s][1] for s in sizes], "^:", color="tab:green", label="memory per copy (MiB)")
    ax2.set_ylabel("MiB per copy")
    ax2.set_ylim(bottom=0)
    ax.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], loc="upper left", fontsize=8)
    ax.set_title("Fleet: cost per copy")
    ax = axes[1]
    labels = ["make env", "make ports", "check-ports"]
    ratios = [helper["env"] / helper["floor"], helper["ports"] / helper["floor"], helper["check"] / helper["floor"]]
    targets = [2, 2, 3]
    ax.bar(labels, ratios, color="tab:blue", label="measured (x interpreter start)")
    ax.scatter(labels, targets, color="tab:red", marker="_", s=600, label="target", zorder=3)
    ax.set_ylabel("x `python -c pass`")
    ax.set_title("Helpers vs the interpreter's floor")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    print(f"\nwrote {PLOT.relative_to(TEMPLATE)}")


# ---------------------------------------------------------------- 12: adoption
def adoption(table: Table, repeat: int) -> None:
    section = "12. Adoption (the corpus's largest compose file)"
    corpus = TEMPLATE / "tests" / "adopt"
    files = [f for d in corpus.iterdir() if d.is_dir() for f in d.iterdir() if f.is_file() and "compose" in f.name]
    largest = max(files, key=lambda f: f.stat().st_size)
    example = largest.parent
    services = len(__import__("yaml").safe_load(largest.read_text())["services"])
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}
    copies = iter(range(10_000))

    def fresh() -> Path:
        repo = OUT / "adopt" / f"{example.name}-{next(copies)}"
        shutil.copytree(example, repo)
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "theirs"]):
            run(["git", "-C", str(repo), *args], env=env)
        return repo

    repos = [fresh() for _ in range(repeat)]
    pending = iter(repos)
    adopt_times = timed(lambda: run(["make", "-s", "adopt", f"TARGET={next(pending)}"], cwd=TEMPLATE), repeat)
    label = f"`make adopt` of `{example.name}/{largest.name}` ({largest.stat().st_size // 1024} KiB, {services} services)"
    table.add(section, label, adopt_times, note="diff shown, helper package copied, compose config checked")
    again = timed(lambda: run(["make", "-s", "adopt", f"TARGET={repos[0]}"], cwd=TEMPLATE), repeat)
    table.add(section, "a second `make adopt` (nothing to change)", again)
    floor = timed(lambda: run([sys.executable, "-c", "pass"]), repeat * 6)
    table.add(section, f"`{Path(sys.executable).name} -c pass` (floor)", floor)
    stack_env = {**os.environ, "STACK_PYTHON": sys.executable, "PORT_OFFSET": OFFSET, "NAMED_URLS_PORT": "off"}
    run(["make", "-s", "stack-env"], cwd=repos[0], env=stack_env)  # fills the cache, as any first call does
    table.add(section, "`make stack-env` in the adopted repository", timed(lambda: run(["make", "-s", "stack-env"], cwd=repos[0], env=stack_env), repeat * 6), floor, "<= 2x")


def write_doc(table: Table, header: str) -> None:
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    DOC.write_text(f"{before}{begin}\n{header}\n\n{table.markdown()}\n![fleet and helper figures](performance.png)\n{end}{after}")
    print(f"wrote {DOC.relative_to(TEMPLATE)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (default 5; helpers run 6x as often)")
    parser.add_argument("--tables", type=int, default=100, help="tables in the heavy schema (default 100)")
    parser.add_argument("--modules", type=int, default=8, help="extra api test modules for the scaled suite (default 8)")
    parser.add_argument("--containers", type=int, default=3, help="testcontainers starts to time (default 3)")
    parser.add_argument("--claims", type=int, default=50, help="concurrent PORT_OFFSET=auto claims (default 50)")
    parser.add_argument("--fleet", default="1,5,10", help="fleet sizes, comma-separated (default 1,5,10)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", help="which measurements to run, e.g. 1,2,10 (default all)")
    parser.add_argument("--offset", default=str(STOP_OFFSET),
                        help=f"PORT_OFFSET of sections 13 and 14 (default {STOP_OFFSET}; 14 also uses the one 1000 above)")
    parser.add_argument("--dashboard-offset", type=int, default=DASH_OFFSET,
                        help=f"PORT_OFFSET of section 15's first copy (default {DASH_OFFSET}; also 1000 and 2000 above)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args(argv)
    only = set(args.only.replace(" ", "").split(","))
    full = only == set(map(str, range(1, 16)))

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    project = bake_project(OUT / "main")
    table = Table()
    started = time.strftime("%Y-%m-%d")
    docker_version = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    compose_version = run(["docker", "compose", "version", "--short"]).stdout.strip()
    header = (f"Run of {started} on {os.cpu_count()} CPUs, Docker {docker_version}, Compose {compose_version}, "
              f"Python {sys.version.split()[0]}; medians of {args.repeat} runs (helpers: {args.repeat * 6}).")
    print(header)
    helper, suite_out, fleet_out = {}, {}, {}
    try:
        if "1" in only or "2" in only:
            helper = helpers(table, project, args.repeat * 6)
        if "3" in only:
            stack_start(table, project, max(3, args.repeat // 2 + 1))
        if {"4", "5"} & only:
            project.make("up", PORT_OFFSET=OFFSET)
            values = project.values(PORT_OFFSET=OFFSET)
            if "4" in only:
                databases(table, project, values, args.repeat, args.tables, args.containers)
            if "5" in only:
                suite_out = suite(table, project, args.repeat, args.modules)
            project.make("nuke", PORT_OFFSET=OFFSET, FORCE="1")
        if "6" in only:
            claims(table, args.claims)
        if "7" in only:
            fleet_out = fleet(table, [int(s) for s in args.fleet.split(",")])
        if "8" in only:
            venv_setup(table, project, args.repeat)
        if "9" in only:
            adopted_suites(table, args.repeat)
        if "10" in only:
            clone_modes(table, project, args.repeat, args.containers)
        if "11" in only:
            realistic(table, project, args.repeat)
        if "12" in only:
            adoption(table, args.repeat)
        if "13" in only:
            stop_and_restart(table, project, args.repeat, args.offset)
        if "14" in only:
            idle_cost(table, project, max(3, args.repeat // 2 + 1), args.offset)
        if "15" in only:
            dashboard(table, args.repeat, args.dashboard_offset)
    finally:
        project.make("nuke", check=False, PORT_OFFSET=OFFSET, FORCE="1")
        for member, offset in set(STARTED):
            member.make("nuke", check=False, PORT_OFFSET=offset, FORCE="1")
    if not args.no_write and full:
        plot(helper, suite_out, fleet_out)
        write_doc(table, header)
    shutil.rmtree(OUT, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
