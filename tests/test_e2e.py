"""End to end on a real Docker engine: two copies of one baked project side by side.

Real `docker compose`, real PostgreSQL and Redis servers in containers
(offline stand-in images when built here, else the official images).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import psutil
import psycopg
import pytest
import redis

from conftest import Project, bake, browser_dom, docker_snapshot, one_error_line, running_copies

pytestmark = pytest.mark.docker
OFFSETS = (0, 10000)


def inspect_project(project: str) -> list[dict]:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout) if ids else []


def built_images(project: str) -> list[str]:
    return subprocess.run(
        ["docker", "image", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()


def volume_exists(name: str) -> bool:
    return subprocess.run(["docker", "volume", "inspect", name], capture_output=True).returncode == 0


def health(values: dict) -> dict:
    with urllib.request.urlopen(values["API_URL"] + "/health", timeout=10) as resp:
        return json.load(resp)


def via_name(named_url: str, path: str = "/") -> tuple[int, bytes]:
    """GET a named URL as a browser does: *.localhost is loopback, the name goes in the Host header
    (Python's resolver, unlike browsers and curl, does not know *.localhost)."""
    url = urllib.parse.urlsplit(named_url)
    request = urllib.request.Request(f"http://127.0.0.1:{url.port}{path}", headers={"Host": url.netloc})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def proxy_container(port: str) -> dict | None:
    found = subprocess.run(["docker", "container", "inspect", f"parallel-stacks-proxy-{port}"], capture_output=True, text=True)
    return json.loads(found.stdout)[0] if found.returncode == 0 else None


def connect(values: dict):
    return psycopg.connect(values["DATABASE_URL"], connect_timeout=10, autocommit=True)


def write_mark(values: dict, kind: str) -> str:
    """Insert a unique row through this copy's Postgres port; return it."""
    mark = f"{kind}-{uuid.uuid4()}"
    with connect(values) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS e2e_marks (mark text PRIMARY KEY)")
        conn.execute("INSERT INTO e2e_marks VALUES (%s)", (mark,))
    return mark


def read_marks(values: dict) -> set[str]:
    with connect(values) as conn:
        if conn.execute("SELECT to_regclass('public.e2e_marks')").fetchone()[0] is None:
            return set()
        return {r[0] for r in conn.execute("SELECT mark FROM e2e_marks")}


@pytest.fixture(scope="module")
def copies(tmp_path_factory, image_env):
    """One baked project, copies at offsets 0 and 10000 both up; nuked afterwards."""
    with running_copies(tmp_path_factory.mktemp("worktree-a"), image_env, OFFSETS) as result:
        yield result


def test_both_copies_healthy_at_once(copies):
    project, values = copies
    for offset in OFFSETS:
        records = inspect_project(values[offset]["COMPOSE_PROJECT_NAME"])
        services = {r["Config"]["Labels"]["com.docker.compose.service"] for r in records}
        assert services == {"postgres", "redis", "mqtt", "api", "ui"}
        for rec in records:
            assert rec["State"]["Health"]["Status"] == "healthy", rec["Name"]


def test_each_api_reports_its_own_offset_and_backends(copies):
    _, values = copies
    for offset in OFFSETS:
        body = health(values[offset])
        assert body["port_offset"] == offset
        assert body["compose_project"] == values[offset]["COMPOSE_PROJECT_NAME"]
        assert body["postgres"]["ok"] is True and body["redis"]["ok"] is True and body["mqtt"]["ok"] is True
        assert body["status"] == "ok"


def test_ui_names_its_copy_and_api(copies):
    _, values = copies
    for offset in OFFSETS:
        with urllib.request.urlopen(values[offset]["UI_URL"] + "/config.json", timeout=10) as resp:
            cfg = json.load(resp)
        assert cfg["port_offset"] == offset and cfg["api_url"] == values[offset]["API_URL"]
        with urllib.request.urlopen(values[offset]["UI_URL"] + "/", timeout=10) as resp:
            assert b"/config.json" in resp.read()


def test_a_browser_opens_each_copys_ui_by_its_named_url(copies, chromium, tmp_path):
    """Two copies up: headless Chromium opens each UI at http://ui.<copy>.localhost:<port> and sees that copy's offset."""
    _, values = copies
    port = values[0]["NAMED_URLS_PORT"]
    for offset in OFFSETS:
        named = values[offset]
        assert named["UI_NAMED_URL"] == f"http://ui.demo-stack-{offset}.localhost:{port}"
        dom = browser_dom(chromium, named["UI_NAMED_URL"] + "/", tmp_path / str(offset))
        assert f'<code id="offset">{offset}</code>' in dom, dom[-1500:]
        assert f'<code id="api">{named["API_NAMED_URL"]}</code>' in dom, "opened by name, the page calls its API by name"
        status, body = via_name(named["API_NAMED_URL"], "/health")
        assert status == 200 and json.loads(body)["port_offset"] == offset
    status, body = via_name(f"http://nobody.localhost:{port}")
    assert status == 404 and b"ui.demo-stack-0.localhost" in body and b"ui.demo-stack-10000.localhost" in body
    proxy = proxy_container(port)
    assert proxy and proxy["HostConfig"]["NetworkMode"] == "host" and proxy["Config"]["Labels"]["dev.parallel-stacks.proxy"] == port


def test_named_urls_are_never_served_on_another_port_or_for_a_bad_setting(copies):
    """A held proxy port or a foreign container with the proxy's name: `make up` says why in one warning and the
    copy works by number; a bad NAMED_URLS_PORT: one line, nothing started."""
    project, values = copies
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 17356))
        listener.listen()
        out = project.make("up", PORT_OFFSET=0, NAMED_URLS_PORT="17356")
    assert f"warning: named URLs are not served: port 17356 is held by pid {os.getpid()}" in out.stderr, out.stderr
    assert proxy_container("17356") is None and health(values[0])["status"] == "ok"
    subprocess.run(["docker", "create", "--name", "parallel-stacks-proxy-17357", image_of(values[0], "postgres"), "true"], check=True, capture_output=True)
    try:
        out = project.make("up", PORT_OFFSET=0, NAMED_URLS_PORT="17357")
        assert "warning: named URLs are not served: a container named parallel-stacks-proxy-17357 exists and is not this template's proxy" in out.stderr
        assert proxy_container("17357")["Config"]["Labels"].get("dev.parallel-stacks.proxy") is None, "the foreign container was changed"
        assert health(values[0])["status"] == "ok"
    finally:
        subprocess.run(["docker", "rm", "-f", "parallel-stacks-proxy-17357"], capture_output=True)
        project.make("up", PORT_OFFSET=0)  # the UI back on the suite's proxy port
    before = docker_snapshot()
    for bad in ("80", "web"):
        out = project.make("up", check=False, PORT_OFFSET=11000, NAMED_URLS_PORT=bad)
        assert out.returncode == 2
        assert one_error_line(out.stderr) == f"error: NAMED_URLS_PORT='{bad}' (from environment) must be a port between 1024 and 65535, or off"
    assert docker_snapshot() == before
    assert via_name(values[0]["UI_NAMED_URL"])[0] == 200


