"""The team's own suite: it knows nothing of workers or copies. Every test creates the same
table and flushes the cache: two processes sharing a database or a Redis DB collide."""
import os
import time

import pytest

from shop import settings, store


def report(what):
    where = os.environ.get("SHOP_REPORT_DIR")
    if where:
        with open(os.path.join(where, f"{os.getpid()}-{what}".replace("/", "%")), "w"):
            pass


@pytest.mark.parametrize("n", range(8))
def test_orders_table(n):
    with store.connect() as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO orders VALUES (%s)", (n,))
        time.sleep(0.2)  # the work a real test does: long enough for another process to overlap
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 1
        report(f"db={conn.info.dbname}:{conn.info.port}")
        conn.execute("DROP TABLE orders")


@pytest.mark.parametrize("n", range(8))
def test_cache_is_ours(n):
    cache = store.cache()
    cache.flushdb()
    cache.set("visits", n)
    assert cache.dbsize() == 1 and int(cache.get("visits")) == n
    report(f"cache={settings.CACHE_URL}")
