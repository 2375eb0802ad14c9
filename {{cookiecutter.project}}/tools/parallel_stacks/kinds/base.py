"""What a service kind is: the contract every module in this package fills in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["Kind", "Service"]

Lookup = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Service:
    """One service of the stack as a kind sees it."""

    name: str  # as in stack.yml: postgres, api, ...
    key: str  # its variable prefix: POSTGRES, API, ...
    host: str  # the address clients on this machine use
    port: int  # this copy's host port


class Kind:
    """A kind of service. Subclasses override what their kind needs; the defaults do nothing.

    Derivation (`make env`, compose): ``settings`` (values shared by the
    kind's services, e.g. credentials; read through ``lookup``, which follows
    the env-file precedence), ``url``. Secrets are masked in output.
    Test isolation (the pytest plugin): see ``parallel_stacks.pytest_plugin``.
    """

    name: ClassVar[str] = ""
    one_per_stack: ClassVar[bool] = False  # its variables are not per service (DATABASE_URL, ...)
    variables: ClassVar[tuple[str, ...]] = ()  # the stack-wide variables it derives
    secrets: ClassVar[tuple[str, ...]] = ()  # values never printed unless SHOW_SECRETS=1
    client: ClassVar[str] = ""  # a command-line client inside its container (`make psql`)

    def client_command(self, values: Mapping[str, str]) -> list[str]:
        """The client's command line inside the container, logged in."""
        return [self.client]

    def settings(self, project: str, lookup: Lookup) -> dict[str, str]:
        """Stack-wide values of this kind (credentials, database name), from the env files or defaults."""
        return {}

    def url_variable(self, service: Service) -> str:
        """The variable holding `service`'s URL."""
        return f"{service.key}_URL"

    def url(self, service: Service, values: Mapping[str, str]) -> str:
        """The URL clients on this machine use to reach `service` (`values`: settings derived so far)."""
        return f"http://{service.host}:{service.port}"