def image_of(values: dict, service: str) -> str:
    (rec,) = [r for r in inspect_project(values["COMPOSE_PROJECT_NAME"]) if r["Config"]["Labels"]["com.docker.compose.service"] == service]
    return rec["Config"]["Image"]


def test_ports_follow_the_offset(copies):
    _, values = copies
    assert values[10000]["POSTGRES_PORT"] == "15432" and values[10000]["API_PORT"] == "18003"
    assert values[10000]["UI_PORT"] == "13000" and values[10000]["DB_DATA_VOLUME"].endswith("_db_data_10000")
    assert values[0]["POSTGRES_PORT"] == "5432"


def test_nothing_published_on_all_interfaces(copies):
    _, values = copies
    ports = set()
    for offset in OFFSETS:
        for rec in inspect_project(values[offset]["COMPOSE_PROJECT_NAME"]):
            for bindings in rec["NetworkSettings"]["Ports"].values():
                for b in bindings or []:
                    assert b["HostIp"] == "127.0.0.1", (rec["Name"], b)
                    ports.add(int(b["HostPort"]))
    assert len(ports) == 10
    for rec in inspect_project(values[10000]["COMPOSE_PROJECT_NAME"]):  # and as `docker port` says it
        mapping = subprocess.run(["docker", "port", rec["Id"]], capture_output=True, text=True, check=True).stdout
        assert mapping and all(line.split(" -> ")[1].startswith("127.0.0.1:") for line in mapping.splitlines()), mapping
    listeners = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
    assert listeners, "docker-proxy should listen on the published ports"
    assert all(c.laddr.ip == "127.0.0.1" for c in listeners), listeners


