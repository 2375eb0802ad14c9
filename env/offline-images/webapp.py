"""A web application stand-in: GET / answers `<hostname> visits=<n>`; n persists under every mounted data path."""
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = [Path(p) for p in ("/data", "/var/www/html", "/var/lib/pgadmin") if Path(p).is_dir()]
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with LOCK:
            visits = 0
            for base in DATA:
                counter = base / "visits"
                visits = int(counter.read_text()) + 1 if counter.exists() else 1
                counter.write_text(str(visits))
        body = f"{socket.gethostname()} visits={visits}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
for port in (3000, 8080):
    threading.Thread(target=ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever, daemon=True).start()
ThreadingHTTPServer(("0.0.0.0", 80), Handler).serve_forever()
