"""Section 5's extra api module (copied --modules times into the baked project's tests/): 5 tests of ~0.1 s I/O each."""
import pytest

pytestmark = pytest.mark.api


@pytest.mark.parametrize("n", range(5))
def test_scaled(db, redis_namespace, n):
    db.execute("INSERT INTO items VALUES (%s, 'x', 1) ON CONFLICT (id) DO NOTHING", (1000 + n,))
    db.execute("SELECT pg_sleep(0.1)")
    client = redis_namespace.client()
    assert client.incr(redis_namespace.key(f"scaled:{n}")) >= 1
    assert db.execute("SELECT count(*) FROM items WHERE id = %s", (1000 + n,)).fetchone()[0] == 1
