"""Adoption without code changes: a real third-party suite, from its PyPI sdist,
run in a baked project with nothing but `pytest.ini` lines (and the one SQL
line its upstream CI runs first).

SQLAlchemy-Utils 0.43.0 reads its own variables (`SQLALCHEMY_UTILS_TEST_DB`,
`..._POSTGRESQL_HOST` without a port, `..._USER`, `..._PASSWORD`), creates
and drops the same tables in every test, and was never written for xdist.
`isolation_env` maps the worker's values onto those names.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
import urllib.request

import psycopg
import pytest

from conftest import TEMPLATE, running_copies
from test_parallel_e2e import passed_ids, test_databases

pytestmark = pytest.mark.docker
OFFSET = 6000
SDIST = "SQLAlchemy-Utils==0.43.0"
SUITE = "sqlalchemy_utils-0.43.0/tests"
# Tests that need MySQL or MSSQL servers, the psycopg2cffi driver, or that connect to a literal
# `localhost` (port 5432: the offset-0 copy's server, another worktree's data: never ours to touch).
DESELECT = "not MySql and not MySQL and not Mssql and not MSSQL and not Pg8000 and not CFFI"
PYTEST_INI = """\
isolation_env =
    SQLALCHEMY_UTILS_TEST_DB = {PGDATABASE}
    SQLALCHEMY_UTILS_TEST_POSTGRESQL_HOST = {PGHOST}:{PGPORT}
    SQLALCHEMY_UTILS_TEST_POSTGRESQL_USER = {PGUSER}
    SQLALCHEMY_UTILS_TEST_POSTGRESQL_PASSWORD = {PGPASSWORD}
"""


def fetch_sdist(directory):
    """SDIST's source archive from PyPI's simple index (JSON form; the virtualenv may have no pip), hash-checked."""
    name, version = SDIST.split("==")
    project = name.lower().replace("_", "-")
    filename = f"{project.replace('-', '_')}-{version}.tar.gz"
    index = urllib.request.Request(f"https://pypi.org/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(index, timeout=60) as response:
        (entry,) = [f for f in json.load(response)["files"] if f["filename"] == filename]
    with urllib.request.urlopen(entry["url"], timeout=120) as response:
        data = response.read()
    assert hashlib.sha256(data).hexdigest() == entry["hashes"]["sha256"], "the sdist does not match PyPI's digest"
    path = directory / filename
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def adopted(tmp_path_factory, image_env):
    with running_copies(tmp_path_factory.mktemp("worktree-3rd"), image_env, (OFFSET,)) as (project, values):
        with tarfile.open(fetch_sdist(tmp_path_factory.mktemp("sdist"))) as sdist:
            sdist.extractall(project.path, filter="data")
        reqs = project.path / "requirements-dev.txt"
        reqs.write_text(reqs.read_text() + f"{SDIST}\n" + (TEMPLATE / "env" / "requirements-sqlalchemy-utils.txt").read_text())
        (project.path / "db" / "sqlalchemy-utils.sql").write_text("CREATE EXTENSION IF NOT EXISTS hstore;\n")
        ini = project.path / "pytest.ini"
        text = ini.read_text().replace("isolation_schema = db/schema.sql", "isolation_schema =\n    db/schema.sql\n    db/sqlalchemy-utils.sql")
        ini.write_text(text + PYTEST_INI)
        project.use_own_virtualenv()
        yield project, values[OFFSET]


def test_sqlalchemy_utils_suite_passes_the_same_tests_sequentially_and_in_parallel(adopted, tmp_path):
    project, values = adopted
    tables_sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    with psycopg.connect(values["DATABASE_URL"], autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS dev_keep (v text)")
        conn.execute("INSERT INTO dev_keep VALUES ('precious')")
        before = {r[0] for r in conn.execute(tables_sql)}
    results = {}
    for target in ("test", "test-parallel"):
        junit = tmp_path / f"{target}.xml"
        out = project.make(target, check=False, PORT_OFFSET=OFFSET, PYTEST_WORKERS="2",
                           ARGS=f"{SUITE} -p no:cacheprovider -q -k '{DESELECT}' --junitxml={junit}")
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
        results[target] = passed_ids(junit)
    assert len(results["test"]) > 2500
    assert results["test"] == results["test-parallel"]
    assert test_databases(values) == set()
    with psycopg.connect(values["DATABASE_URL"], autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SELECT count(*) FROM dev_keep").fetchone()[0] == 1, "the suite touched the dev database"
        after = {r[0] for r in conn.execute(tables_sql)}
    assert after == before, f"the suite changed the dev database's tables: {after ^ before}"
