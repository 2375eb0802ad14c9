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
from .base import Kind, Run, Service, Worker

__all__ = ["DATABASES", "KIND", "RedisNamespace", "redis_prefix"]

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
        return self.url.rsplit("/", 1)[0] + f"/{self.db}"

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def client(self) -> Any:
        """A client of this namespace's DB. (from_url's own `db=` loses to the URL's path: the URL carries it.)"""
        import redis  # lazy

        return redis.Redis.from_url(self.db_url, socket_connect_timeout=5)

    def clear(self) -> int:
        """Delete this namespace's keys (its prefix, in its DB); return how many."""
        client = self.client()
        keys = list(client.scan_iter(match=self.prefix.replace("*", r"\*") + "*", count=500))
        return int(client.delete(*keys)) if keys else 0


def redis_prefix(values: Mapping[str, str], who: str = "") -> str:
    """`test:<copy>:<who>:`; without `who`, the prefix of all this copy's test keys."""
    return f"test:{values['COMPOSE_PROJECT_NAME']}:" + (f"{who}:" if who else "")


class Redis(Kind):
    name = "redis"
    one_per_stack = True
    variables = ("REDIS_URL",)
    client = "redis-cli"

    def url_variable(self, service: Service) -> str:
        return "REDIS_URL"

    def url(self, service: Service, values: Mapping[str, str]) -> str:
        return f"redis://{service.host}:{service.port}/0"

    # ------------------------------------------------------------ test isolation
    def max_workers(self, options: Mapping[str, str]) -> int | None:
        return DATABASES - TEST_DB if options.get("redis", "db") == "db" else None

    def worker_resources(self, service: Service, values: Mapping[str, str], worker: Worker) -> dict[str, Any]:
        mode = worker.options.get("redis", "db")
        db = TEST_DB + worker.index if worker.isolated and mode == "db" else TEST_DB
        if db >= DATABASES:
            raise StackError(
                f"worker {worker.name} needs Redis DB {db} but Redis has {DATABASES} (DB 0 is the app's): "
                f"use at most {DATABASES - TEST_DB} workers (-n), or raise `databases` in the stack's Redis"
            )
        return {"redis": RedisNamespace(values["REDIS_URL"], redis_prefix(values, worker.who), db)}

    def worker_env(self, service: Service, values: Mapping[str, str], resources: Mapping[str, Any]) -> dict[str, str]:
        namespace: RedisNamespace = resources["redis"]
        return {
            "REDIS_URL": namespace.db_url,
            "REDIS_HOST": service.host.strip("[]"),
            "REDIS_PORT": str(service.port),
            "REDIS_DB": str(namespace.db),
            "REDIS_KEY_PREFIX": namespace.prefix,
        }

    def start_run(self, service: Service, values: Mapping[str, str], run: Run) -> None:
        _clear_stale(values)

    def end_run(self, service: Service, values: Mapping[str, str], run: Run) -> None:
        _clear_stale(values)

    def start_worker(self, service: Service, values: Mapping[str, str], resources: Mapping[str, Any], worker: Worker) -> None:
        self._clean(resources["redis"], worker)

    def end_worker(self, service: Service, values: Mapping[str, str], resources: Mapping[str, Any], worker: Worker) -> None:
        self._clean(resources["redis"], worker)

    @staticmethod
    def _clean(namespace: RedisNamespace, worker: Worker) -> None:
        """A worker's own DB is emptied whole; a shared one loses only the worker's keys."""
        if worker.isolated and worker.options.get("redis", "db") == "db":
            namespace.client().flushdb()
        else:
            namespace.clear()


KIND = Redis()


def _clear_stale(values: Mapping[str, str]) -> int:
    """Delete this copy's prefixed test keys in every test DB (left by killed runs); never DB 0."""
    return sum(RedisNamespace(values["REDIS_URL"], redis_prefix(values), db).clear() for db in range(TEST_DB, DATABASES))
