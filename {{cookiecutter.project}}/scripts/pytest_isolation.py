"""pytest plugin: isolate every pytest-xdist worker of this stack copy.

Each worker (``gw0``, ``gw1``, ...; ``master`` without xdist) gets:

* its own PostgreSQL database on this copy's Postgres, cloned with
  ``CREATE DATABASE ... TEMPLATE`` from a template prepared once per run
  (``test_<copy>_template``; workers get ``test_<copy>_<worker>``);
  ``DATABASE_URL`` points at it before any test module is imported;
* a block of ports for servers its tests start (``base + index * 100``
  inside a range derived from the copy's offset);
* a temp/media directory with the worker id in its name;
* a Redis key prefix (or, as an option, a Redis DB index);
* a message-topic namespace ``test/<worker>/...``;
* container names unique per project, offset and worker.

``--no-isolation`` gives every worker the same database, ports, directory,
prefix and namespace: the example tests then collide, which proves they can.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import stack_config
from stack_config import StackError

WORKER_RE = re.compile(r"^(master|gw(\d+))$")
TEST_PORT_BASE = 20000  # the seed-002 base; a copy's range starts at base + PORT_OFFSET
PORT_BLOCK = 100
PORT_RANGE = 1000  # per copy: copies whose offsets differ by >= 1000 never share a range
REDIS_DBS = 16  # Redis's default `databases`


# ---------------------------------------------------------------- pure parts
def worker_index(worker: str) -> int:
    """0 for ``master`` and ``gw0``, N for ``gwN``."""
    match = WORKER_RE.match(worker)
    if not match:
        raise StackError(f"unexpected pytest-xdist worker id {worker!r} (expected master or gwN)")
    return int(match.group(2) or 0)


def copy_slug(values: dict) -> str:
    """This copy's compose project name as an SQL/identifier-safe slug."""
    return values["COMPOSE_PROJECT_NAME"].replace("-", "_")


def database_name(values: dict, suffix: str) -> str:
    name = f"test_{copy_slug(values)}_{suffix}"
    if len(name) > 63:
        raise StackError(f"test database name {name!r} exceeds PostgreSQL's 63 characters; shorten the project slug")
    return name


def owned_database(values: dict, name: str) -> bool:
    """True for databases this copy's test runs create (never another copy's)."""
    prefix = f"test_{copy_slug(values)}_"
    return name.startswith(prefix) and re.fullmatch(r"master|template|shared|gw\d+", name[len(prefix):]) is not None


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

    def __contains__(self, port: int) -> bool:
        return self.start <= port < self.stop

    def __iter__(self):
        return iter(range(self.start, self.stop))


def services_of(values: dict) -> list[str]:
    """The stack's services as the derived values name them (no stack.yml, no yaml import)."""
    suffix = "_CONTAINER_PORT"
    return [key[: -len(suffix)].lower() for key in values if key.endswith(suffix)]


def port_block(values: dict, index: int, services=None) -> PortBlock:
    """Worker `index`'s block inside this copy's test-port range."""
    offset = int(values["PORT_OFFSET"])
    low = TEST_PORT_BASE + offset
    high = low + PORT_RANGE
    blocks = PORT_RANGE // PORT_BLOCK
    if high - 1 > 65535:
        raise StackError(f"PORT_OFFSET={offset} puts the test-port range {low}-{high - 1} past 65535; use an offset <= {65535 - TEST_PORT_BASE - PORT_RANGE + 1}")
    if index >= blocks:
        raise StackError(
            f"worker {index} has no port block: range {low}-{high - 1} holds {blocks} blocks of {PORT_BLOCK}; use fewer workers (-n)"
        )
    block = PortBlock(low + index * PORT_BLOCK)
    for name in services or {}:
        port = int(values[f"{stack_config.var_name(name)}_PORT"])
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
        return namespaced[len(head):]

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

    def client(self):
        import redis  # lazy

        return redis.Redis.from_url(self.url, db=self.db, socket_connect_timeout=5)

    def clear(self) -> int:
        client = self.client()
        keys = list(client.scan_iter(match=self.prefix.replace("*", r"\*") + "*", count=500))
        return client.delete(*keys) if keys else 0


def redis_prefix(values: dict, who: str = "") -> str:
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
    extra: dict = field(default_factory=dict)

    def container_name(self, service: str) -> str:
        """A container name unique per project, offset and worker."""
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", service):
            raise ValueError(f"bad service name {service!r}")
        return f"{self.copy}-{self.worker}-{service}"


