"""Fixtures of the example suite.

`worker_claim` makes every worker take the same names at once: a table
called `worker_claim`, a Redis key `claim`, the first port of its block.
With per-worker isolation they never meet; with --no-isolation two workers
collide on all three, so the suite proves its own isolation.
"""
import socket

import pytest


@pytest.fixture(scope="session", autouse=True)
def worker_claim(request, parallel_context):
    if request.config.getoption("no_stack"):
        yield None
        return
    db = request.getfixturevalue("db_session")
    db.execute("CREATE TABLE worker_claim (worker text NOT NULL)")
    db.execute("INSERT INTO worker_claim VALUES (%s)", (parallel_context.worker,))
    ns = parallel_context.redis
    client = ns.client() if ns else None
    if client is not None:
        assert client.set(ns.key("claim"), parallel_context.worker, nx=True), (
            f"Redis key {ns.key('claim')} already claimed by {client.get(ns.key('claim'))!r}"
        )
    listener = socket.socket()
    listener.bind(("127.0.0.1", parallel_context.ports.port(0)))
    listener.listen()
    yield parallel_context.worker
    listener.close()
    if client is not None:
        client.delete(ns.key("claim"))
    db.execute("DROP TABLE IF EXISTS worker_claim")


@pytest.fixture(scope="session")
def db_session(database_url):
    import psycopg

    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        yield conn
