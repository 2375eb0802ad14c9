#!/usr/bin/env python3
"""Small HTTP API of one stack copy.

GET /       -> JSON index of the endpoints below, with this copy's name.
GET /health -> JSON with this copy's offset and the live status of its own
Postgres, Redis and MQTT broker; 200 when every dependency answers, else 503.
GET /ready  -> 200 as soon as the server answers, touching nothing else: the
container's health check (bash's /dev/tcp in compose.yaml, no interpreter
started, every 30 s once healthy). Its dependencies have health checks of
their own.
POST /items -> {"id", "name", "price"} stored in Postgres; with a broker
(MQTT_URL), the item is published as an event on
`<MQTT_TOPIC_PREFIX>/items/created` (QoS 1) before the 201 answer.
`app.py --check` asks /health from inside the container (by hand; the health check asks /ready).

Settings come from the environment (PG*, REDIS_URL, MQTT_URL,
MQTT_TOPIC_PREFIX, API_CONTAINER_PORT), read at start: a test worker that
starts this app gets its own database and topic namespace unchanged.
"""
import json
import os
import signal
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("API_CONTAINER_PORT", "8003"))
MQTT_URL = os.environ.get("MQTT_URL", "")
TOPIC_PREFIX = os.environ.get("MQTT_TOPIC_PREFIX", "app").strip("/")


def mqtt_settings():
    """(host, port, auth) of MQTT_URL (mqtt://user:password@host:port)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(MQTT_URL)
    auth = {"username": unquote(parts.username or ""), "password": unquote(parts.password or "")} if parts.username else None
    return parts.hostname or "127.0.0.1", parts.port or 1883, auth


def publish(topic, payload):
    """One message, QoS 1: returns once the broker has it (an error if it refuses us)."""
    from paho.mqtt import publish as mqtt_publish

    host, port, auth = mqtt_settings()
    mqtt_publish.single(topic, json.dumps(payload), qos=1, hostname=host, port=port, auth=auth, keepalive=10)


def check_mqtt():
    if not MQTT_URL:
        return None
    try:
        publish(f"{TOPIC_PREFIX}/health", {"ok": True})
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:200]}


def create_item(body):
    import psycopg

    try:
        item = {"id": int(body["id"]), "name": str(body["name"]), "price": float(body["price"])}
    except (KeyError, TypeError, ValueError):
        return 400, {"error": 'expected JSON {"id": int, "name": str, "price": number}'}
    try:
        with psycopg.connect("", connect_timeout=3) as conn:
            conn.execute("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)", (item["id"], item["name"], item["price"]))
    except psycopg.errors.UniqueViolation:
        return 409, {"error": f"item {item['id']} exists"}
    except psycopg.Error as exc:
        return 422, {"error": str(exc).strip().splitlines()[0][:200]}
    topic = None
    if MQTT_URL:
        topic = f"{TOPIC_PREFIX}/items/created"
        publish(topic, item)
    return 201, {"item": item, "published": topic}


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
    for name, status in (("redis", check_redis()), ("mqtt", check_mqtt())):
        if status is not None:
            deps[name] = status
    body = {
        "status": "ok" if all(d["ok"] for d in deps.values()) else "degraded",
        "port_offset": int(os.environ.get("PORT_OFFSET", "0")),
        "compose_project": os.environ.get("COMPOSE_PROJECT_NAME", ""),
        **deps,
    }
    return (200 if body["status"] == "ok" else 503), body


ENDPOINTS = {
    "/": "this index",
    "/ready": "200 once the server answers (the container's health check)",
    "/health": "this copy's offset and the live status of its Postgres, Redis and broker (200 ok, 503 degraded)",
    "POST /items": "store an item; publish it on <MQTT_TOPIC_PREFIX>/items/created",
}


def index():
    return 200, {
        "service": "api",
        "compose_project": os.environ.get("COMPOSE_PROJECT_NAME", ""),
        "port_offset": int(os.environ.get("PORT_OFFSET", "0")),
        "endpoints": ENDPOINTS,
    }


def ready():
    return 200, {"ready": True}


ROUTES = {"/": index, "/health": health, "/ready": ready}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        route = ROUTES.get(self.path.split("?")[0])
        if route is None:
            self.send_json(404, {"error": "not found", "endpoints": ENDPOINTS})
            return
        self.send_json(*route())

    def do_POST(self):
        if self.path.split("?")[0] != "/items":
            self.send_json(404, {"error": "not found", "endpoints": ENDPOINTS})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            self.send_json(400, {"error": "body is not JSON"})
            return
        try:
            self.send_json(*create_item(body if isinstance(body, dict) else {}))
        except Exception as exc:  # the broker refused or is gone: say so, as JSON
            self.send_json(502, {"error": f"{type(exc).__name__}: {str(exc)[:200]}"})

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if not self.path.startswith(("/health", "/ready")):
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
