"""`make dashboard` (issue 26) on a real engine, through the real named-URL proxy, read by a real Chromium.

Three copies of one baked git repository: its main worktree at PORT_OFFSET=17000, a second git worktree at
18000 and that worktree's ENV=test copy at 19000 (offsets, proxy port 27455 and dashboard ports 27460-27470 are
this module's own on a shared machine). The dashboard lists every copy on the engine, other people's included:
every assertion picks this module's copies by name and worktree.
"""
from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Project, bake, one_error_line

GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
PROXY_PORT = "27455"
DASH_PORT = 27460
HELD_PORT, DOWN_PORT = 27462, 27463
MAIN, FEATURE, TESTENV = 17000, 18000, 19000


def git(path, *args) -> str:
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True, env={**os.environ, **GIT_ID}).stdout


def get(port: int, path: str, host: str | None = None, origin: str | None = None) -> tuple[int, dict, bytes]:
    """GET `path` from 127.0.0.1:`port` with the Host (and Origin) a browser would send."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": host or f"127.0.0.1:{port}", **({"Origin": origin} if origin else {})}
    try:
        conn.request("GET", path, headers=headers)
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def api(port: int = DASH_PORT) -> dict:
    status, _, body = get(port, "/api/copies")
    assert status == 200, body
    return json.loads(body)


def mine(snapshot: dict, fleet: dict) -> dict:
    """{compose project: record} of this module's copies (others' copies on the engine are not ours to judge)."""
    return {c["compose_project"]: c for c in snapshot["copies"] if c.get("compose_project") in fleet["projects"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, image_env):
    """The three copies up and the dashboard started on port 27460; all of it removed afterwards."""
    base = tmp_path_factory.mktemp("dash")
    env = {**image_env, **GIT_ID, "PARALLEL_STACKS_STATE_DIR": str(base / "state"), "NAMED_URLS_PORT": PROXY_PORT,
           "DASHBOARD_PORT": str(DASH_PORT)}
    main = Project(bake(base / "src"), env)
    git(main.path, "init", "-q", "-b", "main")
    git(main.path, "add", "-A")
    git(main.path, "commit", "-qm", "baked")
    tree = main.path.parent / "feature-tree"
    git(main.path, "worktree", "add", "-q", "-b", "feature", str(tree))
    feature = Project(tree, env)
    started = [(main, {"PORT_OFFSET": MAIN}), (feature, {"PORT_OFFSET": FEATURE}), (feature, {"PORT_OFFSET": TESTENV, "ENV": "test"})]
    try:
        for project, how in started:
            project.make("up", **how)
        values = [project.values(**how) for project, how in started]
        out = main.make("dashboard")
        yield {
            "main": main, "feature": feature, "values": values, "started": out.stdout, "env": env, "base": base,
            "projects": {v["COMPOSE_PROJECT_NAME"] for v in values},
        }
    finally:
        main.make("dashboard", check=False, STOP="1")
        for project, how in started:
            project.make("nuke", check=False, FORCE="1", **how)
        subprocess.run(["docker", "rm", "-f", f"parallel-stacks-proxy-{PROXY_PORT}"], capture_output=True)


pytestmark = pytest.mark.docker


# ---------------------------------------------------------------- Chromium, driven over its DevTools pipe
class Browser:
    """Headless Chromium with `--remote-debugging-pipe` (fd 3 in, fd 4 out, NUL-separated JSON): one tab,
    JavaScript evaluated in it while it stays open, so a change on the page is seen without a reload."""

    def __init__(self, chromium: str, profile: Path):
        to_browser, self._in = os.pipe()
        self._out, from_browser = os.pipe()

        def fds():  # in the child: the pipe's ends as fds 3 and 4, inheritable (dup first: either may already be 3 or 4)
            a, b = os.dup(to_browser), os.dup(from_browser)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self.session = b"", 0, None

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._in, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, reply
                    return reply["result"]
            left = deadline - time.monotonic()
            assert left > 0, f"Chromium did not answer {method}"
            if select.select([self._out], [], [], left)[0]:
                chunk = os.read(self._out, 1 << 20)
                assert chunk, "Chromium closed its DevTools pipe"
                self._buffer += chunk

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        loaded = "location.href === " + json.dumps(url) + " && document.readyState === 'complete'"
        wait_for(lambda: self.js(loaded), 30, f"{url} loaded")

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session)
        return result["result"].get("value")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._in)
        os.close(self._out)


def wait_for(check, seconds: float, what: str):
    """`check()` until it returns something true; fails after `seconds` (the issue's bound, not a sleep)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.1)


def named_url() -> str:
    return f"http://dashboard.localhost:{PROXY_PORT}/"


# ---------------------------------------------------------------- the page and the API
def test_make_dashboard_prints_both_urls(fleet):
    assert f"http://dashboard.localhost:{PROXY_PORT}" in fleet["started"] and f"http://127.0.0.1:{DASH_PORT}" in fleet["started"]
    routes = subprocess.run(["docker", "exec", f"parallel-stacks-proxy-{PROXY_PORT}", "cat", "/etc/caddy/routes.json"],
                            capture_output=True, text=True, check=True).stdout
    assert json.loads(routes)["dashboard"]["routes"] == {"dashboard.localhost": f"127.0.0.1:{DASH_PORT}"}


def test_the_page_lists_my_three_copies_with_worktrees_offsets_and_healthy_services(fleet, chromium, tmp_path):
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(named_url())
        rows = browser.js("""Array.from(document.querySelectorAll('tr[data-copy]')).map(function (tr) { return {
            copy: tr.getAttribute('data-copy'), text: tr.innerText,
            health: Array.from(tr.querySelectorAll('[data-health]')).map(function (li) { return li.getAttribute('data-health'); }),
            links: Array.from(tr.querySelectorAll('a')).map(function (a) { return a.href; }) }; })""")
    finally:
        browser.close()
    listed = {row["copy"]: row for row in rows if row["copy"] in fleet["projects"]}
    assert set(listed) == fleet["projects"]
    trees = {MAIN: fleet["main"].path, FEATURE: fleet["feature"].path, TESTENV: fleet["feature"].path}
    for values in fleet["values"]:
        row = listed[values["COMPOSE_PROJECT_NAME"]]
        offset = int(values["PORT_OFFSET"])
        assert str(trees[offset]) in row["text"] and str(offset) in row["text"], row["text"]
        assert ("branch feature" if offset != MAIN else "branch main") in row["text"]
        assert len(row["health"]) == 5 and set(row["health"]) == {"healthy"}, row["health"]
        assert values["API_URL"] + "/" in row["links"] and values["API_NAMED_URL"] + "/" in row["links"], row["links"]
    assert "ENV test" in listed[f"demo-stack-test-{TESTENV}"]["text"]


def test_api_copies_is_make_slots_format_json(fleet):
    served = api()
    printed = json.loads(fleet["main"].make("slots", FORMAT="json").stdout)
    table = fleet["main"].make("slots").stdout  # the table comes from the same function
    row = next(line for line in table.splitlines() if line.startswith(f"demo-stack-{FEATURE} "))
    assert "running 5/5" in row and str(fleet["feature"].path) in row and f"demo-stack_db_data_{FEATURE}" in row
    assert set(served) == set(printed) == {"taken_at", "copies", "stale", "engine_errors"}
    def steady(snapshot: dict) -> dict:  # a running Postgres writes between two snapshots: sizes move, the volumes stay
        return {name: {**c, "volume_sizes": sorted(c.get("volume_sizes") or {})} for name, c in mine(snapshot, fleet).items()}

    assert steady(served) == steady(printed) and len(mine(served, fleet)) == 3
    record = mine(served, fleet)[f"demo-stack-{FEATURE}"]
    assert record["worktree"] == str(fleet["feature"].path) and record["worktree_exists"] is True and record["branch"] == "feature"
    assert record["offset"] == FEATURE and record["how"] == "fixed" and record["env"] == "dev"
    assert {s["service"] for s in record["services"]} == {"postgres", "redis", "mqtt", "api", "ui"}
    assert all(size and size > 0 for size in record["volume_sizes"].values()), record["volume_sizes"]
    assert record["created_at"] and record["test_run"] is None
    assert record["named_urls"]["api"] == f"http://api.demo-stack-{FEATURE}.localhost:{PROXY_PORT}"
    # what `make gc` would remove is on both, for the same moment
    assert [s for s in served["stale"] if str(fleet["base"]) in str(s.get("worktree"))] == \
           [s for s in printed["stale"] if str(fleet["base"]) in str(s.get("worktree"))]


def test_no_secret_in_the_page_or_the_json(fleet):
    secrets = {v[key] for v in fleet["values"] for key in ("POSTGRES_PASSWORD", "MQTT_PASSWORD") if v.get(key)}
    assert len(secrets) >= 2
    for path in ("/", "/api/copies", "/fragment"):
        status, _, body = get(DASH_PORT, path)
        assert status == 200 and not [s for s in secrets if s in body.decode()], path
    assert "********" in json.dumps(mine(api(), fleet))


def test_a_test_run_holding_the_copys_lock_is_shown(fleet):
    from parallel_stacks.model import Copy
    from parallel_stacks.oplock import hold_file, release_file
    from parallel_stacks.pytest_plugin.state import run_lock_path

    values = fleet["values"][0]
    path = run_lock_path(Copy(values, ()))
    fd = hold_file(path, lambda pid: "waiting")
    try:
        held = wait_for(lambda: mine(api(), fleet)[values["COMPOSE_PROJECT_NAME"]]["test_run"], 5, "the run lock shown")
        assert held["pid"] == os.getpid() and held["since"]
        assert "running since" in get(DASH_PORT, "/fragment")[2].decode()
    finally:
        release_file(path, fd)
    wait_for(lambda: mine(api(), fleet)[values["COMPOSE_PROJECT_NAME"]]["test_run"] is None, 5, "the released lock shown")


def test_screenshots_at_desktop_and_phone_width(fleet, chromium, tmp_path):
    for name, size in (("desktop", "1280,900"), ("phone", "390,844")):
        shot = tmp_path / f"{name}.png"
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / name}",
             f"--window-size={size}", f"--screenshot={shot}", "--hide-scrollbars", named_url()],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert shot.stat().st_size > 20_000, f"{shot}: {shot.stat().st_size} bytes"


