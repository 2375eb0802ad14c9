"""`make dashboard`: a live, read-only page of every copy on this machine.

A host process (the standard library's ThreadingHTTPServer), bound to
127.0.0.1 only, serving one HTML page and `/api/copies`, both from the very
snapshot `make slots FORMAT=json` prints (`fleet.snapshot`). The snapshot is
shared by every request and tab and taken at most once a second, so ten open
tabs cost the engine what one does. The page asks for a fresh table every
second (plain polling, no framework, nothing from a CDN) and works without
script too (it is rendered on the server).

It runs in the background: `make dashboard` starts it (or names the one
already running, from `dashboard.json` in the state directory), routes
`http://dashboard.localhost:<NAMED_URLS_PORT>` to it through the named-URL
proxy, and prints its URLs; `make dashboard STOP=1` stops it and withdraws
the route. Requests whose Host or Origin is not this machine's loopback
names are refused (a page on another site cannot read it through DNS
rebinding).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import fleet
from ..basics import PORT_MAX, PORT_MIN, StackError, pid_alive
from ..registry import store
from ..runner import run
from ..settings import Settings

TOOLS = Path(__file__).resolve().parents[2]  # the directory holding this package: the server imports it from there
DEFAULT_PORT = 7356  # beside the named-URL proxy's 7355
STATE_FILE = "dashboard.json"
LOG_FILE = "dashboard.log"
ROUTE_KEY = "dashboard"  # its entry in the proxy's routing table
NAMED_HOST = "dashboard.localhost"
ALLOWED_HOSTS = {"127.0.0.1", "localhost", NAMED_HOST, "[::1]"}
REFRESH_SECONDS = 1.0  # at most one snapshot (engine query) per this many seconds, whatever the number of tabs
START_SECONDS = 15.0
STOP_SECONDS = 10.0


# ---------------------------------------------------------------- the shared snapshot
class Snapshots:
    """The fleet's snapshot, shared by every request: taken again only when the last one is REFRESH_SECONDS old.

    Requests arriving while it is taken wait for it (one query, not one per request). `taken` counts the queries.
    """

    def __init__(self, settings: Settings, contexts: list[str] | None, interval: float = REFRESH_SECONDS):
        self.settings, self.contexts, self.interval = settings, contexts, interval
        self.lock = threading.Lock()
        self.latest: dict[str, Any] = {}
        self.at = float("-inf")
        self.taken = 0

    def get(self) -> tuple[dict[str, Any], int]:
        """(the snapshot, how many have been taken): the shared one, or a new one when it is a second old."""
        with self.lock:
            if time.monotonic() - self.at >= self.interval:
                try:
                    self.latest = fleet.snapshot(self.settings, self.contexts)
                except Exception as exc:  # a page that says what went wrong, never a dead server
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self.latest = {
                        "taken_at": fleet.iso_utc(time.time()),
                        "copies": [],
                        "stale": [],
                        "engine_errors": [{"engine": "?", "error": reason}],
                    }
                self.at = time.monotonic()
                self.taken += 1
            return self.latest, self.taken


# ---------------------------------------------------------------- rendering
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _size(count: int | None) -> str:
    if count is None:
        return "size unknown"
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{count} B"


def _age(created: str | None, now: str | None) -> str:
    from datetime import datetime

    if not created or not now:
        return "unknown"
    try:
        seconds = int(
            (datetime.fromisoformat(now.replace("Z", "+00:00")) - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        )
    except ValueError:
        return "unknown"
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds // length} {unit}"
    return f"{max(seconds, 0)} s"


def _link(label: str, url: str) -> str:
    if url.startswith(("http://", "https://")) and "********" not in url:
        return f'<li><span class="sub">{_e(label)}</span> <a class="url" href="{_e(url)}">{_e(url)}</a></li>'
    return f'<li><span class="sub">{_e(label)}</span> <span class="url">{_e(url)}</span></li>'


def _services(copy: Mapping[str, Any]) -> str:
    items = []
    for svc in copy.get("services") or []:
        waiting = svc.get("health") in ("starting", "restarting")
        ok = "ok" if svc.get("ok") else ("wait" if waiting else "bad")
        mark = {"ok": "\u2714", "wait": "\u2026", "bad": "\u2716"}[ok]
        items.append(
            f'<li class="health {ok}" data-service="{_e(svc["service"])}" data-health="{_e(svc["health"])}">'
            f'<span aria-hidden="true">{mark}</span> {_e(svc["service"])}: <strong>{_e(svc["health"])}</strong></li>'
        )
    return f'<ul class="plain">{"".join(items)}</ul>' if items else "no containers"


def _row(copy: Mapping[str, Any], now: str | None) -> str:
    if copy.get("compose_project") is None:  # another machine's claim on a shared engine
        return (
            f'<tr data-copy=""><td data-label="Copy">(another machine)</td><td data-label="Worktree">{_e(copy.get("claimed_by"))}</td>'
            f'<td data-label="Offset">{_e(copy.get("offset"))} (claimed)</td><td colspan="5"></td></tr>'
        )
    project = copy["compose_project"]
    tree = _e(copy["worktree"]) + ("" if copy.get("worktree_exists") else ' <strong class="bad">(directory gone)</strong>')
    branch = f"<br>branch <code>{_e(copy['branch'])}</code>" if copy.get("branch") else ""
    how = {"auto": "claimed (PORT_OFFSET=auto or a task id)", "fixed": "fixed PORT_OFFSET"}.get(
        copy.get("how") or "", copy.get("how") or ""
    )
    if copy.get("claimed_by"):
        how += f" by {_e(copy['claimed_by'])}"
    named = "".join(_link(service, url) for service, url in sorted((copy.get("named_urls") or {}).items()))
    numbered = "".join(_link(key, url) for key, url in sorted((copy.get("urls") or {}).items()) if not key.endswith("_NAMED_URL"))
    urls = (f'<p class="sub">named</p><ul class="plain">{named}</ul>' if named else "") + (
        f'<p class="sub">numbered</p><ul class="plain">{numbered}</ul>' if numbered else ""
    )
    sizes = copy.get("volume_sizes") or {}
    volumes = "".join(f"<li><code>{_e(v)}</code> {_e(_size(sizes.get(v)))}</li>" for v in copy.get("volumes") or [])
    held = copy.get("test_run")
    tests = (
        f'<span class="busy" data-test-run="held">running since {_e(held.get("since"))} (pid {_e(held.get("pid"))})</span>'
        if held
        else '<span data-test-run="idle">none</span>'
    )
    return (
        f'<tr data-copy="{_e(project)}">'
        f'<th scope="row" data-label="Copy">{_e(project)}<br><span class="sub">ENV {_e(copy.get("env") or "dev")}, {_e(copy.get("state"))}</span></th>'
        f'<td data-label="Worktree"><code>{tree}</code>{branch}</td>'
        f'<td data-label="Offset">{_e(copy.get("offset"))}<br><span class="sub">{how}</span></td>'
        f'<td data-label="Services">{_services(copy)}</td>'
        f'<td data-label="URLs">{urls or "none"}</td>'
        f'<td data-label="Volumes">{f"<ul class=plain>{volumes}</ul>" if volumes else "none"}</td>'
        f'<td data-label="Age">{_e(_age(copy.get("created_at"), now))}</td>'
        f'<td data-label="Test run">{tests}</td>'
        "</tr>"
    )


def fragment(snap: Mapping[str, Any]) -> str:
    """The page's live part: engine trouble, the table of copies, what `make gc` would remove."""
    now = snap.get("taken_at")
    parts = [
        f'<p class="alert" role="alert" data-engine-error="1">The Docker engine {_e(p["engine"])} does not answer: {_e(p["error"])}. '
        "Showing this machine's claims only.</p>"
        for p in snap.get("engine_errors") or []
    ]
    copies = snap.get("copies") or []
    parts.append(
        f'<table><caption>{len(copies)} cop{"y" if len(copies) == 1 else "ies"} as of <time data-taken="{_e(now)}">{_e(now)}</time></caption>'
        '<thead><tr><th scope="col">Copy</th><th scope="col">Worktree</th><th scope="col">Offset</th><th scope="col">Services</th>'
        '<th scope="col">URLs</th><th scope="col">Volumes</th><th scope="col">Age</th><th scope="col">Test run</th></tr></thead><tbody>'
        + ("".join(_row(c, now) for c in copies) or '<tr><td colspan="8">No copies on this machine.</td></tr>')
        + "</tbody></table>"
    )
    stale = snap.get("stale") or []
    items = "".join(
        f"<li>{_e(s['kind'])} <code>{_e(s['name'])}</code> of <code>{_e(s.get('worktree'))}</code>: {_e(s['why'])}</li>" for s in stale
    )
    parts.append(
        '<section aria-labelledby="stale"><h2 id="stale">Stale: what <code>make gc FORCE=1</code> would remove</h2>'
        + (f'<ul data-stale="{len(stale)}">{items}</ul>' if stale else '<p data-stale="0">Nothing.</p>')
        + "</section>"
    )
    return "".join(parts)


