"""A suite written the hard-coded way (issue 27): `redis.Redis()` on DB 0 with `flushdb()`, "the first empty DB
from 4" picked by a session fixture, an asyncio client, a paho client on localhost:1883 with a fixed topic, and a
Python subprocess handed `redis://127.0.0.1:6379/5`. No variable of the plugin's is read. Used by
tests/test_localhost_e2e.py: each worker must find a server of its own, with nothing of anyone else's on it."""
import asyncio
import os
import subprocess
import sys
import threading

import paho.mqtt.client as mqtt
import pytest
import redis
import redis.asyncio

ME = os.environ.get("PYTEST_XDIST_WORKER", "master")


@pytest.fixture(scope="session")
def scratch_db():
    """The first empty DB from 4 on, claimed with a key (two workers sharing a server would race for it)."""
    for db in range(4, 16):
        client = redis.Redis(db=db)
        if client.dbsize() == 0:
            client.set("claimed-by", ME)
            yield client
            client.flushdb()
            return
    pytest.fail("no empty Redis DB")


@pytest.mark.parametrize("n", range(3))
def test_default_redis_is_this_workers_own(n):
    client = redis.Redis()  # localhost:6379, DB 0
    assert client.keys("dev:*") == [], "DB 0 holds someone's dev data: this is not the worker's own server"
    client.set("owner", ME)
    client.incr("count")
    assert client.get("owner") == ME.encode()
    client.flushdb()


@pytest.mark.parametrize("n", range(3))
def test_first_empty_db_stays_mine(scratch_db, n):
    assert scratch_db.connection_pool.connection_kwargs["db"] == 4, "another worker claimed DB 4 of my server"
    assert scratch_db.get("claimed-by") == ME.encode()


def test_asyncio_client():
    async def roundtrip():
        client = redis.asyncio.Redis(host="localhost", port=6379, db=2)
        await client.set("async", ME)
        value = await client.get("async")
        await client.flushdb()
        await client.aclose()
        return value

    assert asyncio.run(roundtrip()) == ME.encode()


def test_subprocess_with_a_hard_coded_url():
    code = "import redis, sys; redis.Redis.from_url('redis://127.0.0.1:6379/5').set('from-child', sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, ME], check=True, timeout=120)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/5")
    assert client.get("from-child") == ME.encode()
    client.delete("from-child")


@pytest.mark.parametrize("n", range(2))
def test_mqtt_on_localhost_1883(n):
    """Subscribe to a fixed topic, publish a retained message: the first message is our own (the broker is ours)."""
    got, subscribed, done = [], threading.Event(), threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hard-coded-{ME}-{n}")
    client.on_subscribe = lambda *args: subscribed.set()

    def on_message(c, userdata, message):
        got.append(message.payload.decode())
        done.set()

    client.on_message = on_message
    client.connect("localhost", 1883)
    client.loop_start()
    try:
        client.subscribe("sensors/temperature", qos=1)
        assert subscribed.wait(30)
        client.publish("sensors/temperature", f"{ME}-{n}", qos=1, retain=True).wait_for_publish(30)
        assert done.wait(30)
        assert got[0] == f"{ME}-{n}", f"a message of someone else's on this worker's broker: {got}"
        client.publish("sensors/temperature", b"", qos=1, retain=True).wait_for_publish(30)  # clear the retained message
    finally:
        client.loop_stop()
        client.disconnect()
