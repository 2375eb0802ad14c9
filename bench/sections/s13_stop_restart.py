"""13. Stopping a copy (`make down`) and `make up` on a copy that is up, against bare `docker compose down`
and `docker compose up -d --wait` on the same copy (at --offset)."""
from __future__ import annotations

import time

from bench.measure import STARTED, bytecode_compiled, run, timed


def run_section(ctx) -> None:
    table, project, repeat, offset = ctx.table, ctx.project, ctx.args.repeat, ctx.args.offset
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
