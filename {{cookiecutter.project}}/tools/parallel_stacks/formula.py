"""The formulas, once: host port = base + PORT_OFFSET, the offsets that keep
every port legal, and the names a copy's objects get. Change the port
formula here and nowhere else (docs/DESIGN.md)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .basics import MAX_NUMBER_DIGITS, PORT_MAX, PORT_MIN, StackError, is_digits, short

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Copy

__all__ = [
    "NAMED_URLS_PORT_DEFAULT",
    "TEST_PORT_BASE",
    "TEST_PORT_BLOCK",
    "TEST_PORT_BLOCKS",
    "compose_project_name",
    "host_port",
    "host_ports",
    "named_host",
    "offset_bounds",
    "offset_for_number",
    "parse_offset",
    "task_number",
    "volume_name",
    "worker_port_range",
    "worker_ports_of",
    "worker_ports_text",
]

COMPOSE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
TASK_SUFFIX = re.compile(r"(?:^|[-_.])([0-9]+)$")


def host_port(base: int, offset: int) -> int:
    """THE port formula: a service's host port in the copy at `offset`."""
    return base + offset


def host_ports(bases: Iterable[int], offset: int) -> list[int]:
    """`host_port` of each base."""
    return [host_port(base, offset) for base in bases]


# A copy's test ports (servers and per-worker containers its test workers start):
# TEST_PORT_BLOCKS blocks of TEST_PORT_BLOCK ports from TEST_PORT_BASE + PORT_OFFSET,
# one block per xdist worker. The range is as wide as the `auto` slot step, so
# slots never share test ports; the registry also keeps every claim's services
# out of every other claim's range (docs/PORTS.md).
TEST_PORT_BASE = 20000  # seed 002's base
TEST_PORT_BLOCK = 10
TEST_PORT_BLOCKS = 20


def worker_port_range(offset: int, start: int | None = None) -> range:
    """THE test-port formula: every port the test workers of the copy at `offset` may bind
    (`start`: where the registry moved a claimed copy's range, see registry.testports.allocate_test_ports)."""
    start = TEST_PORT_BASE + offset if start is None else start
    return range(start, start + TEST_PORT_BLOCK * TEST_PORT_BLOCKS)


def worker_ports_text(offset: int, start: int | None = None) -> str:
    """`TEST_PORTS` as `make env` prints it: `20000-20199`."""
    ports = worker_port_range(offset, start)
    return f"{ports.start}-{ports.stop - 1}"


def worker_ports_of(copy: Copy) -> range:
    """The test-port range of a copy, from its derived values (TEST_PORTS, else the formula)."""
    first, _, last = copy.env.get("TEST_PORTS", "").partition("-")
    if first.isdigit() and last.isdigit():
        return range(int(first), int(last) + 1)
    return worker_port_range(copy.offset)


def offset_bounds(bases: Iterable[int]) -> tuple[int, int]:
    """(lowest, highest) offset that keeps every host port within PORT_MIN-PORT_MAX."""
    values = list(bases)
    return max(0, PORT_MIN - min(values)), PORT_MAX - max(values)


def parse_offset(raw: str, source: str, stack: Mapping[str, Any]) -> int:
    """PORT_OFFSET from `raw` (its `source` named in errors): 0, or an offset that keeps every host port of `stack` within 1024-65535."""
    low, high = offset_bounds(svc["host_port"] for svc in stack["services"].values())
    # 0 is always allowed: the ports exactly as stack.yml declares them (an adopted project's `80` stays 80)
    zero = "0 (the ports as declared) or " if low > 0 else ""
    allowed = f"allowed: {zero}integers {low}-{high} or auto, so every host port stays within {PORT_MIN}-{PORT_MAX}"
    if not is_digits(raw):
        raise StackError(f"PORT_OFFSET={short(raw)} (from {source}) is not a non-negative integer; {allowed}")
    offset = int(raw) if len(raw) <= 6 else high + 1
    if not (low <= offset <= high or offset == 0):
        shown = raw if len(raw) <= 40 else f"{raw[:40]}... ({len(raw)} characters)"
        raise StackError(f"PORT_OFFSET={shown} (from {source}) is out of range; {allowed}")
    return offset


def task_number(task_id: str, source: str, var: str = "TASK_ID") -> int:
    """Seed 000: the id's numeric suffix n gives (n % 9000) + 1000."""
    match = TASK_SUFFIX.search(task_id.strip())
    if not match:
        raise StackError(f"{var}={short(task_id)} (from {source}) has no numeric suffix; use an id like my-task-1234, or set PORT_OFFSET")
    digits = match.group(1)
    if len(digits) > MAX_NUMBER_DIGITS:
        raise StackError(
            f"{var}={short(task_id)} (from {source}): its numeric suffix has {len(digits)} digits, at most {MAX_NUMBER_DIGITS}"
        )
    return int(digits) % 9000 + 1000


def offset_for_number(number: int, task_step: int) -> int:
    """A task or build number's preferred offset: (number % 1000) * task_step."""
    return (number % 1000) * task_step


def compose_project_name(project: str, env_name: str, offset: int) -> str:
    """`<project>-<offset>`, or `<project>-<env>-<offset>` outside dev."""
    name = f"{project}-{offset}" if env_name == "dev" else f"{project}-{env_name}-{offset}"
    if not COMPOSE_NAME.match(name):
        raise StackError(f"derived compose project name {name!r} is invalid")
    return name


# Named URLs (proxy.py): http://<service>.<copy>.localhost:<NAMED_URLS_PORT>, one proxy per machine.
# 7355 is no default service port plus a multiple of 100 (no `auto` slot lands on it).
NAMED_URLS_PORT_DEFAULT = 7355


def named_host(service: str, copy: str) -> str:
    """THE named-URL formula: `<service>.<copy>.localhost` (`_` becomes `-`: host names have no `_`)."""
    return f"{service}.{copy}.localhost".replace("_", "-")


def volume_name(project: str, env_name: str, volume: str, offset: int) -> str:
    """`<project>_<volume>_<offset>` (seed 003), `<project>_<env>_<volume>_<offset>` outside dev."""
    infix = "" if env_name == "dev" else f"{env_name}_"
    return f"{project}_{infix}{volume}_{offset}"
