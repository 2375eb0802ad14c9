"""Processing suite: files in the worker's own directory, servers on the worker's own ports."""
import hashlib
import http.server
import threading
import time
import urllib.request

import pytest

pytestmark = pytest.mark.processing


@pytest.fixture
def media(worker_tmp_dir):
    for leftover in worker_tmp_dir.iterdir():
        leftover.unlink()
    yield worker_tmp_dir
    for path in worker_tmp_dir.iterdir():
        path.unlink()


def test_media_dir_names_the_worker(worker_tmp_dir, parallel_context):
    assert parallel_context.worker in worker_tmp_dir.name or not parallel_context.isolated


def test_checksum_report(media):
    (media / "input.csv").write_text("id,qty\n1,2\n2,5\n")
    digest = hashlib.sha256((media / "input.csv").read_bytes()).hexdigest()
    (media / "report.txt").write_text(digest)
    time.sleep(0.2)
    assert sorted(p.name for p in media.iterdir()) == ["input.csv", "report.txt"]
    assert (media / "report.txt").read_text() == digest


def test_split_pages(media):
    for n in range(5):
        (media / f"page-{n}.txt").write_text(f"page {n}")
    time.sleep(0.2)
    assert len(list(media.glob("page-*.txt"))) == 5


@pytest.fixture(scope="module")
def file_server(worker_ports, worker_tmp_dir):
    """A server on port 1 of this worker's block (port 0 is held by worker_claim)."""
    (worker_tmp_dir / "hello.txt").write_text("hello")
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(worker_tmp_dir), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", worker_ports.port(1)), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{worker_ports.port(1)}"
    server.shutdown()
    server.server_close()


def test_server_on_worker_port(file_server, worker_ports):
    assert file_server.endswith(str(worker_ports.port(1)))
    with urllib.request.urlopen(file_server + "/hello.txt", timeout=5) as resp:
        assert resp.read() == b"hello"
    time.sleep(0.2)