# ---------------------------------------------------------------- bad input
def test_foreign_host_or_origin_is_refused(fleet):
    for host, origin in (("evil.example", None), (f"evil.example:{DASH_PORT}", None), (f"127.0.0.1:{DASH_PORT}", "http://evil.example")):
        for path in ("/", "/api/copies"):
            status, _, body = get(DASH_PORT, path, host=host, origin=origin)
            assert status == 403 and body.startswith(b"refused:") and b"demo-stack" not in body
    assert get(DASH_PORT, "/api/copies", host=f"localhost:{DASH_PORT}", origin=named_url().rstrip("/"))[0] == 200


def test_show_secrets_unmasks_for_that_dashboard_only(fleet, tmp_path):
    """A second dashboard (another state directory, SHOW_SECRETS=1) beside the first: its own numbered URL, the
    first keeps dashboard.localhost, and stopping the second leaves the first's route alone."""
    env = {"DASHBOARD_PORT": "27467", "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state"), "SHOW_SECRETS": "1"}
    first = json.loads((fleet["base"] / "state" / "dashboard.json").read_text())["pid"]
    out = fleet["main"].make("dashboard", **env)
    try:
        assert f"warning: no named URL for the dashboard (dashboard.localhost is routed to another dashboard (pid {first}," in out.stderr
        assert "http://127.0.0.1:27467" in out.stdout and "dashboard.localhost" not in out.stdout
        password = fleet["values"][0]["POSTGRES_PASSWORD"]
        assert password in mine(api(27467), fleet)[fleet["values"][0]["COMPOSE_PROJECT_NAME"]]["urls"]["DATABASE_URL"]
        assert password not in get(DASH_PORT, "/api/copies")[2].decode()  # the other dashboard still masks
    finally:
        fleet["main"].make("dashboard", STOP="1", **env)
    assert json.loads(get(int(PROXY_PORT), "/api/ping", host=f"dashboard.localhost:{PROXY_PORT}")[2])["pid"] == first


