"""A small suite that touches what isolation hands out: the worker's database (the same
table in every test) and its Redis DB (flushed), and one test that holds the run open."""
from __future__ import annotations

import pytest

from conftest import pause


def test_holds_the_run_open():
    pause("tests")


@pytest.mark.parametrize("n", range(4))
def test_creates_the_same_table(worker_db, n):
    worker_db.execute("CREATE TABLE thing (n int)")
    worker_db.execute("INSERT INTO thing VALUES (%s)", (n,))
    assert worker_db.execute("SELECT count(*) FROM thing").fetchone()[0] == 1
    worker_db.execute("DROP TABLE thing")


@pytest.mark.parametrize("n", range(4))
def test_flushes_its_redis(redis_namespace, n):
    client = redis_namespace.client()
    client.set(f"left-{n}", "x")  # unprefixed, as a suite that owns its DB writes
    client.flushdb()
    client.set("mine", n)
    assert client.dbsize() == 1 and int(client.get("mine")) == n
