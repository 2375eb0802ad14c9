"""3. `make up` against bare `docker compose up -d --build --wait`, a fresh volume each time; `make up` on an up copy."""
from __future__ import annotations

import time

from bench.measure import STARTED, run, timed


def run_section(ctx) -> None:
    section = "3. Stack start (fresh volume each time)"
    print(f"\n{section}")
    table, project, repeat = ctx.table, ctx.project, max(3, ctx.args.repeat // 2 + 1)
    offset = "42000"
    env = project.environment(PORT_OFFSET=offset, FORCE="1")
    values = project.values(PORT_OFFSET=offset)
    compose_env = {**env, **values}
    STARTED.append((project, offset))
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
