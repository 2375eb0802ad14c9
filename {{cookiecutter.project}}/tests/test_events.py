"""Events suite (seed 002): the API publishes every created item on this copy's
MQTT broker. Each worker starts its own API process, which reads the worker's
settings (its database, MQTT_TOPIC_PREFIX) like any app reads its environment,
and listens in its own topic namespace. Every worker uses the same item ids and
topic names: safe only because databases and namespaces are per worker.
"""
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.api

APP = Path(__file__).resolve().parent.parent / "api" / "app.py"


@pytest.fixture(scope="module")
def api_process(worker_ports, database_url):
    """This worker's own API on port 3 of its block, with the worker's environment."""
    port = worker_ports.port(3)
    env = {**os.environ, "API_CONTAINER_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(APP)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the API did not start on {url}: {proc.communicate()[1].decode()[-800:]}")
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def subscribe(client, topic):
    done = threading.Event()
    client.on_subscribe = lambda *args: done.set()
    client.subscribe(topic, qos=1)
    assert done.wait(10), f"the broker did not confirm the subscription to {topic}"


@pytest.fixture
def events(mqtt_endpoint, topic_namespace):
    """Every message in this worker's namespace, as (topic, payload) in arrival order."""
    inbox = queue.Queue()
    client = mqtt_endpoint.client()
    client.on_message = lambda _client, _userdata, msg: inbox.put((msg.topic, json.loads(msg.payload)))
    subscribe(client, topic_namespace.everything)
    yield inbox
    client.loop_stop()
    client.disconnect()


def post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def quiet(inbox, seconds=0.3):
    """Whatever else arrives within `seconds`: should be nothing."""
    time.sleep(seconds)
    return [inbox.get_nowait() for _ in range(inbox.qsize())]


def test_created_item_is_published_in_this_workers_namespace(api_process, events, topic_namespace, worker_db):
    worker_db.execute("DELETE FROM items WHERE id = 7")
    status, body = post(api_process + "/items", {"id": 7, "name": "kettle", "price": 20})
    assert status == 201, body
    assert body["published"] == topic_namespace.topic("items/created")
    topic, payload = events.get(timeout=10)
    assert topic_namespace.strip(topic) == "items/created"
    assert payload == {"id": 7, "name": "kettle", "price": 20.0}
    assert quiet(events) == [], "another worker's events arrived in this worker's namespace"
    worker_db.execute("DELETE FROM items WHERE id = 7")


def test_duplicate_item_is_refused_and_not_published(api_process, events, worker_db):
    worker_db.execute("DELETE FROM items WHERE id = 8")
    assert post(api_process + "/items", {"id": 8, "name": "cup", "price": 2})[0] == 201
    assert events.get(timeout=10)[1]["id"] == 8
    status, body = post(api_process + "/items", {"id": 8, "name": "cup", "price": 2})
    assert status == 409, body
    assert quiet(events) == []
    worker_db.execute("DELETE FROM items WHERE id = 8")


def test_readings_arrive_in_order_and_alone(mqtt_endpoint, events, topic_namespace):
    client = mqtt_endpoint.client()
    try:
        for n in range(20):
            client.publish(topic_namespace.topic("sensors/temp"), json.dumps({"n": n}), qos=1).wait_for_publish(10)
            time.sleep(0.01)
        got = [events.get(timeout=10) for _ in range(20)]
    finally:
        client.loop_stop()
        client.disconnect()
    assert {topic_namespace.strip(topic) for topic, _ in got} == {"sensors/temp"}
    assert [payload["n"] for _, payload in got] == list(range(20))
    assert quiet(events) == [], "another worker's readings arrived in this worker's namespace"


def test_a_broker_of_this_workers_own(worker_broker, container_name, worker_ports):
    """Seed 002, phase 1: a whole broker for one test (here: retained messages, which would
    outlive the test on the shared broker), on the last port of this worker's block."""
    import subprocess

    inspected = subprocess.run(["docker", "container", "inspect", container_name("broker")], capture_output=True, text=True, check=True)
    assert json.loads(inspected.stdout)[0]["State"]["Running"] is True
    assert worker_broker.port in worker_ports
    publisher = worker_broker.client()
    publisher.publish("config/mode", "night", qos=1, retain=True).wait_for_publish(10)
    publisher.loop_stop()
    publisher.disconnect()
    inbox = queue.Queue()
    reader = worker_broker.client()
    reader.on_message = lambda _client, _userdata, msg: inbox.put((msg.topic, msg.payload, msg.retain))
    subscribe(reader, "config/#")
    assert inbox.get(timeout=10) == ("config/mode", b"night", True)
    reader.loop_stop()
    reader.disconnect()