@pytest.mark.parametrize("host, origin, allowed", [
    ("127.0.0.1:7356", None, True), ("localhost", None, True), ("dashboard.localhost:7355", "http://dashboard.localhost:7355", True),
    ("[::1]:7356", None, True), ("DASHBOARD.LOCALHOST:7355", None, True),
    (None, None, False), ("", None, False), ("dashboard.localhost.evil.example", None, False), ("evil.localhost:7355", None, False),
    ("127.0.0.1.nip.io", None, False), ("127.0.0.1:7356", "https://dashboard.localhost", False), ("127.0.0.1:7356", "null", False),
    ("127.0.0.1:7356", "http://127.0.0.1.evil.example", False),
])
def test_host_and_origin_rules(host, origin, allowed):
    from parallel_stacks.commands.dashboard import host_allowed, origin_allowed

    assert (host_allowed(host) and origin_allowed(origin)) is allowed


def test_a_second_make_dashboard_reuses_the_running_one(fleet):
    pid = json.loads((fleet["base"] / "state" / "dashboard.json").read_text())["pid"]
    again = fleet["main"].make("dashboard")
    assert again.stdout.startswith(f"the dashboard is already running (pid {pid}): http://dashboard.localhost:{PROXY_PORT}")
    assert json.loads(get(DASH_PORT, "/api/ping")[2])["pid"] == pid


