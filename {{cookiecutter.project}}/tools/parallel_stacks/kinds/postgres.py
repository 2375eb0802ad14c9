"""Kind `postgres`: credentials, DATABASE_URL; per-worker databases are cloned
from a per-run template (see parallel_stacks.pytest_plugin.isolation)."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Kind, Lookup, Service

__all__ = ["KIND"]


class Postgres(Kind):
    name = "postgres"
    one_per_stack = True
    variables = ("POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "DATABASE_URL")
    secrets = ("POSTGRES_PASSWORD",)
    client = "psql"

    def client_command(self, values: Mapping[str, str]) -> list[str]:
        return ["psql", "-U", values["POSTGRES_USER"], "-d", values["POSTGRES_DB"]]

    def settings(self, project: str, lookup: Lookup) -> dict[str, str]:
        return {
            "POSTGRES_USER": lookup("POSTGRES_USER") or "app",
            "POSTGRES_DB": lookup("POSTGRES_DB") or project.replace("-", "_"),
            "POSTGRES_PASSWORD": lookup("POSTGRES_PASSWORD") or "",
        }

    def url_variable(self, service: Service) -> str:
        return "DATABASE_URL"

    def url(self, service: Service, values: Mapping[str, str]) -> str:
        user, password, database = values["POSTGRES_USER"], values["POSTGRES_PASSWORD"], values["POSTGRES_DB"]
        return f"postgresql://{user}:{password}@{service.host}:{service.port}/{database}"


KIND = Postgres()
