"""10. A worker's database per Postgres mode (durable; test mode: durability off, data on tmpfs) and clone strategy
(WAL_LOG, FILE_COPY), and the wait each worker reports (`isolation:` line), against a container per worker."""
from __future__ import annotations

from bench.measure import OFFSET, STARTED, TEST_MODE_OFFSET, container_per_worker, timed


def run_section(ctx) -> None:
    """What a worker's database costs in each Postgres mode and strategy, against a container per worker."""
    import psycopg

    table, project, repeat = ctx.table, ctx.project, ctx.args.repeat
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
    cont_t = container_per_worker(ctx.args.containers)
    table.add(section, "a Postgres container per worker (testcontainers: start, connect, stop)", cont_t)
    table.add(section, "worker's wait, test mode, vs a container per worker", waits["test mode (fsync off, tmpfs)"], cont_t, "<= 0.02x")
