"""Layer 2: one copy, typed: `Copy` and its services, built once per command from what derive computes.

`derive.copy_of(root, settings)` (or `Copy.of(values, stack_services)` from the cached values) gives the
copy; the modules that start, check, route, test or remove a copy take it instead of parsing strings back
into ports and service names. `copy.env` is every derived value as `make env` prints it (for compose, the
kinds' own settings such as POSTGRES_USER, and the variables a test process gets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .basics import var_name
from .config import client_host

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .kinds import Kind, Service

__all__ = ["Copy", "ServiceCopy"]


@dataclass(frozen=True)
class ServiceCopy:
    """One service of a copy: its stack.yml name, kind and ports (ints), and where clients reach it."""

    name: str  # as in stack.yml: postgres, api, ...
    key: str  # its variable prefix: POSTGRES, API, ...
    kind_name: str  # postgres, redis, mqtt, http ...
    host: str  # the address clients on this machine reach the copy's ports on (the bind address's client form)
    port: int  # this copy's host port
    container_port: int
    volumes: tuple[str, ...]  # this copy's volume names of the service
    url: str | None  # the URL clients on this machine use (its kind's <SERVICE>_URL ...)
    named_url: str | None  # its URL through the machine's proxy (http services, a local engine)

    @property
    def kind(self) -> Kind:
        """The kind module's Kind."""
        from . import kinds

        return kinds.get(self.kind_name)

    def as_service(self) -> Service:
        """The service as a kind's hooks see it (name, variable prefix, host, port)."""
        from .kinds import Service

        return Service(self.name, self.key, self.host, self.port)


@dataclass(frozen=True)
class Copy:
    """One copy of the stack: its offset and where it came from, its names, engine and services.

    Built once per command; `env` holds every derived value as strings (`make env`), the properties the
    same values typed."""

    env: Mapping[str, str]
    services: tuple[ServiceCopy, ...]  # the services this command works on (SERVICES=...: those)
    others: tuple[ServiceCopy, ...] = ()  # the rest of the stack's (their ports still count: a worker's ports avoid them)

    @classmethod
    def of(cls, derived: Mapping[str, str], stack_services: Mapping[str, Mapping[str, Any]]) -> Copy:
        """The copy whose derived values are `derived` (derive.load's, or the cache's) and whose stack.yml
        services are `stack_services` (derive.services')."""
        from . import kinds

        host = client_host(derived["BIND_ADDRESS"])
        services = []
        for name, svc in stack_services.items():
            key = var_name(name)
            kind = kinds.of(svc)
            services.append(
                ServiceCopy(
                    name=name,
                    key=key,
                    kind_name=kind.name,
                    host=host,
                    port=int(derived[f"{key}_PORT"]),
                    container_port=int(derived[f"{key}_CONTAINER_PORT"]),
                    volumes=tuple(derived[f"{var_name(v)}_VOLUME"] for v in svc.get("volumes", []) if f"{var_name(v)}_VOLUME" in derived),
                    url=derived.get(kind.url_variable(kinds.Service(name, key, host, 0))) or None,
                    named_url=derived.get(f"{key}_NAMED_URL") or None,
                )
            )
        return cls(dict(derived), tuple(services))

    @classmethod
    def of_kinds(cls, derived: Mapping[str, str], kinds_of: Mapping[str, str]) -> Copy:
        """The copy of `derived` with the services `kinds_of` names ({service: kind}: what a test run isolates)."""
        return cls.of(derived, {name: {"kind": kind} for name, kind in kinds_of.items()})

    def as_env(self) -> dict[str, str]:
        """Every derived value as KEY=VALUE strings: what `make env` prints and compose interpolates."""
        return dict(self.env)

    def service(self, name: str) -> ServiceCopy:
        """The service called `name` (KeyError if the stack has none)."""
        for svc in self.all_services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def only(self, names: set[str] | list[str]) -> Copy:
        """This copy working on the services `names` only (SERVICES=...: a run that isolates some of them); the
        others stay in `others`, so `all_services` is still the whole stack."""
        every = self.all_services
        return Copy(self.env, tuple(s for s in every if s.name in names), tuple(s for s in every if s.name not in names))

    @property
    def all_services(self) -> tuple[ServiceCopy, ...]:
        """Every service of the stack, those `only` left out included."""
        return self.services + self.others

    @property
    def offset(self) -> int:
        """PORT_OFFSET."""
        return int(self.env["PORT_OFFSET"])

    @property
    def offset_source(self) -> str:
        """Where the offset came from: environment, env/local.env, auto, TASK_ID, ... (`auto (unclaimed)`)."""
        return self.env["PORT_OFFSET_SOURCE"]

    @property
    def env_name(self) -> str:
        """STACK_ENV: dev, test, ci ..."""
        return self.env["STACK_ENV"]

    @property
    def project(self) -> str:
        """stack.yml's project name."""
        return self.env["STACK_PROJECT"]

    @property
    def compose_project(self) -> str:
        """The compose project (and prefix of every Docker object) of this copy: <project>[-<env>]-<offset>."""
        return self.env["COMPOSE_PROJECT_NAME"]

    @property
    def worktree(self) -> Path:
        """The project directory of the worktree this copy belongs to."""
        return Path(self.env["STACK_WORKTREE"])

    @property
    def bind(self) -> str:
        """BIND_ADDRESS: the host address its ports are published on."""
        return self.env["BIND_ADDRESS"]

    @property
    def engine(self) -> str:
        """STACK_ENGINE: `local`, or the remote engine's endpoint."""
        return self.env.get("STACK_ENGINE", "local")

    @property
    def remote(self) -> bool:
        """True when the copy runs on another host's engine."""
        return self.engine != "local"

    @property
    def named_urls_port(self) -> str:
        """The machine's named-URL proxy port, or `off`."""
        return self.env.get("NAMED_URLS_PORT", "off")

    @property
    def secrets(self) -> dict[str, str]:
        """The copy's secrets ({POSTGRES_PASSWORD: ...}): what its kinds declare secret, never printed unless asked."""
        from . import kinds

        return {k: self.env[k] for k in kinds.secret_keys(svc.kind for svc in self.services) if k in self.env}

    def ports(self) -> list[tuple[str, int]]:
        """(service, host port) of every service."""
        return [(s.name, s.port) for s in self.services]
