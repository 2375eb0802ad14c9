"""How many workers `-n auto` starts: the CPUs this process may really use,
capped by what the copy can isolate (test-port blocks, each kind's limit).

xdist's own `auto` counts the machine's cores: in a container limited to two
CPUs on a 32-core host it starts 32 workers, and past 20 of them the copy
has no port block left (past 15, no Redis DB) and the run stops.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..formula import TEST_PORT_BLOCKS
from ..kinds import Kind

__all__ = ["WORK_KEY", "auto_workers", "cgroup_cpus", "selection_key", "usable_cpus", "work_workers"]

CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "<quota> <period>" or "max <period>"


def cgroup_cpus(path: str = CPU_MAX) -> int | None:
    """CPUs a cgroup v2 quota allows (rounded up), or None without a quota."""
    try:
        with open(path, encoding="ascii") as handle:
            quota, period = handle.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, -(-int(quota) // int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def usable_cpus(cpu_max: str = CPU_MAX) -> int:
    """Cores this process may run on: affinity, physical cores (as xdist counts them) and the cgroup quota, the least."""
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)]
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        if physical:
            counts.append(physical)
    except ImportError:
        pass
    quota = cgroup_cpus(cpu_max)
    if quota:
        counts.append(quota)
    return max(1, min(counts))


def auto_workers(kinds: Iterable[Kind], options: dict[str, str], cpus: int) -> int:
    """`-n auto`: one worker per usable CPU, but no more than every kind (and the port blocks) can isolate."""
    limits = [cpus, TEST_PORT_BLOCKS]
    limits += [n for n in (kind.max_workers(options) for kind in kinds) if n is not None]
    return max(1, min(limits))


# ---------------------------------------------------------------- the work decides too
# One more worker has to pay for its start (a Python process, the plugin, the suite's imports, a database
# clone: about a second on two cores, docs/PERFORMANCE.md) out of the test time it takes over. A run whose
# tests took less than this many seconds per worker last time gets fewer workers; below two, one process.
WORK_PER_WORKER = 2.0
WORK_KEY = "parallel_stacks/work"  # in pytest's cache (config.cache), per selection of tests
HOW_FLAGS = ("-n", "--numprocesses", "--dist", "--maxprocesses", "--junitxml", "--junit-xml", "--tx")


def selection_key(args: Iterable[str]) -> str:
    """The tests a command line selects, without how it runs them (workers, distribution, reports)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in HOW_FLAGS:
            skip = True
        elif not (arg.startswith(tuple(f"{flag}=" for flag in HOW_FLAGS)) or (arg.startswith("-n") and not arg.startswith("--"))):
            out.append(arg)
    return " ".join(out)


def work_workers(record: object, limit: int) -> tuple[int, str]:
    """(workers, why) for `-n auto` from the last run of the same tests ({"seconds", "tests"}); 0 is one process."""
    if not isinstance(record, dict) or not isinstance(record.get("seconds"), (int, float)) or not isinstance(record.get("tests"), int):
        return limit, ""
    seconds, tests = float(record["seconds"]), int(record["tests"])
    by_work = int(seconds // WORK_PER_WORKER)
    workers = max(0, min(limit, tests, by_work))
    if workers >= limit:
        return limit, ""
    last = f"the last run of these {tests} tests took {seconds:.1f} s of test time"
    if workers <= 1:
        return 0, f"-n auto: one process, no workers: {last}, under {2 * WORK_PER_WORKER:.0f} s (what two workers' start-up would eat)"
    return workers, f"-n auto: {workers} workers, not {limit}: {last}, {WORK_PER_WORKER:.0f} s or more per worker pays for its start"
