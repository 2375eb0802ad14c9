"""Per-worker isolation: what one pytest-xdist worker owns, and the database
and Redis administration that gives it (cloned databases, key prefixes).

Each worker (``gw0``, ``gw1``, ...; ``master`` without xdist) gets its own
database cloned from a per-run template, a block of ports, a temp directory,
a Redis key prefix (or DB index), a topic namespace and unique container
names. Pure parts need no stack; the admin functions take a connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..basics import StackError, var_name

__all__ = [
    "ParallelTestContext",
    "PortBlock",
    "RedisNamespace",
    "TopicNamespace",
    "build_context",
    "worker_index",
]

WORKER_RE = re.compile(r"^(master|gw(\d+))$")
TEST_PORT_BASE = 20000  # the seed-002 base; a copy's range starts at base + PORT_OFFSET
PORT_BLOCK = 100
PORT_RANGE = 1000  # per copy: copies whose offsets differ by >= 1000 never share a range
REDIS_DBS = 16  # Redis's default `databases`


def worker_index(worker: str) -> int:
    """0 for ``master`` and ``gw0``, N for ``gwN``."""
    match = WORKER_RE.match(worker)
    if not match:
        raise StackError(f"unexpected pytest-xdist worker id {worker!r} (expected master or gwN)")
    return int(match.group(2) or 0)


def copy_slug(values: Mapping[str, str]) -> str:
    """This copy's compose project name as an SQL/identifier-safe slug."""
    return values["COMPOSE_PROJECT_NAME"].replace("-", "_")


def database_name(values: Mapping[str, str], suffix: str) -> str:
    name = f"test_{copy_slug(values)}_{suffix}"
    if len(name) > 63:
        raise StackError(f"test database name {name!r} exceeds PostgreSQL's 63 characters; shorten the project slug")
    return name


def owned_database(values: Mapping[str, str], name: str) -> bool:
    """True for databases this copy's test runs create (never another copy's)."""
    prefix = f"test_{copy_slug(values)}_"
    return name.startswith(prefix) and re.fullmatch(r"master|template|shared|gw\d+", name[len(prefix) :]) is not None


@dataclass(frozen=True)
class PortBlock:
    """The ports one worker may bind: [start, start + size)."""

    start: int
    size: int = PORT_BLOCK

    def port(self, i: int = 0) -> int:
        if not 0 <= i < self.size:
            raise StackError(f"port index {i} is outside this worker's block of {self.size} ({self.start}-{self.stop - 1})")
        return self.start + i

    @property
    def stop(self) -> int:
        return self.start + self.size

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port < self.stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))


def services_of(values: Mapping[str, str]) -> list[str]:
    """The stack's services as the derived values name them (no stack.yml, no yaml import)."""
    suffix = "_CONTAINER_PORT"
    return [key[: -len(suffix)].lower() for key in values if key.endswith(suffix)]


def port_block(values: Mapping[str, str], index: int, services: list[str] | None = None) -> PortBlock:
    """Worker `index`'s block inside this copy's test-port range."""
    offset = int(values["PORT_OFFSET"])
    low = TEST_PORT_BASE + offset
    high = low + PORT_RANGE
    blocks = PORT_RANGE // PORT_BLOCK
    if high - 1 > 65535:
        raise StackError(
            f"PORT_OFFSET={offset} puts the test-port range {low}-{high - 1} past 65535; use an offset <= {65535 - TEST_PORT_BASE - PORT_RANGE + 1}"
        )
    if index >= blocks:
        raise StackError(
            f"worker {index} has no port block: range {low}-{high - 1} holds {blocks} blocks of {PORT_BLOCK}; use fewer workers (-n)"
        )
    block = PortBlock(low + index * PORT_BLOCK)
    for name in services or {}:
        port = int(values[f"{var_name(name)}_PORT"])
        if port in block:
            raise StackError(f"test port block {block.start}-{block.stop - 1} overlaps the stack's {name} port {port}")
    return block


@dataclass(frozen=True)
class TopicNamespace:
    """Seed 002's namespace: ``topic('a/b') -> 'test/gw0/a/b'`` and back."""

    prefix: str

    def topic(self, original: str) -> str:
        return f"{self.prefix}/{original.lstrip('/')}"

    def strip(self, namespaced: str) -> str:
        head = self.prefix + "/"
        if not namespaced.startswith(head):
            raise ValueError(f"topic {namespaced!r} is not in namespace {self.prefix!r}")
        return namespaced[len(head) :]

    def owns(self, namespaced: str) -> bool:
        return namespaced.startswith(self.prefix + "/")