def page(snap: Mapping[str, Any]) -> str:
    """The whole HTML page around `fragment(snap)`: readable without script, refreshed by /app.js with it."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>Copies on this machine</title><link rel="stylesheet" href="/style.css"><script src="/app.js" defer></script></head>'
        "<body><header><h1>Copies on this machine</h1>"
        '<p id="status" role="status" aria-live="polite">Updates every second while this page is open.</p></header>'
        f'<main id="fleet">{fragment(snap)}</main>'
        "<footer><p>Read-only: change copies with make (<code>make up</code>, <code>make nuke</code>, <code>make gc</code>). "
        'The same data as JSON: <a href="/api/copies">/api/copies</a> (what <code>make slots FORMAT=json</code> prints).</p></footer>'
        "</body></html>"
    )


STYLE = """
:root { color-scheme: light dark; --ok: #0a7d32; --bad: #b3261e; --busy: #8a5a00; }
@media (prefers-color-scheme: dark) { :root { --ok: #5fd38a; --bad: #ff8a80; --busy: #ffc857; } }
body { font: 15px/1.45 system-ui, sans-serif; margin: 1rem; max-width: 100rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; padding: .25rem 0; }
th, td { border-bottom: 1px solid #8886; padding: .4rem .5rem; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #888; }
code, .url { font-family: ui-monospace, monospace; font-size: .85em; overflow-wrap: anywhere; }
.sub { color: #6b6b6b; font-size: .85em; margin: 0; }
.url { display: block; }
.plain { list-style: none; margin: 0; padding: 0; }
.health { white-space: nowrap; } .health.ok { color: var(--ok); } .health.bad, .bad { color: var(--bad); } .busy, .health.wait { color: var(--busy); }
.alert { border: 2px solid var(--bad); padding: .5rem; color: var(--bad); }
a { overflow-wrap: anywhere; }
@media (max-width: 760px) {
  table, thead, tbody, tr, th, td, caption { display: block; }
  thead tr { position: absolute; left: -9999px; }
  tr { border: 1px solid #888; margin: 0 0 1rem; }
  th[scope=row], td { border: none; padding: .25rem .5rem; }
  td::before { content: attr(data-label); display: block; font-weight: bold; }
}
"""

SCRIPT = """
(function () {
  "use strict";
  var main = document.getElementById("fleet"), status = document.getElementById("status"), last = null, down = false;
  function again() { setTimeout(tick, 1000); }
  function tick() {
    fetch("/fragment", {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (text) {
      if (text !== last) { main.innerHTML = text; last = text; }
      if (down) { status.textContent = "The dashboard answers again."; down = false; }
      status.setAttribute("data-state", "live");
      again();
    }).catch(function (err) {
      if (!down) { status.textContent = "The dashboard server does not answer (" + err.message + "); retrying every second."; down = true; }
      status.setAttribute("data-state", "down");
      again();
    });
  }
  again();
})();
"""


# ---------------------------------------------------------------- the server
def host_allowed(value: str | None) -> bool:
    """`Host: dashboard.localhost:7355`, `127.0.0.1:7356`, `localhost` ...: this machine by a loopback name."""
    if not value:
        return False
    name = value.strip().lower()
    bracketed = name.startswith("[")  # [::1]:7356
    host = name[: name.find("]") + 1] if bracketed else (name.rsplit(":", 1)[0] if name.count(":") == 1 else name)
    return host in ALLOWED_HOSTS


def origin_allowed(value: str | None) -> bool:
    """No Origin (a top-level navigation, curl), or one of this machine's loopback names over http."""
    if value is None:
        return True
    scheme, sep, rest = value.strip().partition("://")
    return bool(sep) and scheme.lower() == "http" and host_allowed(rest.split("/", 1)[0])


def make_handler(snapshots: Snapshots) -> type:
    """The request handler class serving `snapshots`: GET/HEAD only, Host and Origin checked first."""
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        server_version = "parallel-stacks-dashboard"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: one line per poll would fill the log

        def _send(self, status: int, body: bytes, ctype: str, extra: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            )
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _refuse(self) -> bool:
            host, origin = self.headers.get("Host"), self.headers.get("Origin")
            if host_allowed(host) and origin_allowed(origin):
                return False
            what = f"Host {host!r}" if not host_allowed(host) else f"Origin {origin!r}"
            text = f"refused: {what[:120]} is not this machine's dashboard (only 127.0.0.1, localhost, {NAMED_HOST})\n"
            self._send(403, text.encode(), "text/plain; charset=utf-8")
            return True

        def do_GET(self) -> None:
            if self._refuse():
                return
            path = self.path.split("?", 1)[0]
            if path == "/api/ping":
                self._send(200, json.dumps({"dashboard": True, "pid": os.getpid()}).encode(), "application/json")
                return
            if path == "/style.css":
                self._send(200, STYLE.encode(), "text/css; charset=utf-8")
                return
            if path == "/app.js":
                self._send(200, SCRIPT.encode(), "text/javascript; charset=utf-8")
                return
            if path not in ("/", "/api/copies", "/fragment"):
                self._send(404, b"not found: /, /api/copies\n", "text/plain; charset=utf-8")
                return
            snap, taken = snapshots.get()
            extra = {"X-Snapshots-Taken": str(taken)}
            if path == "/api/copies":
                self._send(200, (json.dumps(snap, indent=2) + "\n").encode(), "application/json", extra)
            elif path == "/fragment":
                self._send(200, fragment(snap).encode(), "text/html; charset=utf-8", extra)
            else:
                self._send(200, page(snap).encode(), "text/html; charset=utf-8", extra)

        do_HEAD = do_GET

        def _read_only(self) -> None:
            if not self._refuse():
                self._send(405, b"read-only: change copies with make\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = _read_only

    return Handler


def serve(settings: Settings, port: int) -> int:
    """The background process: bind 127.0.0.1:`port`, record itself in the state file, serve until SIGTERM/SIGINT."""
    import signal
    from http.server import ThreadingHTTPServer

    contexts = [c.strip() for c in (settings.get("CONTEXTS") or "").split(",") if c.strip()] or None
    snapshots = Snapshots(settings, contexts)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(snapshots))
    except OSError as exc:
        raise StackError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    server.daemon_threads = True
    bound = int(server.server_address[1])
    state = _state_path(settings)
    _write_state(state, {"pid": os.getpid(), "port": bound, "started_at": fleet.iso_utc(time.time())})

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        mine = _read_state(settings)
        if mine is not None and mine["pid"] == os.getpid():
            _withdraw(settings, mine)
            with contextlib.suppress(OSError):
                state.unlink()
    return 0


# ---------------------------------------------------------------- start, reuse, stop
def _state_path(settings: Settings) -> Path:
    return store.state_dir(settings) / STATE_FILE


def _write_state(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(state) + "\n")
    os.replace(tmp, path)


def _read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        state = json.loads(_state_path(settings).read_text())
        return state if isinstance(state, dict) and isinstance(state.get("pid"), int) and isinstance(state.get("port"), int) else None
    except (OSError, ValueError):
        return None


def _ping(port: int) -> int | None:
    """The pid the dashboard on 127.0.0.1:`port` reports; None when no dashboard answers there."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/api/ping", headers={"Host": f"127.0.0.1:{port}"})
        answer = conn.getresponse()
        body = json.loads(answer.read()) if answer.status == 200 else {}
        pid = body.get("pid") if isinstance(body, dict) and body.get("dashboard") else None
        return pid if isinstance(pid, int) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def running(settings: Settings) -> dict[str, Any] | None:
    """The state of the dashboard this state directory's file names, when it answers as itself; else None."""
    state = _read_state(settings)
    if state is None or _ping(int(state["port"])) != state["pid"]:
        return None
    return state


def _proxy_port(settings: Settings) -> str:
    """NAMED_URLS_PORT as this project's settings say (env files and environment), `off` for none."""
    from ..config import parse_proxy_port

    with contextlib.suppress(StackError, OSError, KeyError):
        from .. import derive

        return derive.load(None, settings)["NAMED_URLS_PORT"]
    return parse_proxy_port(settings.get("NAMED_URLS_PORT"), "environment")


def _withdraw(settings: Settings, state: Mapping[str, Any]) -> None:
    """Take the route of the dashboard `state` describes out of the proxy it was put in (another's stays)."""
    from .. import proxy

    port = state.get("named_urls_port")
    if isinstance(port, str) and port != "off":
        with contextlib.suppress(StackError, OSError):
            proxy.withdraw(ROUTE_KEY, port, settings, pid=int(state["pid"]))


def _urls(state: Mapping[str, Any], proxy_port: str) -> str:
    numbered = f"http://127.0.0.1:{state['port']}"
    return numbered if proxy_port == "off" else f"http://{NAMED_HOST}:{proxy_port} (and {numbered})"


def _port(settings: Settings) -> int:
    raw = (settings.get("DASHBOARD_PORT") or str(DEFAULT_PORT)).strip()
    if raw.isdigit() and (int(raw) == 0 or PORT_MIN <= int(raw) <= PORT_MAX):
        return int(raw)
    raise StackError(f"DASHBOARD_PORT={raw[:40]!r} must be a port between {PORT_MIN} and {PORT_MAX} (0: any free one)")


def start(settings: Settings) -> int:
    """`make dashboard`: name the running dashboard, or start one in the background, route it, print its URLs."""
    import subprocess

    from ..probe import port_free, process_owner

    proxy_port = _proxy_port(settings)
    state = running(settings)
    if state is not None:
        print(f"the dashboard is already running (pid {state['pid']}): {_urls(state, proxy_port)}")
        return 0
    port = _port(settings)
    if port and not port_free("127.0.0.1", port):
        raise StackError(f"port {port} is held by {process_owner(port)}; set DASHBOARD_PORT to a free port (0: any)")
    directory = store.state_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        _state_path(settings).unlink()  # a dead dashboard's
    with open(directory / LOG_FILE, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "parallel_stacks", "dashboard", "--serve", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # not stopped by the terminal's Ctrl-C; `make dashboard STOP=1` stops it
            env={**settings.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(TOOLS), settings.get("PYTHONPATH")]))},
            cwd=directory,  # holds no worktree open
        )
    deadline = time.monotonic() + START_SECONDS
    while True:
        state = _read_state(settings)
        if state is not None and state["pid"] == child.pid and _ping(int(state["port"])) == child.pid:
            break
        if child.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                child.terminate()
            lines = (directory / LOG_FILE).read_text(errors="replace").strip().splitlines()
            raise StackError(f"the dashboard did not start: {lines[-1] if lines else 'no output'} (log: {directory / LOG_FILE})")
        time.sleep(0.05)
    if proxy_port != "off":
        from .. import proxy

        entry = {"worktree": str(directory), "routes": {NAMED_HOST: f"127.0.0.1:{state['port']}"}, "pid": child.pid}
        try:
            other = proxy.table(settings, proxy_port).get(ROUTE_KEY) or {}
            if other.get("pid") and other["pid"] != child.pid and pid_alive(int(other["pid"])):
                raise StackError(f"{NAMED_HOST} is routed to another dashboard (pid {other['pid']}, state in {other.get('worktree')})")
            proxy.put(ROUTE_KEY, entry, proxy_port, settings)
            state = {**state, "named_urls_port": proxy_port}
            _write_state(_state_path(settings), state)  # where its route is, for whoever stops it
        except StackError as exc:
            print(f"warning: no named URL for the dashboard ({exc})", file=sys.stderr)
            proxy_port = "off"
    print(f"dashboard (pid {child.pid}): {_urls(state, proxy_port)}; `make dashboard STOP=1` stops it")
    return 0


def _is_dashboard(pid: int) -> bool:
    """`pid` runs this module's server (checked before it is signalled: a recycled pid is someone else's)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"parallel_stacks" in cmdline and b"--serve" in cmdline


def stop(settings: Settings) -> int:
    """`make dashboard STOP=1`: stop the running dashboard (SIGTERM, checked to be one), withdraw its route."""
    import signal

    state = _read_state(settings)
    pid = None
    if state is not None and (_ping(int(state["port"])) == state["pid"] or _is_dashboard(int(state["pid"]))):
        pid = int(state["pid"])
    if pid is None:
        if state is not None:
            _withdraw(settings, state)  # a dead dashboard's route
        with contextlib.suppress(OSError):
            _state_path(settings).unlink()
        print("no dashboard running")
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        raise StackError(f"the dashboard (pid {pid}) did not stop within {STOP_SECONDS:.0f} s; kill {pid}")
    _withdraw(settings, state or {})  # it withdraws its route itself; this covers one that could not
    with contextlib.suppress(OSError):
        _state_path(settings).unlink()
    print(f"dashboard stopped (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m parallel_stacks dashboard [--stop]`; `--serve` is the background process itself."""
    settings = Settings.read()
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks dashboard", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stop", action="store_true", default=settings.flag("STOP"), help="stop the running dashboard (STOP=1)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the background process itself
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve:
        return run(lambda: serve(settings, int(args.port or 0)))
    return run(lambda: stop(settings) if args.stop else start(settings))
