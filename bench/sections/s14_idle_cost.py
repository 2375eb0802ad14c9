"""14. What an idle copy costs: CPU over 30 s against an idle bare Postgres container, and `make up` with the
health checks before and after issue 28 (at --offset and the one 1000 above)."""
from __future__ import annotations

import time
from pathlib import Path

from bench.measure import OUT, STARTED, bake_project, bytecode_compiled, image_env, run

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


def run_section(ctx, seconds: float = 30) -> None:
    from bakery import idle_cpu

    table, project, repeat, offset = ctx.table, ctx.project, max(3, ctx.args.repeat // 2 + 1), ctx.args.offset
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