def test_a_held_port_is_one_line_naming_its_holder_and_nothing_starts(fleet, tmp_path):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", HELD_PORT))
    holder.listen()
    try:
        out = fleet["main"].make("dashboard", check=False, DASHBOARD_PORT=str(HELD_PORT), NAMED_URLS_PORT="off",
                                 PARALLEL_STACKS_STATE_DIR=str(tmp_path / "state"))
    finally:
        holder.close()
    assert out.returncode != 0
    assert one_error_line(out.stderr).startswith(f"error: port {HELD_PORT} is held by pid {os.getpid()} (")
    assert not (tmp_path / "state" / "dashboard.json").exists()


def test_an_unreachable_engine_is_said_on_the_page(fleet, tmp_path):
    env = {"DASHBOARD_PORT": str(DOWN_PORT), "NAMED_URLS_PORT": "off", "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state"),
           "DOCKER_HOST": "unix:///nonexistent"}
    out = fleet["main"].make("dashboard", **env)
    try:
        assert f"http://127.0.0.1:{DOWN_PORT}" in out.stdout and "dashboard.localhost" not in out.stdout
        snapshot = api(DOWN_PORT)
        assert snapshot["copies"] == [] and "the Docker engine is not reachable" in snapshot["engine_errors"][0]["error"]
        status, _, page = get(DOWN_PORT, "/")
        assert status == 200 and b"data-engine-error" in page and b"does not answer" in page
    finally:
        stopped = fleet["main"].make("dashboard", STOP="1", **env)
    assert stopped.stdout.startswith("dashboard stopped (pid ")
    with pytest.raises(OSError):
        get(DOWN_PORT, "/api/ping")