def build_context(values: dict, worker: str, isolated: bool, tmp_root: Path, redis_mode: str = "prefix") -> ParallelTestContext:
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
def admin_connect(values: dict):
    """Autocommit connection to the copy's maintenance database."""
    import psycopg  # lazy

    url = values["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise StackError(f"refusing unsafe database name {name!r}")
    return f'"{name}"'


def drop_owned_databases(conn, values: dict, keep: tuple[str, ...] = ()) -> list[str]:
    """Drop this copy's test databases (left by killed runs); return their names."""
    names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test%'")]
    dropped = []
    for name in names:
        if owned_database(values, name) and name not in keep:
            conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
            dropped.append(name)
    return dropped


def clear_stale_redis(values: dict, mode: str) -> int:
    """Delete this copy's test keys (left by killed runs) from Redis; return how many."""
    if "REDIS_URL" not in values:
        return 0
    dbs = range(REDIS_DBS) if mode == "db" else (0,)
    return sum(RedisNamespace(values["REDIS_URL"], redis_prefix(values), db).clear() for db in dbs)


def build_template(conn, values: dict, schema_files: list[Path]) -> str:
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


def clone_database(conn, values: dict, name: str, attempts: int = 20) -> None:
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


def drop_database(conn, name: str) -> None:
    conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")


# ---------------------------------------------------------------- pytest hooks
def pytest_addoption(parser):
    group = parser.getgroup("isolation", "per-worker isolation of this stack copy")
    group.addoption("--no-isolation", action="store_true", help="share one database, port block, directory and namespace between all workers (to prove tests detect collisions)")
    group.addoption("--no-stack", action="store_true", help="do not touch the stack (for tests that need no database, e.g. -m unit)")
    group.addoption("--isolation-redis", choices=["prefix", "db"], default=None, help="isolate Redis by key prefix (default) or by DB index 1..15")
    parser.addini("isolation_schema", "schema files (relative to rootdir) loaded into the template database", type="linelist", default=["db/schema.sql"])
    parser.addini("isolation_redis", "prefix or db", default="prefix")


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _worker(config) -> str:
    return config.workerinput["workerid"] if _is_worker(config) else "master"


class _State:
    """Per-process state of the plugin, kept on config."""

    def __init__(self, config):
        if _is_worker(config) and "isolation_values" in config.workerinput:
            self.values = dict(config.workerinput["isolation_values"])  # the controller's: derived once per run
        else:
            import derived_cache

            self.values = derived_cache.values()[0]
        self.isolated = not config.getoption("no_isolation")
        self.use_stack = not config.getoption("no_stack")
        self.redis_mode = config.getoption("isolation_redis") or config.getini("isolation_redis")
        self.run_dir = _run_dir(config, self.values)
        self.context = build_context(self.values, _worker(config), self.isolated, self.run_dir, self.redis_mode)
        self.schema = [Path(config.rootpath) / p for p in config.getini("isolation_schema")]
        self.created: list[str] = []
        self.stack_error: str | None = None
        self.lock_fd: int | None = None


def _run_dir(config, values: dict) -> Path:
    """The run's temp root, shared by controller and workers.

    Named `<copy>-testrun-<pid>-*`: those of runs whose process is gone
    (killed) are removed; a run still going keeps its own.
    """
    if _is_worker(config):
        return Path(config.workerinput["isolation_run_dir"])
    import shutil

    prefix = f"{values['COMPOSE_PROJECT_NAME']}-testrun-"
    base = Path(tempfile.gettempdir())
    for stale in base.glob(prefix + "*"):
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def take_run_lock(values: dict) -> int:
    """One test run per copy at a time: the second waits for the first (and says so).

    A run drops and rebuilds the copy's test databases, so two at once would
    destroy each other's. An flock on a file named after the copy: the kernel
    releases it however the holder ends. Returns the fd to close when done.
    """
    import fcntl
    import sys

    path = Path(tempfile.gettempdir()) / f"parallel-stacks-{values['COMPOSE_PROJECT_NAME']}.testlock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StackError(f"cannot open the test-run lock {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        print(
            f"waiting for another test run of {values['COMPOSE_PROJECT_NAME']} (pid {holder}) to finish",
            file=sys.stderr,
            flush=True,
        )
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _stack_down_message(values: dict, exc: Exception) -> str:
    if not values.get("POSTGRES_PASSWORD"):
        return (
            f"this worktree has no POSTGRES_PASSWORD for stack copy {values['COMPOSE_PROJECT_NAME']} "
            f"(env/local.env is missing or lacks it): run `PORT_OFFSET={values['PORT_OFFSET']} make up` here first, "
            "which writes one, or pass --no-stack for tests that need no stack"
        )
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"stack copy {values['COMPOSE_PROJECT_NAME']} is not up (postgres at {values['BIND_ADDRESS']}:{values['POSTGRES_PORT']}: {reason}); "
        f"run `PORT_OFFSET={values['PORT_OFFSET']} make up` first, or pass --no-stack for tests that need no stack"
    )


GROUPING_SCHEDULERS = ("loadscope", "loadfile", "loadgroup")


def _no_restart_under_grouping(config) -> None:
    """xdist 3.8's grouping schedulers can hang for good after replacing a crashed
    worker (pytest-xdist#1323, #1378): under them a crash ends the run instead."""
    option = config.option
    if getattr(option, "dist", "no") in GROUPING_SCHEDULERS and getattr(option, "maxworkerrestart", "") is None:
        option.maxworkerrestart = "0"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if not _is_worker(config):
        _no_restart_under_grouping(config)
    try:
        state = _State(config)
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    config._isolation = state
    ctx = state.context
    # Settings before any application code is imported (collection comes later).
    os.environ.update(
        DATABASE_URL=ctx.database_url,
        TEST_DATABASE_NAME=ctx.database_name,
        TEST_WORKER_ID=ctx.worker,
        TEST_PORT_BLOCK=f"{ctx.ports.start}-{ctx.ports.stop - 1}",
        TEST_TOPIC_PREFIX=ctx.topics.prefix,
        MEDIA_ROOT=str(ctx.tmp_dir),
    )
    if ctx.redis is not None:
        os.environ.update(REDIS_URL=ctx.redis.url.rsplit("/", 1)[0] + f"/{ctx.redis.db}", REDIS_KEY_PREFIX=ctx.redis.prefix)
    if _is_worker(config) or not state.use_stack:
        return
    # Controller (or the single process without xdist): once per run.
    try:
        import docker_state

        docker_state.ensure_owned(state.values)  # another worktree's copy: refuse before touching it
        state.lock_fd = take_run_lock(state.values)
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        with admin_connect(state.values) as conn:
            drop_owned_databases(conn, state.values)
            clear_stale_redis(state.values, state.redis_mode)
            build_template(conn, state.values, [p for p in state.schema if p.exists()])
            if not state.isolated:
                clone_database(conn, state.values, ctx.database_name)
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    except Exception as exc:  # psycopg.OperationalError and friends: one clear line
        raise pytest.UsageError(_stack_down_message(state.values, exc)) from None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller hook: hand every worker the run's temp root and the copy's values."""
    node.workerinput["isolation_run_dir"] = str(node.config._isolation.run_dir)
    node.workerinput["isolation_values"] = dict(node.config._isolation.values)


def pytest_unconfigure(config):
    state = getattr(config, "_isolation", None)
    if state is None:
        return
    if not _is_worker(config):
        import shutil

        shutil.rmtree(state.run_dir, ignore_errors=True)
    if not state.use_stack:
        return
    try:
        with admin_connect(state.values) as conn:
            for name in state.created:
                drop_database(conn, name)
            if not _is_worker(config):
                # The controller outlives its workers: whatever a crashed worker
                # left (its database, its keys) goes too. One run per copy.
                drop_owned_databases(conn, state.values)
                clear_stale_redis(state.values, state.redis_mode)
    except Exception:
        pass  # the next run's start drops whatever is left
    finally:
        if state.lock_fd is not None:
            os.close(state.lock_fd)  # the next run of this copy may start
            state.lock_fd = None


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def stack(pytestconfig) -> dict:
    """This copy's derived values (ports, URLs) as `make env` prints them."""
    return dict(pytestconfig._isolation.values)


@pytest.fixture(scope="session")
def parallel_context(pytestconfig) -> ParallelTestContext:
    """This worker's isolated resources, all in one object."""
    return pytestconfig._isolation.context


@pytest.fixture(scope="session")
def isolated_database(pytestconfig, parallel_context) -> str:
    """Name of this worker's own database, cloned from the run's template on first use."""
    state = pytestconfig._isolation
    if not state.use_stack:
        pytest.fail("this test needs the stack's database but --no-stack was given", pytrace=False)
    if state.isolated and parallel_context.database_name not in state.created:
        try:
            with admin_connect(state.values) as conn:
                clone_database(conn, state.values, parallel_context.database_name)
        except Exception as exc:
            pytest.fail(_stack_down_message(state.values, exc), pytrace=False)
        state.created.append(parallel_context.database_name)
    return parallel_context.database_name


@pytest.fixture(scope="session")
def database_url(isolated_database, parallel_context) -> str:
    return parallel_context.database_url


@pytest.fixture
def db(database_url):
    """A psycopg connection to this worker's database (autocommit)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        yield conn


@pytest.fixture(scope="session")
def redis_namespace(pytestconfig, parallel_context) -> RedisNamespace:
    """This worker's Redis prefix/DB; its keys are deleted at the end of the session."""
    if parallel_context.redis is None:
        pytest.skip("this stack has no Redis")
    if not pytestconfig._isolation.use_stack:
        pytest.fail("this test needs the stack's Redis but --no-stack was given", pytrace=False)
    yield parallel_context.redis
    parallel_context.redis.clear()


@pytest.fixture(scope="session")
def worker_ports(parallel_context) -> PortBlock:
    """The block of ports this worker's servers may bind."""
    return parallel_context.ports


@pytest.fixture(scope="session")
def worker_tmp_dir(parallel_context) -> Path:
    """A temp/media directory whose name carries the copy and worker id."""
    parallel_context.tmp_dir.mkdir(parents=True, exist_ok=True)
    return parallel_context.tmp_dir


@pytest.fixture(scope="session")
def topic_namespace(parallel_context) -> TopicNamespace:
    return parallel_context.topics


@pytest.fixture(scope="session")
def container_name(parallel_context):
    """container_name('broker') -> '<copy>-<worker>-broker'."""
    return parallel_context.container_name
