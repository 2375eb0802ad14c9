"""Hard-coded localhost isolated too (issue 27), on a real engine with real xdist workers.

Two copies of one baked project: OTHER at offset 0 owns the default ports (`Redis()` and `localhost:1883`
reach it, as they reach a developer's dev copy), COPY at offset 10000 is the one under test.

OTHER has a dev key in its Redis DB 0 and a retained message on its broker, COPY a dev key in its DB 0: all
untouched by the routed runs (sequential and 2 workers), and nothing of the runs' servers is left. With
`isolation_localhost = off` the same suite fails (it reaches OTHER: its DB 0 is put back afterwards).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import psutil

import paho.mqtt.client as mqtt
import pytest
import redis

from conftest import PACKAGE, TEMPLATE, running_copies
from parallel_stacks import localroute
from parallel_stacks.engine import TEST_COPY_LABEL

pytestmark = pytest.mark.docker
OTHER, COPY = 0, 10000  # the issue's: the dev copy at 0, the copy under test at 10000
SUITE = TEMPLATE / "tests" / "suites" / "hardcoded"
TESTS = 10  # in SUITE (test_hold.py's is skipped but when held)
DEV_KEY, TOPIC, RETAINED = "dev:precious", "sensors/temperature", b"21.5 from the dev copy"


@pytest.fixture(scope="module")
def copies(tmp_path_factory, image_env):
    with running_copies(tmp_path_factory.mktemp("localhost"), image_env, (OTHER, COPY)) as (project, values):
        shutil.copytree(SUITE, project.path / "hardcoded")
        for offset in (OTHER, COPY):
            redis.Redis.from_url(values[offset]["REDIS_URL"]).set(DEV_KEY, f"copy {offset}")
        publish_retained(values[OTHER])
        yield project, values


def broker_client(values, **kwargs):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
    client.username_pw_set(values["MQTT_USER"], values["MQTT_PASSWORD"])
    client.connect("127.0.0.1", int(values["MQTT_PORT"]))
    client.loop_start()
    return client


def publish_retained(values):
    client = broker_client(values)
    try:
        client.publish(TOPIC, RETAINED, qos=1, retain=True).wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()


def retained(values) -> list[bytes]:
    got, done = [], threading.Event()
    client = broker_client(values)

    def on_message(c, userdata, message):
        got.append(message.payload)
        done.set()

    client.on_message = on_message
    try:
        client.subscribe(TOPIC, qos=1)
        done.wait(10)  # a retained message arrives at once; none: the wait ends, the list stays empty
    finally:
        client.loop_stop()
        client.disconnect()
    return got


def as_offset_zero(values) -> dict:
    """The environment that makes OTHER answer the default ports in every Python process of the run: nothing,
    OTHER is the copy at offset 0. (Were it elsewhere, the routing hook installed from outside would stand in:
    PYTHONPATH=route_site and localroute.ENV, as the plugin hands them to subprocesses.)"""
    if int(values["PORT_OFFSET"]) == 0:
        return {}
    routes = [
        localroute.Route("redis", 6379, "127.0.0.1", int(values["REDIS_PORT"])),
        localroute.Route("mqtt", 1883, "127.0.0.1", int(values["MQTT_PORT"])),
    ]
    return {"PYTHONPATH": str(PACKAGE / "route_site"), localroute.ENV: localroute.encode(routes, "none:none")}


def test_containers(values) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={TEST_COPY_LABEL}={values['COMPOSE_PROJECT_NAME']}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


test_containers.__test__ = False  # a helper


def untouched(values):
    assert redis.Redis.from_url(values[OTHER]["REDIS_URL"]).get(DEV_KEY) == f"copy {OTHER}".encode(), "OTHER's DB 0 was touched"
    assert retained(values[OTHER]) == [RETAINED], "OTHER's retained message was replaced"
    assert redis.Redis.from_url(values[COPY]["REDIS_URL"]).get(DEV_KEY) == f"copy {COPY}".encode(), "the copy's own DB 0 was touched"


@pytest.mark.parametrize("target, workers", [("test", None), ("test-parallel", "2")])
def test_a_hard_coded_suite_gets_servers_of_each_workers_own(copies, target, workers):
    project, values = copies
    out = project.make(target, check=False, PORT_OFFSET=COPY, PYTEST_WORKERS=workers, ARGS="hardcoded -p no:cacheprovider",
                       **as_offset_zero(values[OTHER]))
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    assert f"{TESTS} passed" in text
    assert re.search(r"localhost routing: :1883 -> a mqtt server of each worker's own, started on first use \(gw0 127\.0\.0\.1:30007, \+10 per worker\)", text), text[:3000]
    assert re.search(r":5432 -> postgres 127\.0\.0\.1:15432", text)
    routed = re.search(r"isolation: .*routed: (.*)", text)
    assert routed, text[-3000:]
    counts = dict((name, int(n)) for name, n in re.findall(r"(mqtt|redis) (\d+)", routed.group(1)))
    servers = re.search(r"\((\d+) own servers started: median \d+ ms, max \d+ ms\)", routed.group(1))
    assert servers, routed.group(0)
    # one Redis and one broker per process that connected to them: the single process 2, two workers 2 to 4
    assert int(servers.group(1)) == 2 if not workers else 2 <= int(servers.group(1)) <= 4, routed.group(0)
    assert counts["mqtt"] >= 2 and counts["redis"] >= 5, routed.group(0)  # pooled: connections, not commands; a subprocess's are not counted
    if workers:
        assert "2 workers" in text
    print(text)
    assert test_containers(values[COPY]) == [], "a worker's own server was left behind"
    untouched(values)


def test_with_routing_off_the_same_suite_fails(copies):
    project, values = copies
    out = project.make("test-parallel", check=False, PORT_OFFSET=COPY, PYTEST_WORKERS="2",
                       ARGS="hardcoded -p no:cacheprovider -o isolation_localhost=off", **as_offset_zero(values[OTHER]))
    text = out.stdout + out.stderr
    assert out.returncode != 0 and re.search(r"\d+ failed", text), text[-5000:]
    assert "localhost routing: off" in text
    assert re.search(r"FAILED hardcoded/test_hardcoded\.py::test_default_redis_is_this_workers_own", text), text[-5000:]
    assert redis.Redis.from_url(values[COPY]["REDIS_URL"]).get(DEV_KEY) == f"copy {COPY}".encode()
    # it reached OTHER instead: put its dev data back for whatever runs next
    redis.Redis.from_url(values[OTHER]["REDIS_URL"]).set(DEV_KEY, f"copy {OTHER}")
    publish_retained(values[OTHER])


def test_a_bad_isolation_localhost_value_is_one_line(copies):
    project, values = copies
    out = project.make("test", check=False, PORT_OFFSET=COPY, ARGS="hardcoded -p no:cacheprovider -o isolation_localhost=maybe")
    assert out.returncode != 0
    assert "isolation_localhost = maybe: use on (the default) or off" in out.stderr
    assert json.dumps(test_containers(values[COPY])) == "[]"


def test_a_killed_runs_own_servers_are_removed_by_the_next_run_of_the_copy(copies, tmp_path):
    project, values = copies
    copy = values[COPY]["COMPOSE_PROJECT_NAME"]
    env = project.environment(PORT_OFFSET=COPY, HOLD_DIR=str(tmp_path), ARGS="hardcoded/test_hold.py -p no:cacheprovider",
                              **as_offset_zero(values[OTHER]))
    run = subprocess.Popen(["make", "test"], cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not (tmp_path / "ready").exists() and run.poll() is None:
            time.sleep(0.1)
        assert (tmp_path / "ready").exists(), run.communicate()[0][-3000:]
        assert test_containers(values[COPY]) == [f"{copy}-master-redis"]
        (pytest_process,) = [p for p in psutil.Process(run.pid).children(recursive=True) if "pytest" in " ".join(p.cmdline())]
        pytest_process.send_signal(signal.SIGKILL)
        run.wait(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert test_containers(values[COPY]) == [f"{copy}-master-redis"], "a killed run removed its server after all"
    assert test_containers(values[OTHER]) == []
    out = project.make("test", check=False, PORT_OFFSET=COPY, ARGS="hardcoded -p no:cacheprovider", **as_offset_zero(values[OTHER]))
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert test_containers(values[COPY]) == [], "the next run did not remove the killed run's server"
    untouched(values)


def test_a_held_port_for_a_workers_own_server_stops_the_run_before_any_test(copies):
    project, values = copies
    import socket

    holder = socket.create_server(("127.0.0.1", 30008))  # master's (gw0's) own Redis: 2nd-to-last port of block 0
    try:
        out = project.make("test", check=False, PORT_OFFSET=COPY, ARGS="hardcoded -p no:cacheprovider", **as_offset_zero(values[OTHER]))
    finally:
        holder.close()
    text = out.stdout + out.stderr
    assert out.returncode != 0
    lines = [line for line in text.splitlines() if "localhost routing: port 30008" in line]
    assert len(lines) == 1 and f"pid {os.getpid()}" in lines[0], text[-3000:]
    assert "passed" not in text and "failed" not in text
    assert test_containers(values[COPY]) == []
