"""Per-worker isolation: what one pytest-xdist worker owns.

Each worker (``gw0``, ``gw1``, ...; ``master`` without xdist) gets a block
of ports, a temp directory, a topic namespace and unique container names
here, and from each service's kind (``parallel_stacks.kinds``) what it owns
there: its own database (postgres), its own Redis DB (redis), ...
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..basics import StackError
from ..formula import TEST_PORT_BLOCK, TEST_PORT_BLOCKS, worker_ports_of
from ..kinds import Kind, Service, Worker
from ..kinds.mqtt import TopicNamespace  # seed 002's helper; the mqtt kind gives it its variables
from ..model import Copy

__all__ = [
    "ParallelTestContext",
    "PortBlock",
    "TopicNamespace",
    "build_context",
    "mapped_variables",
    "stack_services",
    "worker_index",
    "worker_of",
    "worker_variables",
]

WORKER_RE = re.compile(r"^(master|gw(\d+))$")


def worker_index(worker: str) -> int:
    """0 for ``master`` and ``gw0``, N for ``gwN``."""
    match = WORKER_RE.match(worker)
    if not match:
        raise StackError(f"unexpected pytest-xdist worker id {worker!r} (expected master or gwN)")
    return int(match.group(2) or 0)


@dataclass(frozen=True)
class PortBlock:
    """The ports one worker may bind: [start, start + size)."""

    start: int
    size: int = TEST_PORT_BLOCK

    def port(self, i: int = 0) -> int:
        """Port `i` of the block; StackError outside it."""
        if not 0 <= i < self.size:
            raise StackError(f"port index {i} is outside this worker's block of {self.size} ({self.start}-{self.stop - 1})")
        return self.start + i

    @property
    def stop(self) -> int:
        """The first port after the block."""
        return self.start + self.size

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port < self.stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))


def services_of(copy: Copy) -> list[str]:
    """The names of every service of the copy's stack (those SERVICES= left out included: their ports are taken too)."""
    return [svc.name for svc in copy.all_services]


def port_block(copy: Copy, index: int, services: list[str] | None = None) -> PortBlock:
    """Worker `index`'s block inside this copy's test-port range."""
    offset = copy.offset
    ports = worker_ports_of(copy)
    low, high = ports.start, ports.stop
    if high - 1 > 65535:
        raise StackError(
            f"PORT_OFFSET={offset} puts the test-port range {low}-{high - 1} past 65535; use an offset <= {offset - (high - 1 - 65535)}"
        )
    if index >= TEST_PORT_BLOCKS:
        raise StackError(
            f"worker {index} has no port block: range {low}-{high - 1} holds {TEST_PORT_BLOCKS} blocks of {TEST_PORT_BLOCK}; "
            f"use at most {TEST_PORT_BLOCKS} workers (-n)"
        )
    block = PortBlock(low + index * TEST_PORT_BLOCK)
    for name in services or {}:
        port = copy.service(name).port
        if port in block:
            raise StackError(f"test port block {block.start}-{block.stop - 1} overlaps the stack's {name} port {port}")
    return block


@dataclass(frozen=True)
class ParallelTestContext:
    """Everything one worker owns (seed 002), as one object; `resources` come from the stack's kinds."""

    worker: str
    index: int
    copy: str
    ports: PortBlock
    tmp_dir: Path
    topics: TopicNamespace
    isolated: bool = True
    resources: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # what the kinds export for this worker

    @property
    def database_name(self) -> str | None:
        """This worker's database, if the stack has a Postgres."""
        return self.resources.get("database_name")

    @property
    def database_url(self) -> str | None:
        """The URL of this worker's database, if the stack has a Postgres."""
        return self.resources.get("database_url")

    @property
    def mqtt(self) -> Any:
        """The worker's MqttEndpoint (broker, credentials, topic namespace), or None when the stack has no broker."""
        return self.resources.get("mqtt")

    @property
    def redis(self) -> Any:
        """The worker's RedisNamespace, or None when the stack has no Redis."""
        return self.resources.get("redis")

    def container_name(self, service: str) -> str:
        """A container name unique per project, offset and worker."""
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", service):
            raise ValueError(f"bad service name {service!r}")
        return f"{self.copy}-{self.worker}-{service}"