def mqtt_client(values: dict, password: str | None = None):
    """A connected paho-mqtt client of a copy's broker (its URL's credentials unless `password`)."""
    from urllib.parse import unquote, urlsplit

    import paho.mqtt.client as mqtt

    url = urlsplit(values["MQTT_URL"])
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set(unquote(url.username), unquote(url.password) if password is None else password)
    client.connect(url.hostname, url.port, keepalive=10)
    return client


def subscribed(values: dict, topic: str):
    """(client, inbox): a subscription to `topic` on a copy's broker, confirmed by the broker."""
    import queue
    import threading

    inbox, done = queue.Queue(), threading.Event()
    client = mqtt_client(values)
    client.on_message = lambda _c, _u, msg: inbox.put((msg.topic, msg.payload))
    client.on_subscribe = lambda *args: done.set()
    client.loop_start()
    client.subscribe(topic, qos=1)
    assert done.wait(10), "no SUBACK"
    return client, inbox


def test_a_message_on_one_copys_broker_never_reaches_the_other(copies):
    _, values = copies
    a, b = values[0], values[10000]
    assert a["MQTT_PORT"] == "1883" and b["MQTT_PORT"] == "11883"
    sub_a, inbox_a = subscribed(a, "e2e/#")
    sub_b, inbox_b = subscribed(b, "e2e/#")
    try:
        pub = mqtt_client(a)
        pub.loop_start()
        pub.publish("e2e/hello", b"from copy a", qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        assert inbox_a.get(timeout=10) == ("e2e/hello", b"from copy a")  # the control: delivery works
        time.sleep(0.5)
        assert inbox_b.empty(), "copy b's subscriber got copy a's message"
    finally:
        for client in (sub_a, sub_b):
            client.loop_stop()
            client.disconnect()


def connack(port: int, user: str | None, password: str | None):
    """The broker's CONNACK reason code for these credentials (None: no answer)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if user is not None:
        client.username_pw_set(user, password)
    codes: list = []
    client.on_connect = lambda _c, _u, _f, code, _p: codes.append(code)
    client.connect("127.0.0.1", port, keepalive=10)
    for _ in range(40):
        client.loop(timeout=0.25)
        if codes:
            break
    client.disconnect()
    return codes[0] if codes else None


def test_the_broker_refuses_a_wrong_password_and_anonymous_clients(copies):
    _, values = copies
    port, user = int(values[0]["MQTT_PORT"]), values[0]["MQTT_USER"]
    right = connack(port, user, values[0]["MQTT_PASSWORD"])
    assert right is not None and not right.is_failure, right  # the control: the right password gets in
    for who, password in ((user, "wrong"), (None, None)):
        code = connack(port, who, password)
        assert code is not None and code.is_failure, f"{who or 'anonymous'} was let in: {code}"


def test_the_api_publishes_created_items_on_its_own_copys_broker(copies):
    _, values = copies
    a, b = values[0], values[10000]
    sub_a, inbox_a = subscribed(a, f"{a['COMPOSE_PROJECT_NAME']}/items/#")
    sub_b, inbox_b = subscribed(b, "#")
    try:
        body = json.dumps({"id": 4242, "name": "e2e kettle", "price": 9.5}).encode()
        request = urllib.request.Request(a["API_URL"] + "/items", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
        topic, payload = inbox_a.get(timeout=10)
        assert topic == f"{a['COMPOSE_PROJECT_NAME']}/items/created"
        assert json.loads(payload) == {"id": 4242, "name": "e2e kettle", "price": 9.5}
        time.sleep(0.5)
        assert not [m for m in list(inbox_b.queue) if b"kettle" in m[1]], "copy b's broker saw copy a's event"
    finally:
        for client in (sub_a, sub_b):
            client.loop_stop()
            client.disconnect()


def test_data_is_isolated_between_copies(copies):
    _, values = copies
    mark = write_mark(values[0], "a")
    assert mark in read_marks(values[0])
    assert mark not in read_marks(values[10000])
    r0 = redis.Redis.from_url(values[0]["REDIS_URL"])
    r1 = redis.Redis.from_url(values[10000]["REDIS_URL"])
    r0.set("e2e:key", mark)
    assert r1.get("e2e:key") is None


def test_up_on_a_running_copy_is_a_no_op(copies):
    project, values = copies
    before = {r["Id"]: r["State"]["StartedAt"] for r in inspect_project(values[0]["COMPOSE_PROJECT_NAME"])}
    out = project.make("up", PORT_OFFSET=0)
    after = {r["Id"]: r["State"]["StartedAt"] for r in inspect_project(values[0]["COMPOSE_PROJECT_NAME"])}
    assert after == before
    # says so in one line: no build log, no compose progress
    assert out.stdout.strip() == f"{values[0]['COMPOSE_PROJECT_NAME']} is already up and healthy; nothing changed (`make ports` shows its URLs)"
    assert out.stderr.strip() == "", out.stderr


def test_api_serves_an_index_of_its_endpoints(copies):
    _, values = copies
    with urllib.request.urlopen(values[0]["API_URL"] + "/", timeout=10) as resp:
        index = json.load(resp)
    assert index["compose_project"] == values[0]["COMPOSE_PROJECT_NAME"] and "/health" in index["endpoints"]


def test_psql_target_reaches_this_copys_database(copies):
    project, values = copies
    mark = write_mark(values[10000], "psql")
    out = project.make("psql", PORT_OFFSET=10000, ARGS="-At -c 'select mark from e2e_marks'")
    assert mark in out.stdout.split()


def test_down_keeps_data_and_nuke_removes_only_its_own_copy(copies):
    project, values = copies
    mark = write_mark(values[0], "keep")

    project.make("down", PORT_OFFSET=0)
    assert inspect_project(values[0]["COMPOSE_PROJECT_NAME"]) == []
    assert volume_exists(values[0]["DB_DATA_VOLUME"])
    assert via_name(values[0]["UI_NAMED_URL"])[0] == 404, "down left the copy's named URL routed"
    assert via_name(values[10000]["UI_NAMED_URL"])[0] == 200, "down of copy 0 withdrew copy 10000's named URL"
    project.make("up", PORT_OFFSET=0)
    assert mark in read_marks(values[0])
    assert via_name(values[0]["UI_NAMED_URL"])[0] == 200

    images = built_images(values[10000]["COMPOSE_PROJECT_NAME"])
    assert images, "compose built no images labelled with the copy"
    dry = project.make("nuke", PORT_OFFSET=10000, DRY_RUN="1")
    assert "images:" in dry.stdout and inspect_project(values[10000]["COMPOSE_PROJECT_NAME"]), "DRY_RUN=1 removed something"
    out = project.make("nuke", PORT_OFFSET=10000, FORCE="1")
    assert "removed" in out.stdout
    assert not volume_exists(values[10000]["DB_DATA_VOLUME"])
    assert built_images(values[10000]["COMPOSE_PROJECT_NAME"]) == [], "nuke left the copy's images behind"
    assert built_images(values[0]["COMPOSE_PROJECT_NAME"]), "nuking copy 10000 removed copy 0's images"
    assert inspect_project(values[10000]["COMPOSE_PROJECT_NAME"]) == []
    assert mark in read_marks(values[0]), "nuking copy 10000 touched copy 0"
    assert health(values[0])["status"] == "ok"
    project.make("up", PORT_OFFSET=10000)  # leave both up for later tests in this module
    assert read_marks(values[10000]) == set()


def test_make_up_refuses_a_busy_port_and_creates_nothing(copies):
    project, _ = copies
    # 11000: every port below Linux's ephemeral range, so no outgoing connection of this run holds one
    values = project.values(PORT_OFFSET=11000)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(values["API_PORT"])))
        listener.listen()
        before = docker_snapshot()
        out = project.make("up", check=False, PORT_OFFSET=11000)
        assert docker_snapshot() == before
        check = project.make("check-ports", check=False, PORT_OFFSET=11000)
    assert out.returncode != 0 and check.returncode != 0
    error = one_error_line(out.stderr)
    assert f"port {values['API_PORT']} for service api" in error
    assert project.make("check-ports", PORT_OFFSET=11000).returncode == 0


def test_foreign_volume_of_the_same_name_is_never_used_or_removed(copies):
    project, _ = copies
    values = project.values(PORT_OFFSET=3900)
    name = values["DB_DATA_VOLUME"]
    subprocess.run(["docker", "volume", "create", name], capture_output=True, check=True)
    try:
        before = docker_snapshot()
        for target in ("nuke", "up"):
            out = project.make(target, check=False, PORT_OFFSET=3900, FORCE="1")
            assert out.returncode != 0
            assert f"volume {name} exists but was not created by this copy" in out.stderr
            assert docker_snapshot() == before
    finally:
        subprocess.run(["docker", "volume", "rm", name], capture_output=True)


def started_at(values: dict) -> dict:
    return {r["Id"]: r["State"]["StartedAt"] for r in inspect_project(values["COMPOSE_PROJECT_NAME"])}


# Every command that changes or reads a copy, run from a second worktree of the
# same project at the same offset (a fresh one: no env/local.env).
FOREIGN_TARGETS = ["up", "down", "nuke", "ps", "logs", "test", "test-parallel", "test-integration"]


def test_another_worktree_cannot_touch_or_read_a_running_copy(copies, tmp_path, image_env):
    _, values = copies
    other = Project(bake(tmp_path), image_env)  # same slug, another directory
    mark = write_mark(values[0], "foreign")
    before, started = docker_snapshot(), started_at(values[0])
    for target in FOREIGN_TARGETS:
        out = other.make(target, check=False, timeout=120, PORT_OFFSET=0, FORCE="1", PYTEST_WORKERS="2")
        assert out.returncode != 0, f"make {target} from another worktree succeeded:\n{out.stdout}"
        if not target.startswith("test"):
            one_error_line(out.stderr)
        lines = [line for line in out.stderr.splitlines() if "belongs to another worktree" in line]
        assert len(lines) == 1 and project_dir(values[0]) in lines[0], (target, out.stderr)
        assert docker_snapshot() == before, f"make {target} from another worktree changed the engine"
        assert started_at(values[0]) == started, f"make {target} from another worktree restarted containers"
    assert mark in read_marks(values[0])
    assert health(values[0])["status"] == "ok"


def project_dir(values: dict) -> str:
    return values["STACK_WORKTREE"]


def test_check_ports_names_another_worktrees_copy(copies, tmp_path, image_env):
    _, values = copies
    other = Project(bake(tmp_path), image_env)
    out = other.make("check-ports", check=False, PORT_OFFSET=0)
    assert out.returncode != 0, out.stdout
    line = one_error_line(out.stderr)
    assert f"compose project {values[0]['COMPOSE_PROJECT_NAME']}, worktree {project_dir(values[0])}" in line, line
    assert "ports ok" not in out.stdout


BAD_OFFSETS = ["abc", "-1", "1.5", "", "70000", "57533", "0x10"]


@pytest.mark.parametrize("target", ["up", "nuke", "check-ports", "env"])
@pytest.mark.parametrize("offset", BAD_OFFSETS, ids=lambda v: repr(v))
def test_bad_offset_creates_nothing(tmp_path_factory, image_env, docker_engine, offset, target):
    project = Project(bake(tmp_path_factory.mktemp("bad")), image_env)
    (project.path / "env" / "local.env").unlink()
    before = docker_snapshot()
    out = project.make(target, check=False, PORT_OFFSET=offset, FORCE="1")
    assert out.returncode != 0
    error = one_error_line(out.stderr)
    assert f"PORT_OFFSET={offset!r}" in error or f"PORT_OFFSET={offset} " in error
    assert "1024-65535" in error
    assert docker_snapshot() == before
    assert not (project.path / "env" / "local.env").exists()


def test_up_refuses_a_volume_whose_password_was_lost(tmp_path, image_env):
    project = Project(bake(tmp_path), image_env)
    try:
        project.make("up", PORT_OFFSET=2400)
        project.make("down", PORT_OFFSET=2400)
        (project.path / "env" / "local.env").unlink()
        before = docker_snapshot()
        out = project.make("up", check=False, PORT_OFFSET=2400)
        assert out.returncode != 0
        error = one_error_line(out.stderr)
        assert "POSTGRES_PASSWORD is missing from env/local.env" in error
        assert docker_snapshot() == before
        assert not (project.path / "env" / "local.env").exists()
    finally:
        project.make("nuke", check=False, PORT_OFFSET=2400, FORCE="1")


def test_port_held_by_another_copys_container_is_named(copies):
    project, values = copies
    # offset 12432 puts this copy's ui on 15432: the postgres port of copy 10000
    before = docker_snapshot()
    for target in ("check-ports", "up"):
        out = project.make(target, check=False, PORT_OFFSET=12432)
        assert out.returncode != 0
        line = one_error_line(out.stderr)
        assert "port 15432 for service ui on 127.0.0.1 is held by container demo-stack-10000-postgres-1" in line
        assert f"compose project demo-stack-10000, worktree {project.path}" in line
        assert "is free" in line
    assert docker_snapshot() == before


def test_check_ports_of_a_running_copy_passes(copies):
    project, _ = copies
    out = project.make("check-ports", PORT_OFFSET=10000)
    assert "ports ok for demo-stack-10000" in out.stdout


def test_test_environment_runs_beside_dev(copies):
    project, values = copies
    try:
        out = project.make("up", ENV="test")
        test_values = project.values(ENV="test")
        assert test_values["COMPOSE_PROJECT_NAME"] == "demo-stack-test-1000"
        assert test_values["DB_DATA_VOLUME"] == "demo-stack_test_db_data_1000"
        assert "127.0.0.1:6432" in out.stdout
        assert health(test_values)["port_offset"] == 1000
        assert health(values[0])["status"] == "ok"
        # test mode: a disposable copy's Postgres without fsync, its data on tmpfs; the dev copy's stays durable
        assert test_values["POSTGRES_DURABILITY"] == "off"
        settings = "-At -c 'show fsync' -c 'show synchronous_commit' -c 'show full_page_writes' -c 'show data_directory'"
        assert project.make("psql", ENV="test", ARGS=settings).stdout.split() == ["off", "off", "off", "/var/lib/postgresql/tmpfs/data"]
        assert project.make("psql", PORT_OFFSET=0, ARGS=settings).stdout.split() == ["on", "on", "on", "/var/lib/postgresql/data"]
        run = project.make("test", ENV="test", ARGS="-m api")
        assert re.search(r"^isolation: template \d+ ms, clone median \d+ ms, max \d+ ms \(1 worker\)$", run.stdout, re.M), run.stdout[-2000:]
    finally:
        project.make("nuke", check=False, ENV="test", FORCE="1")
    assert not volume_exists("demo-stack_test_db_data_1000")
    assert volume_exists(values[0]["DB_DATA_VOLUME"])


@pytest.mark.parametrize("target", ["up", "nuke"])
def test_unreachable_engine_is_one_clear_line(tmp_path, image_env, target):
    project = Project(bake(tmp_path), image_env)
    out = project.make(target, check=False, PORT_OFFSET=4500, FORCE="1", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert out.returncode != 0
    error = one_error_line(out.stderr)
    assert "Docker engine is not reachable" in error, out.stderr


def test_slots_lists_both_copies(copies, tmp_path):
    project, _ = copies
    out = project.make("slots", PARALLEL_STACKS_STATE_DIR=str(tmp_path / "state")).stdout
    for offset in OFFSETS:
        row = next(ln for ln in out.splitlines() if ln.startswith(f"demo-stack-{offset} "))
        assert "running 5/5" in row and str(project.path) in row and f"demo-stack_db_data_{offset}" in row
    listed = json.loads(project.make("slots", FORMAT="json", PARALLEL_STACKS_STATE_DIR=str(tmp_path / "state")).stdout)["copies"]
    for offset in OFFSETS:
        (copy,) = [c for c in listed if c["compose_project"] == f"demo-stack-{offset}"]
        assert copy["offset"] == offset and copy["worktree"] == str(project.path) and copy["worktree_exists"] is True
        assert copy["state"] == "running 5/5" and len(copy["containers"]) == 5
        assert set(copy["volumes"]) == {f"demo-stack_db_data_{offset}", f"demo-stack_mqtt_data_{offset}"}
        assert copy["urls"]["API_URL"] == f"http://127.0.0.1:{8003 + offset}" and "********" in copy["urls"]["DATABASE_URL"]
        assert 1883 + offset in copy["ports"]
    bad = project.make("slots", check=False, FORMAT="yaml")
    assert bad.returncode == 2 and one_error_line(bad.stderr) == "error: FORMAT='yaml': use table (the default) or json"


def test_doctor_passes_on_a_running_copy_and_names_trouble(copies, tmp_path):
    project, _ = copies
    env = {"PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state")}
    ok = project.make("doctor", PORT_OFFSET=0, **env)
    assert "ok    ports:" in ok.stdout and "ok    engine:" in ok.stdout and "FAIL" not in ok.stdout
    warned = project.make("doctor", PORT_OFFSET=0, COMPOSE_PROJECT_NAME="stale-project", **env)
    assert "warn  shell: inherited COMPOSE_PROJECT_NAME=stale-project (computed demo-stack-0)" in warned.stdout
    bad = project.make("doctor", check=False, PORT_OFFSET=12432, **env)  # ui on copy 10000's postgres port
    assert bad.returncode != 0
    assert "FAIL  ports: port 15432 for service ui" in bad.stdout and "demo-stack-10000-postgres-1" in bad.stdout


def test_nuking_one_of_three_copies_ten_times_loses_nothing_of_the_others(copies, tmp_path, image_env):
    project, values = copies
    keep = {offset: write_mark(values[offset], f"keep-{offset}") for offset in OFFSETS}
    third = Project(bake(tmp_path, with_redis=False, with_mqtt=False, with_ui=False), {**image_env, "PORT_OFFSET": "2800"})
    third_values = third.values()
    volume = third_values["DB_DATA_VOLUME"]
    try:
        for round_ in range(10):
            third.make("up")
            assert read_marks(third_values) == set(), f"round {round_}: the nuked copy's data came back"
            write_mark(third_values, f"third-{round_}")
            out = third.make("nuke", FORCE="1")
            assert f"1 volume(s), 1 image(s) of {third_values['COMPOSE_PROJECT_NAME']}" in out.stdout
            assert not volume_exists(volume) and inspect_project(third_values["COMPOSE_PROJECT_NAME"]) == []
            for offset in OFFSETS:
                assert keep[offset] in read_marks(values[offset]), f"round {round_}: copy {offset} lost its row"
                assert health(values[offset])["status"] == "ok"
    finally:
        third.make("nuke", check=False, FORCE="1")


def test_secrets_appear_in_no_output_unless_asked(copies, tmp_path):
    project, values = copies
    password = values[0]["POSTGRES_PASSWORD"]
    assert len(password) >= 30
    env = {"PORT_OFFSET": 0, "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state")}
    for target in ("env", "ports", "up", "ps", "check-ports", "slots", "doctor", "help"):
        out = project.make(target, **env)
        assert password not in out.stdout + out.stderr, f"make {target} printed the password"
        if target in ("env", "ports"):  # (`up` of a running copy prints one line, no URLs)
            assert "********" in out.stdout, target
    shown = project.make("env", SHOW_SECRETS="1", **env).stdout
    assert f"POSTGRES_PASSWORD={password}" in shown.splitlines()
    subprocess.run(["git", "init", "-q"], cwd=project.path, check=True)
    try:
        subprocess.run(["git", "add", "-A"], cwd=project.path, check=True)
        staged = subprocess.run(["git", "grep", "--cached", "-l", "-F", password], cwd=project.path, capture_output=True, text=True)
        assert staged.returncode == 1 and staged.stdout == "", f"committed files carry the password: {staged.stdout}"
        listed = subprocess.run(["git", "ls-files"], cwd=project.path, capture_output=True, text=True, check=True).stdout.split()
        assert "env/local.env" not in listed and "stack.yml" in listed
    finally:
        import shutil

        shutil.rmtree(project.path / ".git")


def test_gc_removes_the_copy_of_a_vanished_worktree_and_only_that(tmp_path, image_env):
    """A worktree deleted by hand (`rm -rf`): `make gc` lists its copy, FORCE=1 removes it; a live copy beside it stays."""
    import shutil

    state = {"PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state")}
    state["NAMED_URLS_PORT"] = "17455"  # a proxy of this test's own: it must go with the last copy
    gone = Project(bake(tmp_path / "gone"), {**image_env, **state, "PORT_OFFSET": "3300"})
    live = Project(bake(tmp_path / "live"), {**image_env, **state, "PORT_OFFSET": "3600"})
    names = {"gone": "demo-stack-3300", "live": "demo-stack-3600"}
    try:
        gone.make("up")
        live.make("up")
        live_before = sorted(r["Id"] for r in inspect_project(names["live"]))
        shutil.rmtree(gone.path)
        listed = live.make("gc").stdout
        assert f"would remove copy {names['gone']} of vanished worktree {gone.path}" in listed, listed
        assert names["live"] not in listed and "demo-stack_db_data_3300" in listed and "demo-stack_mqtt_data_3300" in listed
        assert f"would remove the named URLs of {names['gone']} (vanished worktree {gone.path}) from the proxy on port 17455" in listed
        assert inspect_project(names["gone"]), "listing removed something"
        assert via_name("http://ui.demo-stack-3300.localhost:17455")[0] == 200
        removed = live.make("gc", FORCE="1").stdout
        assert f"removing copy {names['gone']}" in removed and "removed 1 copy of vanished worktrees" in removed
        assert via_name("http://ui.demo-stack-3300.localhost:17455")[0] == 404
        assert via_name("http://ui.demo-stack-3600.localhost:17455")[0] == 200
        assert inspect_project(names["gone"]) == [] and not volume_exists("demo-stack_db_data_3300")
        assert built_images(names["gone"]) == [], "gc left the vanished copy's images"
        assert built_images(names["live"]), "gc removed the live copy's images"
        assert not volume_exists("demo-stack_mqtt_data_3300")
        assert health(live.values())["status"] == "ok"
        assert sorted(r["Id"] for r in inspect_project(names["live"])) == live_before and volume_exists("demo-stack_db_data_3600")
        assert "would remove" not in live.make("gc").stdout  # nothing left to find
        assert proxy_container("17455") is not None
        live.make("nuke", FORCE="1")
        assert proxy_container("17455") is None, "the proxy outlived its last copy"
    finally:
        live.make("nuke", check=False, FORCE="1")
        if gone.path.exists():
            gone.make("nuke", check=False, FORCE="1")
        else:
            live.make("gc", check=False, FORCE="1")


def test_check_ports_warns_about_ports_in_the_ephemeral_range(tmp_path, image_env):
    """A copy whose ports lie where the kernel picks outgoing connections' ports is told so (it still may start)."""
    from parallel_stacks.probe import ephemeral_range

    low, high = ephemeral_range()
    project = Project(bake(tmp_path), image_env)
    inside = project.make("check-ports", PORT_OFFSET=low - 1883)  # mqtt lands on the range's first port
    warning = [line for line in inside.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"ephemeral range {low}-{high}" in warning[0] and str(low) in warning[0], inside.stderr
    below = project.make("check-ports", PORT_OFFSET=low - 8003 - 1)  # the highest port (api) just below it
    assert "ephemeral" not in below.stderr, below.stderr
