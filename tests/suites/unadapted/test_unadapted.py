"""A suite written without parallel-stacks in mind: libpq defaults, REDIS_* from the
environment, the same table in every test, flushdb(). Used by tests/test_parallel_e2e.py
and `make bench`."""
import os

import psycopg
import pytest
import redis


@pytest.mark.parametrize("n", range(6))
def test_an_unadapted_suite(n):
    # no fixture of ours: libpq's PG* defaults and REDIS_HOST/PORT/DB from the environment, as many suites do
    client = redis.Redis(host=os.environ["REDIS_HOST"], port=int(os.environ["REDIS_PORT"]), db=int(os.environ.get("REDIS_DB", "0")))
    client.set("suite:key", n)
    client.flushdb()  # what a suite's teardown often does
    with psycopg.connect("", autocommit=True) as conn:
        conn.execute("CREATE TABLE unadapted (n int)")  # the same table in every test
        conn.execute("INSERT INTO unadapted VALUES (%s)", (n,))
        conn.execute("DROP TABLE unadapted")