def test_snapshots_are_shared_at_most_one_a_second(monkeypatch):
    """Any number of tabs and requests: one engine query per second (a frozen clock: no timing in the test)."""
    from parallel_stacks import fleet as fleet_module
    from parallel_stacks.commands import dashboard

    calls = []
    monkeypatch.setattr(fleet_module, "snapshot", lambda settings, contexts: calls.append(1) or {"copies": [len(calls)]})
    now = [1000.0]
    monkeypatch.setattr(dashboard.time, "monotonic", lambda: now[0])
    shared = dashboard.Snapshots({}, None)
    threads = [threading.Thread(target=shared.get) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    now[0] += 0.99
    assert shared.get() == ({"copies": [1]}, 1)
    now[0] += 0.01
    assert shared.get() == ({"copies": [2]}, 2) and len(calls) == 2


# ---------------------------------------------------------------- changes seen live (these change the fleet: last)
def test_a_stopped_service_shows_on_the_open_page_within_5_s(fleet, chromium, tmp_path):
    project = f"demo-stack-{FEATURE}"
    cell = f"document.querySelector('tr[data-copy=\"{project}\"] [data-service=\"redis\"]')"
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(f"http://127.0.0.1:{DASH_PORT}/")
        wait_for(lambda: browser.js(f"{cell} && {cell}.getAttribute('data-health')") == "healthy", 30, "redis healthy on the page")
        browser.js("window.notReloaded = true")
        subprocess.run(["docker", "stop", f"{project}-redis-1"], capture_output=True, check=True)
        wait_for(lambda: browser.js(f"{cell}.getAttribute('data-health')") == "stopped", 5, "the stopped redis shown")
        assert "redis: stopped" in browser.js(f"{cell}.innerText") and browser.js("window.notReloaded") is True
        assert browser.js(f"getComputedStyle({cell}).color") != browser.js(
            f"getComputedStyle(document.querySelector('tr[data-copy=\"{project}\"] [data-service=\"api\"]')).color")
    finally:
        browser.close()
        fleet["feature"].make("up", PORT_OFFSET=FEATURE)


def test_a_nuked_copy_disappears_from_the_page(fleet, chromium, tmp_path):
    project = f"demo-stack-test-{TESTENV}"
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(named_url())
        row = f"document.querySelector('tr[data-copy=\"{project}\"]')"
        wait_for(lambda: browser.js(f"{row} !== null"), 30, "the test copy on the page")
        fleet["feature"].make("nuke", FORCE="1", PORT_OFFSET=TESTENV, ENV="test")
        wait_for(lambda: browser.js(f"{row} === null"), 5, "the nuked copy gone from the page")
    finally:
        browser.close()
    assert project not in mine(api(), fleet)


def test_stop_withdraws_the_route_and_the_process(fleet):
    pid = json.loads((fleet["base"] / "state" / "dashboard.json").read_text())["pid"]
    out = fleet["main"].make("dashboard-stop")
    assert out.stdout.strip() == f"dashboard stopped (pid {pid})"
    from parallel_stacks.basics import pid_alive

    assert not pid_alive(pid) and not (fleet["base"] / "state" / "dashboard.json").exists()
    routes = subprocess.run(["docker", "exec", f"parallel-stacks-proxy-{PROXY_PORT}", "cat", "/etc/caddy/routes.json"],
                            capture_output=True, text=True, check=True).stdout
    assert "dashboard" not in json.loads(routes)
    status, _, _ = get(int(PROXY_PORT), "/", host=f"dashboard.localhost:{PROXY_PORT}")
    assert status == 404
    assert fleet["main"].make("dashboard", STOP="1").stdout.strip() == "no dashboard running"


def test_a_killed_dashboard_leaves_a_route_gc_lists_and_the_next_start_replaces(fleet):
    main = fleet["main"]
    main.make("dashboard")
    state = fleet["base"] / "state" / "dashboard.json"
    pid = json.loads(state.read_text())["pid"]
    os.kill(pid, 9)
    from parallel_stacks.basics import pid_alive

    wait_for(lambda: not pid_alive(pid), 5, "the kill")
    listed = main.make("gc").stdout  # listing only: FORCE=1 would judge other people's copies on this engine too
    assert f"would remove the named URLs of dashboard (its server, pid {pid}, is gone) from the proxy on port {PROXY_PORT}" in listed
    again = main.make("dashboard").stdout
    assert again.startswith("dashboard (pid ") and f"(pid {pid})" not in again
    assert get(int(PROXY_PORT), "/api/ping", host=f"dashboard.localhost:{PROXY_PORT}")[0] == 200
    assert "the named URLs of dashboard" not in main.make("gc").stdout
    assert main.make("dashboard", STOP="1").stdout.startswith("dashboard stopped (pid ")


def test_an_adopted_repository_gets_stack_dashboard(tmp_path, docker_engine):
    """The static parallel-stacks.mk's `stack-dashboard` (and its short alias where the Makefile leaves it free)."""
    from test_adopt import adopt, make, repository

    repo = repository(tmp_path, "postgresql-pgadmin")
    assert adopt(repo).returncode == 0
    env = {"STACK_PYTHON": sys.executable, "DASHBOARD_PORT": "27468", "NAMED_URLS_PORT": "off",
           "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state")}
    assert "stack-dashboard" in make(repo, "stack-help").stdout
    out = make(repo, "stack-dashboard", **env)
    try:
        assert "http://127.0.0.1:27468" in out.stdout
        assert get(27468, "/api/copies")[0] == 200
        assert make(repo, "dashboard", **env).stdout.startswith("the dashboard is already running")  # the alias
    finally:
        stopped = make(repo, "stack-dashboard-stop", **env)
    assert stopped.stdout.startswith("dashboard stopped (pid ")
