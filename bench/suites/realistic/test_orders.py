"""Section 11's database work (copied 10 times): orders over 200 items, totals and the top seller in SQL."""
import pytest

pytestmark = pytest.mark.api


@pytest.fixture
def shop(db):
    db.execute("DELETE FROM orders")
    db.execute("DELETE FROM items")
    with db.cursor() as cur:
        cur.executemany("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)", [(i, f"item {i}", i % 17 + 0.5) for i in range(1, 201)])
    yield db
    db.execute("DELETE FROM orders")
    db.execute("DELETE FROM items")


@pytest.mark.parametrize("n", range(10))
def test_order_totals(shop, n):
    with shop.cursor() as cur:
        cur.executemany("INSERT INTO orders (item_id, quantity) VALUES (%s, %s)", [(1 + (i * 7 + n) % 200, 1 + i % 5) for i in range(100)])
    total = shop.execute("SELECT sum(i.price * o.quantity) FROM orders o JOIN items i ON i.id = o.item_id").fetchone()[0]
    expected = sum((1 + (i * 7 + n) % 200) % 17 + 0.5 for i in range(100) for _ in range(1 + i % 5))
    assert float(total) == pytest.approx(expected)
    top = shop.execute("SELECT item_id FROM orders GROUP BY item_id ORDER BY sum(quantity) DESC, item_id LIMIT 1").fetchone()
    assert top is not None
