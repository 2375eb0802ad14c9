"""11. A realistic suite of 300 tests mixing database, Redis and HTTP work (bench/suites/realistic, each module
copied 10 times), sequential vs 2 workers vs -n auto."""
from __future__ import annotations

import shutil

from bench.measure import OFFSET, STARTED, SUITES, copy_suite, timed

SUITE_FILES = tuple(SUITES / "realistic" / f"test_{kind}.py" for kind in ("orders", "cache", "http"))
COPIES = 10  # of each module: 3 x 10 modules x 10 tests


def run_section(ctx) -> None:
    table, project, repeat = ctx.table, ctx.project, ctx.args.repeat
    section = "11. A realistic suite: 300 tests of database, Redis and HTTP work"
    print(f"\n{section}")
    suite = project.path / "tests" / "realistic"
    suite.mkdir()
    copy_suite("realistic", suite, lambda name: [name.replace(".py", f"_{i}.py") for i in range(COPIES)])
    make = lambda target, **e: project.make(target, PORT_OFFSET=OFFSET, ARGS="tests/realistic", **e)  # noqa: E731
    project.make("up", PORT_OFFSET=OFFSET)
    STARTED.append((project, OFFSET))
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
