"""Kind `redis`: REDIS_URL; per test worker, a Redis DB index of its own.

The stack's app uses DB 0; tests never do. By default (`isolation_redis =
db`) worker N uses DB 1+N, flushed before and after its run, so suites that
call `flushdb()`, `flushall()` on a client of their DB, or `keys *` stay in
their own DB. `isolation_redis = prefix` shares DB 1 between workers and
isolates by key prefix only: unsafe for suites that flush (documented).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..basics import StackError
from .base import Kind, LocalRoute, LocalServer, Run, Service, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Copy

__all__ = ["DATABASES", "KIND", "RedisNamespace", "Resp", "redis_prefix"]

DATABASES = 16  # Redis's default `databases`; DB 0 is the app's
TEST_DB = 1  # the shared test DB of prefix mode and of runs without isolation


@dataclass(frozen=True)
class RedisNamespace:
    """A worker's slice of this copy's Redis: a DB index, and a key prefix within it."""

    url: str  # of DB 0, as the stack derives it
    prefix: str
    db: int = TEST_DB

    @property
    def db_url(self) -> str:
        """The URL of this namespace's DB."""
        return self.url.rsplit("/", 1)[0] + f"/{self.db}"

    def key(self, name: str) -> str:
        """`name` inside this namespace: the worker's prefix in front."""
        return f"{self.prefix}{name}"

    def client(self) -> Any:
        """A client of this namespace's DB. (from_url's own `db=` loses to the URL's path: the URL carries it.)"""
        import redis  # lazy

        return redis.Redis.from_url(self.db_url, socket_connect_timeout=5)

    def clear(self) -> int:
        """Delete this namespace's keys (its prefix, in its DB); return how many."""
        with Resp(self.url) as conn:
            return conn.delete_matching(self.db, self.prefix)

    def flush(self) -> None:
        """Empty this namespace's whole DB."""
        with Resp(self.url) as conn:
            conn.call("SELECT", self.db)
            conn.call("FLUSHDB")


class Resp:
    """The few Redis commands test isolation needs, over one socket.

    The plugin's own housekeeping (flush a worker's DB, delete a killed run's
    keys) runs in every test process; redis-py's import alone costs more than
    all of it, and a suite that never touches Redis would pay it in each worker.
    """

    def __init__(self, url: str, timeout: float = 5.0):
        import socket
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout)
        self._file = self._sock.makefile("rb")
        if parts.password:
            self.call("AUTH", *([unquote(parts.username)] if parts.username else []), unquote(parts.password))

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
        self._sock.close()

    def call(self, *args: object) -> Any:
        """Send one command, return its reply (StackError for a Redis error reply)."""
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self) -> Any:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise StackError(f"Redis: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._file.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise StackError(f"Redis: unexpected reply {line[:40]!r}")

    def delete_matching(self, db: int, prefix: str) -> int:
        """Delete the keys of DB `db` that start with `prefix`; return how many."""
        self.call("SELECT", db)
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        deleted, cursor = 0, b"0"
        while True:
            cursor, keys = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 500)
            if keys:
                deleted += int(self.call("DEL", *keys))
            if cursor == b"0":
                return deleted


def redis_prefix(copy: Copy, who: str = "") -> str:
    """`test:<copy>:<who>:`; without `who`, the prefix of all this copy's test keys."""
    return f"test:{copy.env['COMPOSE_PROJECT_NAME']}:" + (f"{who}:" if who else "")


class Redis(Kind):
    name = "redis"
    one_per_stack = True
    variables = ("REDIS_URL",)
    client = "redis-cli"

    def url_variable(self, service: Service) -> str:
        return "REDIS_URL"

    def url(self, service: Service, derived: Mapping[str, str]) -> str:
        return f"redis://{service.host}:{service.port}/0"

    # ------------------------------------------------------------ test isolation
    def max_workers(self, options: Mapping[str, str]) -> int | None:
        return DATABASES - TEST_DB if options.get("redis", "db") == "db" else None

    def worker_resources(self, service: Service, copy: Copy, worker: Worker) -> dict[str, Any]:
        mode = worker.options.get("redis", "db")
        db = TEST_DB + worker.index if worker.isolated and mode == "db" else TEST_DB
        if db >= DATABASES:
            raise StackError(
                f"worker {worker.name} needs Redis DB {db} but Redis has {DATABASES} (DB 0 is the app's): "
                f"use at most {DATABASES - TEST_DB} workers (-n), or raise `databases` in the stack's Redis"
            )
        return {"redis": RedisNamespace(copy.env["REDIS_URL"], redis_prefix(copy, worker.who), db)}

    def worker_env(self, service: Service, copy: Copy, resources: Mapping[str, Any]) -> dict[str, str]:
        namespace: RedisNamespace = resources["redis"]
        return {
            "REDIS_URL": namespace.db_url,
            "REDIS_HOST": service.host.strip("[]"),
            "REDIS_PORT": str(service.port),
            "REDIS_DB": str(namespace.db),
            "REDIS_KEY_PREFIX": namespace.prefix,
        }

    def local_route(self, service: Service, copy: Copy, worker: Worker) -> LocalRoute | None:
        """`Redis()`, `redis://127.0.0.1:6379/5`: a server of the worker's own. The copy's server cannot isolate a
        suite that picks DB numbers itself (or uses DB 0, the app's); not routed when isolation is off."""
        if not worker.isolated:
            return None
        port = copy.service(service.name).container_port
        return LocalRoute(port, server=LocalServer("redis:7-alpine", "REDIS_IMAGE", 6379, slot=2, hello=b"PING\r\n", answer=b"+PONG"))

    def start_run(self, service: Service, copy: Copy, run: Run) -> None:
        _clear_stale(copy)

    def end_run(self, service: Service, copy: Copy, run: Run) -> None:
        _clear_stale(copy)
        if run.isolated and run.options.get("redis", "db") == "db":
            # a worker killed before its end leaves its DB full (keys a test wrote without the prefix included)
            with Resp(copy.env["REDIS_URL"]) as conn:
                for index in sorted(run.workers):
                    if TEST_DB + index < DATABASES:
                        conn.call("SELECT", TEST_DB + index)
                        conn.call("FLUSHDB")

    def start_worker(self, service: Service, copy: Copy, resources: Mapping[str, Any], worker: Worker) -> None:
        self._clean(resources["redis"], worker)

    def end_worker(self, service: Service, copy: Copy, resources: Mapping[str, Any], worker: Worker) -> None:
        self._clean(resources["redis"], worker)

    @staticmethod
    def _clean(namespace: RedisNamespace, worker: Worker) -> None:
        """A worker's own DB is emptied whole; a shared one loses only the worker's keys."""
        if worker.isolated and worker.options.get("redis", "db") == "db":
            namespace.flush()
        else:
            namespace.clear()


KIND = Redis()


def _clear_stale(copy: Copy) -> int:
    """Delete this copy's prefixed test keys in every test DB (left by killed runs); never DB 0."""
    with Resp(copy.env["REDIS_URL"]) as conn:
        return sum(conn.delete_matching(db, redis_prefix(copy)) for db in range(TEST_DB, DATABASES))
