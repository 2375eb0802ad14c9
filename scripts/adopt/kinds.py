"""A service's kind from its image: registry hosts, variables in names and tags, the common variants."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .common import evaluate

# image (registry, `library/`, tag and digest removed) -> kind; anything else that publishes a port is http
KINDS = {
    "postgres": "postgres",
    "postgis/postgis": "postgres",
    "pgvector/pgvector": "postgres",
    "timescale/timescaledb": "postgres",
    "timescale/timescaledb-ha": "postgres",
    "timescale/timescaledb-postgis": "postgres",
    "bitnami/postgresql": "postgres",
    "ankane/pgvector": "postgres",
    "supabase/postgres": "postgres",
    "redis": "redis",
    "redis/redis-stack": "redis",
    "redis/redis-stack-server": "redis",
    "redislabs/redismod": "redis",
    "bitnami/redis": "redis",
    "valkey/valkey": "redis",
    "bitnami/valkey": "redis",
    "eclipse-mosquitto": "mqtt",
}
# container paths that hold a service's data (a bind mount there is per copy)
DATA_PATHS = {
    "postgres": ("/var/lib/postgresql/data", "/var/lib/postgresql", "/bitnami/postgresql", "/home/postgres/pgdata"),
    "redis": ("/data", "/bitnami/redis/data", "/bitnami/valkey/data"),
    "mqtt": ("/mosquitto/data",),
    "": (
        "/var/lib/postgresql/data", "/var/lib/postgresql", "/var/lib/mysql", "/var/lib/mariadb", "/data/db", "/var/lib/redis",
        "/bitnami/postgresql", "/bitnami/mysql", "/bitnami/mariadb", "/bitnami/redis/data", "/bitnami/mongodb",
        "/var/lib/clickhouse", "/usr/share/elasticsearch/data", "/usr/share/opensearch/data", "/var/lib/rabbitmq",
        "/mosquitto/data", "/var/lib/influxdb", "/var/lib/influxdb2", "/var/opt/mssql", "/var/lib/neo4j/data",
        "/etcd", "/var/lib/cassandra", "/var/lib/mongodb", "/var/lib/minio", "/export",
    ),
}


def image_name(image: Any, env: Mapping[str, str] | None = None) -> str:
    """`registry:5000/library/postgres:${TAG:-16}@sha256:...` -> `postgres`: the repository path alone."""
    if not isinstance(image, str) or not image.strip():
        return ""
    text = re.sub(r"\$\{[^{}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", lambda m: _value(m.group(0), env or {}), image.strip())
    while "${" in text:  # nested defaults, innermost first
        text = re.sub(r"\$\{[^{}]*\}", lambda m: _value(m.group(0), env or {}), text)
    text = text.split("@", 1)[0]
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text = text[: len(text) - len(last)] + last.split(":", 1)[0]
    parts = [p for p in text.lower().split("/") if p]
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # a registry host
    if parts[:1] == ["library"]:
        parts = parts[1:]
    return "/".join(parts)


def _value(reference: str, env: Mapping[str, str]) -> str:
    value = evaluate(reference, env)
    return value if value is not None else ""


def kind_of(image: Any, env: Mapping[str, str] | None = None) -> str:
    """postgres, redis or mqtt for their official images and common variants; http for anything else."""
    return KINDS.get(image_name(image, env), "http")


def is_data_path(target: str, kind: str) -> bool:
    target = target.rstrip("/") or "/"
    return target in DATA_PATHS[""] or (kind in DATA_PATHS and target in DATA_PATHS[kind])