@dataclass(frozen=True)
class RedisNamespace:
    """A worker's slice of this copy's Redis: a key prefix, and a DB index."""

    url: str
    prefix: str
    db: int = 0

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def client(self) -> Any:
        import redis  # lazy

        return redis.Redis.from_url(self.url, db=self.db, socket_connect_timeout=5)

    def clear(self) -> int:
        client = self.client()
        keys = list(client.scan_iter(match=self.prefix.replace("*", r"\*") + "*", count=500))
        return client.delete(*keys) if keys else 0


def redis_prefix(values: Mapping[str, str], who: str = "") -> str:
    """`test:<copy>:<who>:`; without `who`, the prefix of all this copy's test keys."""
    return f"test:{values['COMPOSE_PROJECT_NAME']}:" + (f"{who}:" if who else "")


@dataclass(frozen=True)
class ParallelTestContext:
    """Everything one worker owns (seed 002), as one object."""

    worker: str
    index: int
    copy: str
    database_name: str
    database_url: str
    ports: PortBlock
    tmp_dir: Path
    redis: RedisNamespace | None
    topics: TopicNamespace
    isolated: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def container_name(self, service: str) -> str:
        """A container name unique per project, offset and worker."""
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", service):
            raise ValueError(f"bad service name {service!r}")
        return f"{self.copy}-{self.worker}-{service}"


def build_context(
    values: Mapping[str, str], worker: str, isolated: bool, tmp_root: Path, redis_mode: str = "prefix"
) -> ParallelTestContext:
    """The context of `worker`; shared by all workers when not `isolated`."""
    index = worker_index(worker) if isolated else 0
    who = worker if isolated else "shared"
    db = database_name(values, who)
    url = values["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db
    redis_ns = None
    if "REDIS_URL" in values:
        db_index = 0
        if redis_mode == "db" and isolated:
            db_index = 1 + index
            if db_index >= REDIS_DBS:
                raise StackError(f"worker {worker} needs Redis DB {db_index} but Redis has {REDIS_DBS}; use prefix mode or fewer workers")
        redis_ns = RedisNamespace(values["REDIS_URL"], redis_prefix(values, who), db_index)
    tmp_dir = tmp_root / f"media-{values['COMPOSE_PROJECT_NAME']}-{who}"
    return ParallelTestContext(
        worker=worker,
        index=index,
        copy=values["COMPOSE_PROJECT_NAME"],
        database_name=db,
        database_url=url,
        ports=port_block(values, index, services_of(values)),
        tmp_dir=tmp_dir,
        redis=redis_ns,
        topics=TopicNamespace(f"test/{who}"),
        isolated=isolated,
    )


# ---------------------------------------------------------------- databases
def admin_connect(values: Mapping[str, str]) -> Any:
    """Autocommit connection to the copy's maintenance database."""
    import psycopg  # lazy

    url = values["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise StackError(f"refusing unsafe database name {name!r}")
    return f'"{name}"'


def drop_owned_databases(conn: Any, values: Mapping[str, str], keep: tuple[str, ...] = ()) -> list[str]:
    """Drop this copy's test databases (left by killed runs); return their names."""
    names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test%'")]
    dropped = []
    for name in names:
        if owned_database(values, name) and name not in keep:
            conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
            dropped.append(name)
    return dropped


def clear_stale_redis(values: Mapping[str, str], mode: str) -> int:
    """Delete this copy's test keys (left by killed runs) from Redis; return how many."""
    if "REDIS_URL" not in values:
        return 0
    dbs = range(REDIS_DBS) if mode == "db" else (0,)
    return sum(RedisNamespace(values["REDIS_URL"], redis_prefix(values), db).clear() for db in dbs)


def build_template(conn: Any, values: Mapping[str, str], schema_files: list[Path]) -> str:
    """(Re)create the run's template database from the schema files."""
    import psycopg

    template = database_name(values, "template")
    conn.execute(f"DROP DATABASE IF EXISTS {_ident(template)} WITH (FORCE)")
    conn.execute(f"CREATE DATABASE {_ident(template)}")
    url = values["DATABASE_URL"].rsplit("/", 1)[0] + "/" + template
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as tconn:
        for path in schema_files:
            tconn.execute(path.read_text(encoding="utf-8"))
    return template


def clone_database(conn: Any, values: Mapping[str, str], name: str, attempts: int = 20) -> None:
    """CREATE DATABASE name TEMPLATE <template>.

    Only sessions connected to the template block a clone (clones from other
    sessions take compatible locks and run concurrently), so stray sessions
    on the template are terminated first and a clone that still meets one is
    retried, bounded.
    """
    import time

    import psycopg

    template = database_name(values, "template")
    conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
    for attempt in range(attempts):
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (template,),
        )
        try:
            conn.execute(f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(template)}")
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise StackError(f"cannot clone {template}: other sessions keep using it") from None
            time.sleep(0.1)


def drop_database(conn: Any, name: str) -> None:
    conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
