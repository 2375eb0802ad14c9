"""7. A fleet: 1, 5 and 10 copies (--fleet) brought up at once, one worktree each: time until all are healthy,
memory per copy (docker stats), time to nuke them all."""
from __future__ import annotations

import statistics
import subprocess
import time

from bench.measure import OUT, STARTED, bake_project, memory_of

FLEET_BASE = 23000  # fleet copies at 23000, 24000, ...


def run_section(ctx) -> dict:
    table, sizes = ctx.table, [int(s) for s in ctx.args.fleet.split(",")]
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
