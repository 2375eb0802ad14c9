#!/usr/bin/env python3
"""Minimal UI of one stack copy: a page that says which copy it is and
calls that copy's API (its URL comes from /config.json).
GET /ready answers 200 at once: the container's health check (bash's
/dev/tcp in compose.yaml, no interpreter started). `server.py --check` asks
/config.json from inside the container (by hand)."""
import json
import os
import signal
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PORT = int(os.environ.get("UI_CONTAINER_PORT", "3000"))
PAGE = (Path(__file__).parent / "index.html").read_bytes()


def config(host=""):
    # opened by its named URL (http://ui.<copy>.localhost:<port>): the API by its name too
    named = os.environ.get("API_NAMED_URL", "")
    by_name = named and host.split(":")[0].endswith(".localhost")
    return {
        "api_url": named if by_name else os.environ.get("API_URL", ""),
        "port_offset": int(os.environ.get("PORT_OFFSET", "0")),
        "compose_project": os.environ.get("COMPOSE_PROJECT_NAME", ""),
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        if path in ("/", "/index.html"):
            self.reply(200, "text/html; charset=utf-8", PAGE)
        elif path == "/ready":
            self.reply(200, "text/plain", b"ready\n")
        elif path == "/config.json":
            self.reply(200, "application/json", json.dumps(config(self.headers.get("Host", ""))).encode())
        else:
            self.reply(404, "text/plain", b"not found\n")

    def reply(self, code, ctype, data):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


def check():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/config.json", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception:
        return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(check())
    # PID 1 in its container: without a handler SIGTERM is ignored and `make down` waits out compose's 10 s
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
