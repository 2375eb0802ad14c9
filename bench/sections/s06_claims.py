"""6. Concurrent PORT_OFFSET=auto claims (--claims at once, one worktree each) vs port-for and portpicker
(bench/suites/claims/claimer.py, started once per claim)."""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

from bench.measure import OUT, SUITES, fmt

SUITE_FILES = (SUITES / "claims" / "claimer.py",)


def run_section(ctx) -> None:
    table, count = ctx.table, ctx.args.claims
    section = f"6. {count} concurrent claims"
    print(f"\n{section}")
    from bakery import make_worktree

    base = OUT / "claims"
    shutil.rmtree(base, ignore_errors=True)
    roots = [make_worktree(base / f"w{i}") for i in range(count)]
    state = base / "state"
    guarantees = {
        "registry": "a slot per worktree, 4 ports each, kept until released, below the ephemeral range, "
                    "checked against listeners and containers, remembered in .env.dynamic",
        "port-for": "one free port now, outside the ephemeral range; nothing stops another process taking it next",
        "portpicker": "one port free now, inside the ephemeral range (any outgoing connection may take it); no reservation without portserver",
    }
    claimer = str(SUITE_FILES[0])
    for tool in ("registry", "port-for", "portpicker"):
        start = time.time() + 3
        procs = [subprocess.Popen([sys.executable, claimer, str(r), str(start), tool, str(state)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in roots]
        results = [p.communicate(timeout=300) for p in procs]
        wall = time.time() - start
        ok = [r[0].split() for p, r in zip(procs, results) if p.returncode == 0 and r[0].strip()]
        distinct = len({o[0] for o in ok})
        per_claim = statistics.median(float(o[1]) for o in ok) if ok else float("nan")
        table.note(section, f"{tool}: {count} at once",
                   f"{distinct}/{count} distinct, wall {wall:.2f} s, median per claim {fmt(per_claim)}; {guarantees[tool]}")
    shutil.rmtree(base, ignore_errors=True)
