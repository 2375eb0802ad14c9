"""Kind `postgres`: credentials and DATABASE_URL; per test worker, its own
database cloned from a template built once per run (`CREATE DATABASE ...
TEMPLATE`, tens of milliseconds where a container per worker takes seconds).

Names: `test_<copy>_template`, `test_<copy>_<worker>` (`test_<copy>_shared`
without isolation); with pytest-django, `test_<copy>_djtemplate` (migrated
once per run) and, for a second database alias, a `_<n>` suffix. Only
databases of exactly those shapes are this copy's: another copy's (whose
names end in its own offset's digits first), and any other database, are
never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..basics import StackError
from .base import Kind, Lookup, Run, Service, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Copy

__all__ = [
    "KIND",
    "admin_connect",
    "build_template",
    "clone_database",
    "clone_strategy",
    "database_name",
    "drop_database",
    "drop_owned_databases",
    "owned_database",
    "seal",
    "serves",
]

# compose.yaml passes these to the server (`command: postgres -c fsync=${POSTGRES_SYNC} ...`, PGDATA).
# `off`: fsync, full_page_writes and synchronous_commit off and the data directory on the container's
# tmpfs, so CREATE DATABASE (a worker's clone) takes tens of milliseconds instead of hundreds.
DURABILITY = {
    "durable": {"POSTGRES_SYNC": "on", "POSTGRES_PGDATA": "/var/lib/postgresql/data"},
    "off": {"POSTGRES_SYNC": "off", "POSTGRES_PGDATA": "/var/lib/postgresql/tmpfs/data"},
}
IDENT = re.compile(r"[a-z_][a-z0-9_]*")
OWNED_SUFFIX = re.compile(r"(master|template|djtemplate|shared|gw\d+)(_\d+)?")


class Postgres(Kind):
    name = "postgres"
    one_per_stack = True
    variables = (
        "POSTGRES_USER",
        "POSTGRES_DB",
        "POSTGRES_PASSWORD",
        "POSTGRES_DURABILITY",
        "POSTGRES_SYNC",
        "POSTGRES_PGDATA",
        "DATABASE_URL",
    )
    secrets = ("POSTGRES_PASSWORD",)
    client = "psql"

    def settings(self, project: str, lookup: Lookup) -> dict[str, str]:
        durability = lookup("POSTGRES_DURABILITY") or "durable"
        if durability not in DURABILITY:
            raise StackError(
                f"POSTGRES_DURABILITY={durability[:40]!r}: use durable (the default: data survives crashes and restarts) "
                "or off (test mode for copies whose data is disposable: no fsync, data in memory, lost on `make down`)"
            )
        return {
            "POSTGRES_USER": lookup("POSTGRES_USER") or "app",
            "POSTGRES_DB": lookup("POSTGRES_DB") or project.replace("-", "_"),
            "POSTGRES_PASSWORD": lookup("POSTGRES_PASSWORD") or "",
            "POSTGRES_DURABILITY": durability,
            **DURABILITY[durability],
        }

    def url_variable(self, service: Service) -> str:
        return "DATABASE_URL"

    def url(self, service: Service, derived: Mapping[str, str]) -> str:
        from urllib.parse import quote

        user, password, database = (quote(derived[key], safe="") for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
        return f"postgresql://{user}:{password}@{service.host}:{service.port}/{database}"

    def client_command(self, copy: Copy) -> list[str]:
        return ["psql", "-U", copy.env["POSTGRES_USER"], "-d", copy.env["POSTGRES_DB"]]

    # ------------------------------------------------------------ test isolation
    def worker_resources(self, service: Service, copy: Copy, worker: Worker) -> dict[str, Any]:
        name = database_name(copy, worker.who)
        return {"database_name": name, "database_url": _url(copy, name)}

    def worker_env(self, service: Service, copy: Copy, resources: Mapping[str, Any]) -> dict[str, str]:
        """DATABASE_URL and libpq's own variables, so `psycopg.connect("")`, psql and URLs built from PG* land here too."""
        return {
            "DATABASE_URL": resources["database_url"],
            "TEST_DATABASE_NAME": resources["database_name"],
            "PGHOST": service.host.strip("[]"),
            "PGPORT": str(service.port),
            "PGUSER": copy.env["POSTGRES_USER"],
            "PGPASSWORD": copy.env["POSTGRES_PASSWORD"],
            "PGDATABASE": resources["database_name"],
        }

    def start_run(self, service: Service, copy: Copy, run: Run) -> None:
        with admin_connect(copy) as conn:
            drop_owned_databases(conn, copy)
            build_template(conn, copy, [p.read_text(encoding="utf-8") for p in run.schema_files if p.exists()])
            if not run.isolated:
                clone_database(conn, copy, database_name(copy, "shared"))

    def end_run(self, service: Service, copy: Copy, run: Run) -> None:
        # The controller outlives its workers: whatever a crashed worker left goes too.
        with admin_connect(copy) as conn:
            drop_owned_databases(conn, copy)

    def start_worker(self, service: Service, copy: Copy, resources: Mapping[str, Any], worker: Worker) -> None:
        if worker.isolated:  # without isolation the controller made the one shared database
            with admin_connect(copy) as conn:
                clone_database(conn, copy, resources["database_name"])

    def end_worker(self, service: Service, copy: Copy, resources: Mapping[str, Any], worker: Worker) -> None:
        if worker.isolated:
            with admin_connect(copy) as conn:
                drop_database(conn, resources["database_name"])

    # ------------------------------------------------------------ a framework's test databases (pytest-django)
    def hosts_database(self, service: Service, engine: str, host: object, port: object) -> bool:
        return "postgres" in engine and serves(service, host, port)

    def test_database_name(self, copy: Copy, suffix: str) -> str:
        return database_name(copy, suffix)

    def clone_test_database(self, copy: Copy, name: str, template: str) -> None:
        with admin_connect(copy) as conn:
            clone_database(conn, copy, name, template=template)

    def seal_test_database(self, copy: Copy, name: str) -> None:
        with admin_connect(copy) as conn:
            seal(conn, name)

    def drop_test_database(self, copy: Copy, name: str) -> None:
        """Drop test database `name`, connections and all."""
        with admin_connect(copy) as conn:
            drop_database(conn, name)


