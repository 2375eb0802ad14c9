"""What a service kind is: the contract every module in this package fills in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Copy


__all__ = ["Kind", "LocalRoute", "LocalServer", "Run", "Service", "Worker"]

Lookup = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Service:
    """One service of the stack as a kind sees it."""

    name: str  # as in stack.yml: postgres, api, ...
    key: str  # its variable prefix: POSTGRES, API, ...
    host: str  # the address clients on this machine use
    port: int  # this copy's host port


@dataclass(frozen=True)
class Worker:
    """One test process as a kind sees it (the pytest plugin builds it)."""

    name: str  # master, gw0, gw1, ...
    index: int  # 0 for master and gw0, N for gwN
    who: str  # `name`, or "shared" when isolation is off: every worker then gets the same resources
    isolated: bool
    options: Mapping[str, str] = field(default_factory=dict)  # e.g. {"redis": "db"}


@dataclass(frozen=True)
class Run:
    """One test run of this copy, as the controller (or the only process) sees it."""

    isolated: bool
    schema_files: list[Path] = field(default_factory=list)  # isolation_schema: loaded into a database template
    options: Mapping[str, str] = field(default_factory=dict)
    workers: frozenset[int] = frozenset()  # the worker numbers this run started (0 for the single process)


@dataclass(frozen=True)
class LocalServer:
    """A server of the worker's own (a container, started on the first routed connection): where a routed
    default endpoint goes when the copy's shared server cannot keep workers apart."""

    image: str  # as compose.yaml's default ...
    image_variable: str  # ... which this variable overrides (REDIS_IMAGE)
    container_port: int
    slot: int  # its host port: the worker's block's `slot`-th port from the end (1, the last, is worker_broker's)
    command: tuple[str, ...] = ()
    hello: bytes = b""  # sent once connected; a server is ready when its reply starts with `answer`
    answer: bytes = b""


@dataclass(frozen=True)
class LocalRoute:
    """Where a test process's connections to localhost:`port` (the port clients use by default) go instead:
    this copy's service (`host`:`target`), or a server of the worker's own (`server`)."""

    port: int
    host: str = ""
    target: int = 0
    server: LocalServer | None = None


class Kind:
    """A kind of service. Subclasses override what their kind needs; the defaults do nothing.

    Derivation (`make env`, compose): ``settings`` (values shared by the
    kind's services, e.g. credentials; read through ``lookup``, which follows
    the env-file precedence), ``url``. Secrets are masked in output.

    Test isolation (called by the pytest plugin, for every service of the
    kind): ``worker_resources`` (what one worker owns on the service: a
    database, a Redis DB), ``worker_env`` (the variables its tests read,
    set before anything is imported), ``start_run``/``end_run`` (the
    controller, once per run: leftovers of killed runs, a template),
    ``start_worker``/``end_worker`` (each process: create, then remove, its
    own resources). Connection errors are the plugin's to word.
    """

    name: ClassVar[str] = ""
    one_per_stack: ClassVar[bool] = False  # its variables are not per service (DATABASE_URL, ...)
    variables: ClassVar[tuple[str, ...]] = ()  # the stack-wide variables it derives
    secrets: ClassVar[tuple[str, ...]] = ()  # values never printed unless SHOW_SECRETS=1
    secrets_stored: ClassVar[bool] = True  # the service keeps its secrets in its volume (a new one would not open old data)
    routed: ClassVar[bool] = False  # served by name through the machine's proxy: <SERVICE>_NAMED_URL (proxy.py)
    client: ClassVar[str] = ""  # a command-line client inside its container (`make psql`)

    def client_command(self, copy: Copy) -> list[str]:
        """The client's command line inside the container, logged in."""
        return [self.client]

    def settings(self, project: str, lookup: Lookup) -> dict[str, str]:
        """Stack-wide values of this kind (credentials, database name), from the env files or defaults."""
        return {}

    def url_variable(self, service: Service) -> str:
        """The variable holding `service`'s URL."""
        return f"{service.key}_URL"

    def url(self, service: Service, derived: Mapping[str, str]) -> str:
        """The URL clients on this machine use to reach `service` (`derived`: the values derived so far)."""
        return f"http://{service.host}:{service.port}"

    # ------------------------------------------------------------ test isolation
    @property
    def prepares_tests(self) -> bool:
        """True when a test run makes or removes something on this kind's server (its start/end hooks do work):
        the run then needs the server up before it starts, and checks it before it takes anything."""
        cls = type(self)
        return any(getattr(cls, hook) is not getattr(Kind, hook) for hook in ("start_run", "end_run", "start_worker", "end_worker"))

    def max_workers(self, options: Mapping[str, str]) -> int | None:
        """How many test workers this kind can isolate from each other (None: no limit)."""
        return None

    def worker_resources(self, service: Service, copy: Copy, worker: Worker) -> dict[str, Any]:
        """What `worker` owns on `service` (names, URLs, namespaces); merged into ParallelTestContext.resources."""
        return {}

    def worker_env(self, service: Service, copy: Copy, resources: Mapping[str, Any]) -> dict[str, str]:
        """Environment variables the worker's tests (and the code they import) read to reach its resources."""
        return {}

    def local_route(self, service: Service, copy: Copy, worker: Worker) -> LocalRoute | None:
        """Where `worker`'s hard-coded connections to localhost on the service's container port go (the pytest
        plugin's localhost routing; None: not routed). The default: this copy's own service."""
        return LocalRoute(copy.service(service.name).container_port, service.host.strip("[]"), service.port)

    def start_run(self, service: Service, copy: Copy, run: Run) -> None:
        """Before any worker starts: remove what killed runs of this copy left, prepare templates."""

    def end_run(self, service: Service, copy: Copy, run: Run) -> None:
        """After every worker ended (crashed ones included), holding the run lock: remove what this run's workers
        (`run.workers`) made and did not remove, and whatever killed runs of this copy left."""

    def start_worker(self, service: Service, copy: Copy, resources: Mapping[str, Any], worker: Worker) -> None:
        """In each test process, before its first test: create (or clean) its own resources."""

    def end_worker(self, service: Service, copy: Copy, resources: Mapping[str, Any], worker: Worker) -> None:
        """In each test process, after its last test: remove its own resources."""

    # ------------------------------------------------------------ databases a framework makes (pytest-django)
    def hosts_database(self, service: Service, engine: str, host: object, port: object) -> bool:
        """True when a framework's database entry (Django's ENGINE, HOST, PORT) is on `service`: the plugin then names,
        clones and drops that framework's test databases through the three methods below."""
        return False

    def test_database_name(self, copy: Copy, suffix: str) -> str:
        """The name of this copy's test database `suffix` (a worker, a template): one this kind's cleanup owns."""
        raise NotImplementedError(self.name)

    def clone_test_database(self, copy: Copy, name: str, template: str) -> None:
        """(Re)create test database `name` as a copy of `template`."""
        raise NotImplementedError(self.name)

    def seal_test_database(self, copy: Copy, name: str) -> None:
        """Make template `name` one nothing connects to any more (a stray session would block its clones)."""

    def drop_test_database(self, copy: Copy, name: str) -> None:
        """Drop test database `name` (one this kind's `test_database_name` made)."""
        raise NotImplementedError(self.name)
