#!/usr/bin/env python3
"""Small HTTP API of one stack copy.

GET /       -> JSON index of the endpoints below, with this copy's name.
GET /health -> JSON with this copy's offset and the live status of its own
Postgres and Redis; 200 when every dependency answers, else 503.
`app.py --check` is the container healthcheck.
"""
import json
import os
import signal
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("API_CONTAINER_PORT", "8003"))


def check_postgres():
    import psycopg

    try:
        with psycopg.connect("", connect_timeout=3) as conn:  # PG* variables from compose
            version = conn.execute("SHOW server_version").fetchone()[0]
        return {"ok": True, "server_version": version}
    except Exception as exc:  # report, don't crash: /health is for diagnosis
        return {"ok": False, "error": str(exc).strip().splitlines()[0][:200]}


def check_redis():
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        return {"ok": bool(client.ping())}
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:200]}


def health():
    deps = {"postgres": check_postgres()}
    redis_status = check_redis()
    if redis_status is not None:
        deps["redis"] = redis_status
    body = {
        "status": "ok" if all(d["ok"] for d in deps.values()) else "degraded",
        "port_offset": int(os.environ.get("PORT_OFFSET", "0")),
        "compose_project": os.environ.get("COMPOSE_PROJECT_NAME", ""),
        **deps,
    }
    return (200 if body["status"] == "ok" else 503), body


ENDPOINTS = {
    "/": "this index",
    "/health": "this copy's offset and the live status of its Postgres and Redis (200 ok, 503 degraded)",
}


def index():
    return 200, {
        "service": "api",
        "compose_project": os.environ.get("COMPOSE_PROJECT_NAME", ""),
        "port_offset": int(os.environ.get("PORT_OFFSET", "0")),
        "endpoints": ENDPOINTS,
    }


ROUTES = {"/": index, "/health": health}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        route = ROUTES.get(self.path.split("?")[0])
        if route is None:
            self.send_json(404, {"error": "not found", "endpoints": ENDPOINTS})
            return
        self.send_json(*route())

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if not self.path.startswith("/health"):
            super().log_message(fmt, *args)


def check():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception:
        return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(check())
    print(f"api listening on :{PORT} (PORT_OFFSET={os.environ.get('PORT_OFFSET')})", flush=True)
    # PID 1 in its container: without a handler SIGTERM is ignored and `make down` waits out compose's 10 s
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
