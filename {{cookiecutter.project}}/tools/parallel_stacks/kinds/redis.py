"""Kind `redis`: REDIS_URL; per-worker isolation by key prefix or DB index
(see parallel_stacks.pytest_plugin.isolation)."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Kind, Service

__all__ = ["KIND"]


class Redis(Kind):
    name = "redis"
    one_per_stack = True
    variables = ("REDIS_URL",)
    client = "redis-cli"

    def url_variable(self, service: Service) -> str:
        return "REDIS_URL"

    def url(self, service: Service, values: Mapping[str, str]) -> str:
        return f"redis://{service.host}:{service.port}/0"


KIND = Redis()
