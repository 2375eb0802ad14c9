"""API suite: the worker's own Postgres database (cloned from the template).

Every test writes the same fixed ids: safe only because each worker has its
own database.
"""
import pytest

pytestmark = pytest.mark.api

ITEMS = [(1, "tea", 3.50), (2, "coffee", 4.20), (3, "cake", 5.00)]


@pytest.fixture
def items(worker_db):
    worker_db.execute("DELETE FROM orders")
    worker_db.execute("DELETE FROM items")
    with worker_db.cursor() as cur:
        cur.executemany("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)", ITEMS)
    yield worker_db
    worker_db.execute("DELETE FROM orders")
    worker_db.execute("DELETE FROM items")


def test_database_is_this_workers_clone(worker_db, parallel_context):
    assert worker_db.execute("SELECT current_database()").fetchone()[0] == parallel_context.database_name
    assert worker_db.execute("SELECT to_regclass('public.items')").fetchone()[0] == "items"


def test_insert_and_count(items):
    items.execute("SELECT pg_sleep(0.2)")
    assert items.execute("SELECT count(*) FROM items").fetchone()[0] == 3


def test_order_total(items):
    items.execute("INSERT INTO orders (item_id, quantity) VALUES (1, 2), (3, 1)")
    items.execute("SELECT pg_sleep(0.2)")
    total = items.execute(
        "SELECT sum(i.price * o.quantity) FROM orders o JOIN items i ON i.id = o.item_id"
    ).fetchone()[0]
    assert float(total) == 12.0


def test_price_constraint(items):
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation):
        items.execute("INSERT INTO items VALUES (4, 'free lunch', -1)")
    items.execute("SELECT pg_sleep(0.2)")
    assert items.execute("SELECT count(*) FROM items").fetchone()[0] == 3


def test_rename_is_visible_only_here(items):
    items.execute("UPDATE items SET name = 'green tea' WHERE id = 1")
    items.execute("SELECT pg_sleep(0.2)")
    assert items.execute("SELECT name FROM items WHERE id = 1").fetchone()[0] == "green tea"
