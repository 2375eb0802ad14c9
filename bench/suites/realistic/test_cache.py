"""Section 11's Redis work (copied 10 times): a cart of hashes in a pipeline, a ranking in a sorted set."""
import pytest

pytestmark = pytest.mark.api


@pytest.mark.parametrize("n", range(10))
def test_cart_in_redis(redis_namespace, n):
    client = redis_namespace.client()
    cart = redis_namespace.key(f"cart:{n}")
    pipe = client.pipeline()
    for i in range(200):
        pipe.hincrby(cart, f"sku{i % 37}", 1 + i % 3)
    pipe.execute()
    assert sum(int(v) for v in client.hvals(cart)) == sum(1 + i % 3 for i in range(200))
    client.zadd(redis_namespace.key("rank"), {f"sku{i}": i * n for i in range(50)})
    assert len(client.zrevrange(redis_namespace.key("rank"), 0, 9)) == 10
    client.delete(cart, redis_namespace.key("rank"))
