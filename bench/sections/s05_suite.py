"""5. The example suite: `make test` vs `make test-parallel` (2 workers), alone and with extra api modules
(bench/suites/scaled), and the limit two cores allow (the fixed costs measured with every test deselected)."""
from __future__ import annotations

import os
import statistics

from bench.measure import OFFSET, SUITES, copy_suite, fmt, timed

SUITE_FILES = (SUITES / "scaled" / "test_bench_scaled.py",)


def run_section(ctx) -> dict:
    table, project, repeat, modules = ctx.table, ctx.project, ctx.args.repeat, ctx.args.modules
    section = "5. The example suite, sequential vs parallel"
    print(f"\n{section} ({os.cpu_count()} CPUs)")
    make = lambda target, **e: project.make(target, PORT_OFFSET=OFFSET, **e)  # noqa: E731
    make("test")  # warm-up
    out = {}
    for label, extra in (("example suite (22 tests)", 0), (f"example suite + {modules * 5} api tests of ~0.1 s I/O", modules)):
        copy_suite("scaled", project.path / "tests", lambda name: [name.replace(".py", f"_{i}.py") for i in range(extra)])
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
