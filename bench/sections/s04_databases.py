"""4. A database per worker: a template clone vs a fresh database and schema vs a Postgres container per worker."""
from __future__ import annotations

from bench.measure import container_per_worker, timed


def heavy_schema(tables: int) -> str:
    """A schema the size of a real project's migration history."""
    return "\n".join(
        f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL, ref integer, created timestamptz DEFAULT now(), payload jsonb);"
        f"CREATE INDEX t{i}_name ON t{i} (name); CREATE INDEX t{i}_ref ON t{i} (ref);"
        for i in range(tables)
    )


def run_section(ctx) -> None:
    import psycopg

    table, project, values, repeat, tables = ctx.table, ctx.project, ctx.values, ctx.args.repeat, ctx.args.tables
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

    cont_t = container_per_worker(ctx.args.containers)
    table.add(section, "testcontainers `PostgresContainer` per worker (start, connect, stop)", cont_t)
    table.add(section, "template clone (example schema) vs a container per worker", clone_times["example schema"], cont_t, "<= 0.05x")
