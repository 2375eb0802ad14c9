"""Fixtures of the example suite.

`worker_claim` makes every worker take the same names at once: a table
called `worker_claim`, a Redis key `claim`, the MQTT topic `claim`, the first
port of its block. With per-worker isolation they never meet; with
--no-isolation two workers collide on all of them, so the suite proves its
own isolation.
"""
import queue
import socket
import threading

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
    claims = mqtt_claim(parallel_context)
    listener = socket.socket()
    listener.bind(("127.0.0.1", parallel_context.ports.port(0)))
    listener.listen()
    yield parallel_context.worker
    listener.close()
    if claims is not None:
        inbox, subscriber = claims
        subscriber.loop_stop()
        subscriber.disconnect()
        seen = {inbox.get_nowait() for _ in range(inbox.qsize())}
        assert seen <= {parallel_context.worker}, (
            f"MQTT topic {parallel_context.topics.topic('claim')} was also claimed by {sorted(seen - {parallel_context.worker})}"
        )
    if client is not None:
        client.delete(ns.key("claim"))
    db.execute("DROP TABLE IF EXISTS worker_claim")


def mqtt_claim(parallel_context):
    """Subscribe to this worker's `claim` topic, then publish on it: a worker sharing the
    namespace (and running at the same time) puts its name in the other's inbox."""
    mqtt = parallel_context.mqtt
    if mqtt is None:
        return None
    inbox = queue.Queue()
    subscriber = mqtt.client()
    subscriber.on_message = lambda _client, _userdata, msg: inbox.put(msg.payload.decode())
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *args: subscribed.set()
    topic = parallel_context.topics.topic("claim")
    subscriber.subscribe(topic, qos=1)
    assert subscribed.wait(10), f"the broker did not confirm the subscription to {topic}"
    subscriber.publish(topic, parallel_context.worker, qos=1).wait_for_publish(10)
    return inbox, subscriber


@pytest.fixture(scope="session")
def db_session(database_url):
    import psycopg

    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        yield conn
