#!/usr/bin/env python3
"""Benchmark per-worker isolation in one run: figures and ratios, no thresholds.

1. The example suite: `make test` (sequential) vs `make test-parallel`.
2. A database per worker: clone from a template vs fresh schema setup vs a
   new Postgres container per worker (what testcontainers does).

Bakes a project into build/bench/, starts one copy at PORT_OFFSET=22000,
measures, nukes it. Not part of CI: absolute times on a shared machine
mean little; the ratios from the same run are the result.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
OUT = TEMPLATE / "build" / "bench"
OFFSET = "22000"
sys.path.insert(0, str(TEMPLATE / "tests"))


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def row(label: str, times: list[float], base: float | None = None) -> str:
    med = statistics.median(times)
    ratio = f"{med / base:6.2f}x" if base else "  1.00x"
    return f"  {label:<46} median {med * 1000:8.0f} ms  (min {min(times) * 1000:6.0f}, n={len(times)})  {ratio}"


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


def write_scaled_suite(project: Path, modules: int) -> None:
    for i in range(modules):
        (project / "tests" / f"test_bench_scaled_{i}.py").write_text(SCALED_MODULE)


def heavy_schema(tables: int) -> str:
    """A schema the size of a real project's migration history."""
    parts = []
    for i in range(tables):
        parts.append(
            f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL, ref integer, "
            f"created timestamptz DEFAULT now(), payload jsonb);"
            f"CREATE INDEX t{i}_name ON t{i} (name); CREATE INDEX t{i}_ref ON t{i} (ref);"
        )
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--tables", type=int, default=100, help="tables in the heavy schema (default 100)")
    parser.add_argument("--modules", type=int, default=8, help="extra api test modules for the scaled suite (default 8)")
    parser.add_argument("--containers", type=int, default=3, help="container starts to time (default 3)")
    args = parser.parse_args(argv)

    import psycopg
    from conftest import Project, bake

    images = {}
    for var, kind in (("POSTGRES_IMAGE", "postgres"), ("REDIS_IMAGE", "redis"), ("PYTHON_IMAGE", "python")):
        name = f"parallel-stacks-offline/{kind}:bookworm"
        if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0:
            images[var] = name
    old = OUT / "demo-stack"
    if old.exists():  # a bench killed earlier: remove its copy before its secret goes
        Project(old, images).make("nuke", check=False, PORT_OFFSET=OFFSET, FORCE="1")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    project = Project(bake(OUT), images)
    project.make("up", PORT_OFFSET=OFFSET)
    try:
        values = project.values(PORT_OFFSET=OFFSET)
        cpus = os.cpu_count()
        print(f"machine: {cpus} CPUs; copy {values['COMPOSE_PROJECT_NAME']}; repeat {args.repeat}\n")

        print("1. example suite")
        project.make("test", PORT_OFFSET=OFFSET)  # warm-up
        seq = timed(lambda: project.make("test", PORT_OFFSET=OFFSET), args.repeat)
        results = [row("make test (sequential)", seq)]
        for workers in ("2", "4"):
            par = timed(lambda: project.make("test-parallel", PORT_OFFSET=OFFSET, PYTEST_WORKERS=workers), args.repeat)
            results.append(row(f"make test-parallel (PYTEST_WORKERS={workers})", par, statistics.median(seq)))
        print("\n".join(results))
        print("  (ratio < 1 is faster; speed-up = 1 / ratio)\n")

        print(f"1b. example suite plus {args.modules} modules x 5 api tests (~0.1 s of I/O each)")
        write_scaled_suite(project.path, args.modules)
        seq = timed(lambda: project.make("test", PORT_OFFSET=OFFSET), args.repeat)
        results = [row("make test (sequential)", seq)]
        for workers in ("2", "4"):
            par = timed(lambda: project.make("test-parallel", PORT_OFFSET=OFFSET, PYTEST_WORKERS=workers), args.repeat)
            results.append(row(f"make test-parallel (PYTEST_WORKERS={workers})", par, statistics.median(seq)))
        print("\n".join(results) + "\n")

        print(f"2. one database per worker ({args.tables}-table schema and the example schema)")
        admin = values["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            for label, schema in (("example schema", (project.path / "db" / "schema.sql").read_text()), (f"{args.tables} tables", heavy_schema(args.tables))):
                conn.execute("DROP DATABASE IF EXISTS bench_tpl WITH (FORCE)")
                conn.execute("CREATE DATABASE bench_tpl")
                with psycopg.connect(admin.rsplit("/", 1)[0] + "/bench_tpl", autocommit=True) as t:
                    t.execute(schema)

                def clone():
                    conn.execute("DROP DATABASE IF EXISTS bench_w WITH (FORCE)")
                    conn.execute("CREATE DATABASE bench_w TEMPLATE bench_tpl")

                def fresh():
                    conn.execute("DROP DATABASE IF EXISTS bench_w WITH (FORCE)")
                    conn.execute("CREATE DATABASE bench_w")
                    with psycopg.connect(admin.rsplit("/", 1)[0] + "/bench_w", autocommit=True) as w:
                        w.execute(schema)

                fresh_t = timed(fresh, args.repeat)
                clone_t = timed(clone, args.repeat)
                print(row(f"fresh schema setup ({label})", fresh_t))
                print(row(f"template clone ({label})", clone_t, statistics.median(fresh_t)))
            conn.execute("DROP DATABASE IF EXISTS bench_w WITH (FORCE)")
            conn.execute("DROP DATABASE IF EXISTS bench_tpl WITH (FORCE)")

        image = images.get("POSTGRES_IMAGE", "postgres:16-alpine")

        def container():
            cid = subprocess.run(
                ["docker", "run", "-d", "-e", "POSTGRES_PASSWORD=bench", "-p", "127.0.0.1::5432", image],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
            try:
                for _ in range(600):
                    if subprocess.run(["docker", "exec", cid, "pg_isready", "-h", "127.0.0.1", "-U", "postgres"], capture_output=True).returncode == 0:
                        return
                    time.sleep(0.05)
                raise RuntimeError("bench container never became ready")
            finally:
                subprocess.run(["docker", "rm", "-f", "-v", cid], capture_output=True)

        cont_t = timed(container, args.containers)
        print(row("new Postgres container per worker (until ready)", cont_t))
        print(f"  template clone vs container: {statistics.median(clone_t) / statistics.median(cont_t):.3f}x")
    finally:
        project.make("nuke", check=False, PORT_OFFSET=OFFSET, FORCE="1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
