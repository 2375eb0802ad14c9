"""Every port a claimed copy uses (its services' and its test workers'), and the test-port range a claim gets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..basics import PORT_MAX, PORT_MIN, StackError
from ..formula import host_ports, worker_port_range


def service_ports(bases: Mapping[str, int], offset: int) -> list[int]:
    """The host ports of the services of `bases` ({service: base port}) at `offset`."""
    return host_ports(bases.values(), offset)


def claimed_test_ports(claim: Mapping[str, Any]) -> range:
    """A claim's test-port range: the one the registry gave it, else the formula's."""
    given = claim.get("test_ports")
    if isinstance(given, list) and len(given) == 2 and all(isinstance(p, int) for p in given):
        return range(given[0], given[1] + 1)
    return worker_port_range(int(claim["offset"]))


def claimed_service_ports(claims: Iterable[Mapping[str, Any]], bases: Mapping[str, int]) -> set[int]:
    """The service ports of `claims` (as recorded, else the formula's)."""
    return {p for c in claims for p in c.get("ports") or service_ports(bases, c["offset"])}


def footprints(claims: Mapping[str, Mapping[str, Any]], bases: Mapping[str, int]) -> set[int]:
    """Every port the copies of `claims` and the default copy (offset 0) use: services and test ports."""
    taken = set(service_ports(bases, 0)) | set(worker_port_range(0))
    for c in claims.values():
        taken.update(c.get("ports") or service_ports(bases, c["offset"]))
        taken.update(claimed_test_ports(c))
    return taken


def remembered_test_start(claim: Mapping[str, Any], offset: int) -> int | None:
    """The test-port range start a claim already has at `offset` (None: a new slot, or no claim)."""
    return claimed_test_ports(claim).start if claim and claim.get("offset") == offset else None


def allocate_test_ports(offset: int, own: list[int], taken: set[int], current: int | None = None) -> int:
    """The start of a claimed copy's test-port range: `current` (its remembered one) or the formula's
    (`worker_port_range`) when no other claimed copy uses one of its ports, else the next free range
    above it. Services keep seed 000's offsets exactly; only test ports move (they hold no data)."""
    formula = worker_port_range(offset)
    width = len(formula)
    starts = ([current] if current is not None else []) + list(range(formula.start, PORT_MAX - width + 2, width))
    for start in starts:
        ports = range(start, start + width)
        if start >= PORT_MIN and ports.stop - 1 <= PORT_MAX and not any(p in taken or p in own for p in ports):
            return start
    raise StackError(f"no free test-port range of {width} ports for PORT_OFFSET={offset}; `make gc`, or set PORT_OFFSET")