KIND = Postgres()


# ---------------------------------------------------------------- administration
def copy_slug(copy: Copy) -> str:
    """This copy's compose project name as an SQL/identifier-safe slug."""
    return copy.env["COMPOSE_PROJECT_NAME"].replace("-", "_")


def database_name(copy: Copy, suffix: str) -> str:
    """`test_<copy>_<suffix>`: this copy's test database for a worker, the template or `shared`; StackError past 63 characters."""
    name = f"test_{copy_slug(copy)}_{suffix}"
    if len(name) > 63:
        raise StackError(f"test database name {name!r} exceeds PostgreSQL's 63 characters; shorten the project slug")
    return name


def owned_database(copy: Copy, name: str) -> bool:
    """True for databases this copy's test runs create (never another copy's)."""
    prefix = f"test_{copy_slug(copy)}_"
    return name.startswith(prefix) and OWNED_SUFFIX.fullmatch(name[len(prefix) :]) is not None


def _url(copy: Copy, database: str) -> str:
    return copy.env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + database


def admin_connect(copy: Copy) -> Any:
    """Autocommit connection to the copy's maintenance database."""
    import psycopg  # lazy

    return psycopg.connect(_url(copy, "postgres"), autocommit=True, connect_timeout=5)


def _ident(name: str) -> str:
    if not IDENT.fullmatch(name):
        raise StackError(f"refusing unsafe database name {name!r}")
    return f'"{name}"'


def drop_owned_databases(conn: Any, copy: Copy, keep: tuple[str, ...] = ()) -> list[str]:
    """Drop this copy's test databases (left by killed runs); return their names."""
    names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test%'")]
    dropped = []
    for name in names:
        if owned_database(copy, name) and name not in keep:
            conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
            dropped.append(name)
    return dropped


def build_template(conn: Any, copy: Copy, schema: list[str]) -> str:
    """(Re)create the run's template database from the schema texts, then seal it against connections."""
    import psycopg

    template = database_name(copy, "template")
    conn.execute(f"DROP DATABASE IF EXISTS {_ident(template)} WITH (FORCE)")
    conn.execute(f"CREATE DATABASE {_ident(template)}")
    with psycopg.connect(_url(copy, template), autocommit=True, connect_timeout=5) as tconn:
        for text in schema:
            tconn.execute(text)
    seal(conn, template)
    return template


def seal(conn: Any, template: str) -> None:
    """No new sessions on `template`: a stray one (a psql left open) would otherwise block every clone."""
    conn.execute(f"ALTER DATABASE {_ident(template)} WITH ALLOW_CONNECTIONS false")


def clone_strategy(conn: Any) -> str:
    """CREATE DATABASE's STRATEGY clause for this server, by measurement (docs/PERFORMANCE.md): FILE_COPY
    on a server without fsync (no checkpoint to wait for; 12 vs 15 ms here), WAL_LOG on a durable one
    (46-91 vs 118-174 ms); nothing before PostgreSQL 15, which has only the one way."""
    version, fsync = conn.execute("SELECT current_setting('server_version_num')::int, current_setting('fsync')").fetchone()
    if version < 150000:
        return ""
    return " STRATEGY FILE_COPY" if fsync == "off" else " STRATEGY WAL_LOG"


def serves(service: Service, host: object, port: object) -> bool:
    """True when a client configured with (`host`, `port`) reaches `service` (this copy's server)."""
    loopback = {"", "localhost", "127.0.0.1", "::1", service.host.strip("[]")}
    return str(port or 5432) == str(service.port) and str(host or "").strip("[]") in loopback


def clone_database(conn: Any, copy: Copy, name: str, attempts: int = 20, template: str | None = None) -> None:
    """CREATE DATABASE name TEMPLATE <template> (the run's schema template unless named).

    Only sessions connected to the template block a clone (clones from other
    sessions take compatible locks and run concurrently), so stray sessions
    on the template are terminated first and a clone that still meets one is
    retried, bounded.
    """
    import time

    import psycopg

    template = template or database_name(copy, "template")
    conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
    strategy = clone_strategy(conn)
    for attempt in range(attempts):
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (template,),
        )
        try:
            conn.execute(f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(template)}{strategy}")
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise StackError(f"cannot clone {template}: other sessions keep using it") from None
            time.sleep(0.1)


def drop_database(conn: Any, name: str) -> None:
    """DROP DATABASE IF EXISTS `name` WITH (FORCE): its sessions are ended first."""
    conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
