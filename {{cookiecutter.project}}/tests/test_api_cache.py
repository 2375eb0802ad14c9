"""API suite: the worker's own Redis key namespace. Every test uses the same key names."""
import time

import pytest

pytestmark = pytest.mark.api


@pytest.fixture
def cache(redis_namespace):
    return redis_namespace.client(), redis_namespace


def test_counter(cache):
    client, ns = cache
    for _ in range(3):
        client.incr(ns.key("cart:42"))
    time.sleep(0.2)
    assert int(client.get(ns.key("cart:42"))) == 3
    client.delete(ns.key("cart:42"))


def test_list_order(cache):
    client, ns = cache
    client.rpush(ns.key("queue"), "a", "b", "c")
    time.sleep(0.2)
    assert client.lrange(ns.key("queue"), 0, -1) == [b"a", b"b", b"c"]
    client.delete(ns.key("queue"))


def test_keys_carry_the_worker_prefix(cache, parallel_context):
    client, ns = cache
    client.set(ns.key("session"), "x")
    time.sleep(0.2)
    assert ns.prefix.endswith(f":{parallel_context.worker}:") or not parallel_context.isolated
    assert [k.decode() for k in client.scan_iter(match=ns.prefix + "*") if k.decode().endswith("session")] == [ns.key("session")]