def stack_services(copy: Copy) -> list[tuple[Service, Kind]]:
    """(service, kind) for every service of the copy, as a kind's hooks see it."""
    return [(svc.as_service(), svc.kind) for svc in copy.services]


def worker_of(worker: str, isolated: bool, kind: Kind, options: Mapping[str, str]) -> Worker:
    """`worker` as `kind` sees it: isolated unless isolation is off, for every kind or for this one."""
    mine = isolated and kind.name not in options.get("shared", "").split(",")
    return Worker(worker, worker_index(worker) if mine else 0, worker if mine else "shared", mine, dict(options))


def build_context(
    copy: Copy,
    worker: str,
    isolated: bool,
    tmp_root: Path,
    options: Mapping[str, str] | None = None,
) -> ParallelTestContext:
    """The context of `worker` for the services of `copy`; shared by all workers when not `isolated`.

    `options["shared"]` (--no-isolation-of) names kinds whose resources every worker shares, the rest isolated.
    """
    index = worker_index(worker) if isolated else 0
    who = worker if isolated else "shared"
    resources: dict[str, Any] = {}
    env: dict[str, str] = {}
    for service, kind in stack_services(copy):
        mine = kind.worker_resources(service, copy, worker_of(worker, isolated, kind, options or {}))
        resources.update(mine)
        env.update(kind.worker_env(service, copy, mine))
    return ParallelTestContext(
        worker=worker,
        index=index,
        copy=copy.env["COMPOSE_PROJECT_NAME"],
        ports=port_block(copy, index, services_of(copy)),
        tmp_dir=tmp_root / f"media-{copy.env['COMPOSE_PROJECT_NAME']}-{who}",
        topics=resources.get("topics") or TopicNamespace.for_worker(who),
        isolated=isolated,
        resources=resources,
        env=env,
    )


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def worker_variables(ctx: ParallelTestContext, media_root: bool = True) -> dict[str, str]:
    """Every variable the plugin exports for a worker: its kinds' (DATABASE_URL, PG*, REDIS_*) and its own."""
    own = {
        "TEST_WORKER_ID": ctx.worker,
        "TEST_PORT_BLOCK": f"{ctx.ports.start}-{ctx.ports.stop - 1}",
        "TEST_TOPIC_PREFIX": ctx.topics.prefix,
    }
    if media_root:
        own["MEDIA_ROOT"] = str(ctx.tmp_dir)
    return {**own, **ctx.env}


def mapped_variables(lines: list[str], variables: Mapping[str, str]) -> dict[str, str]:
    """`isolation_env` lines, `NAME = template`: a suite's own variable names, filled from the worker's.

    Placeholders are the worker's variables in braces, e.g.
    ``MYLIB_TEST_DB = {DATABASE_URL}`` or ``MYLIB_TEST_HOST = {PGHOST}:{PGPORT}``.
    """
    out: dict[str, str] = {}
    for line in lines:
        name, sep, template = line.partition("=")
        name = name.strip()
        if not sep or not ENV_NAME.fullmatch(name):
            raise StackError(f"isolation_env: {line!r} is not NAME = value")
        try:
            out[name] = template.strip().format_map(variables)
        except KeyError as exc:
            known = ", ".join(sorted(variables))
            raise StackError(
                f"isolation_env: {line!r} names {'{' + str(exc.args[0]) + '}'}, not one of this worker's variables ({known})"
            ) from None
        except (ValueError, IndexError) as exc:
            raise StackError(f"isolation_env: {line!r}: {exc}") from None
    return out
