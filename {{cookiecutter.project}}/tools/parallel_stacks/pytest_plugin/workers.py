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

__all__ = ["auto_workers", "cgroup_cpus", "usable_cpus"]

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
