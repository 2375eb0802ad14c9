"""2. `make check-ports` with every port free and with one taken (its owner named via psutil), against `python -c pass`."""
from __future__ import annotations

import socket
import statistics
import sys
from pathlib import Path

from bench.measure import FREE_OFFSET, run, timed


def run_section(ctx) -> dict:
    section = "2. Collision check (vs the interpreter's floor)"
    print(f"\n{section}")
    table, project, repeat = ctx.table, ctx.project, ctx.args.repeat * 6
    env = project.environment(PORT_OFFSET=FREE_OFFSET)
    floor = timed(lambda: run([sys.executable, "-c", "pass"]), repeat)
    table.add(section, f"`{Path(sys.executable).name} -c pass` (floor)", floor)
    make = lambda target: run(["make", target], cwd=project.path, env=env)  # noqa: E731
    make("env")  # fill the cache
    out = {"floor": statistics.median(floor)}
    out["check"] = table.add(section, "`make check-ports`, every port free", timed(lambda: make("check-ports"), repeat), floor, "<= 3x")
    values = project.values(PORT_OFFSET=FREE_OFFSET)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(values["API_PORT"])))
        listener.listen()
        taken = timed(lambda: run(["make", "check-ports"], cwd=project.path, env=env, check=False), repeat)
    table.add(section, "`make check-ports`, one port taken (owner named via psutil)", taken, floor)
    return out
