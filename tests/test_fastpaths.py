"""The fast paths of `make env`, `make ports` and `make check-ports` answer exactly as the slow ones."""
from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import check_ports
import stack_config
from conftest import SCRIPTS, make_worktree


def run(root: Path, script: str, *args, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("PORT_OFFSET", "ENV", "STACK_ENV", "TASK_ID")}
    return subprocess.run([sys.executable, str(root / "scripts" / script), *args], env={**full, **env},
                          capture_output=True, text=True)


@pytest.fixture
def root(tmp_path):
    """A worktree with the real helpers copied in (the cache lives beside them)."""
    root = make_worktree(tmp_path / "w", dev_env="POSTGRES_USER=app\nPOSTGRES_PASSWORD=s3cret\n")
    (root / "scripts").mkdir()
    for script in SCRIPTS.glob("*.py"):
        (root / "scripts" / script.name).write_bytes(script.read_bytes())
    return root


def cache_file(root: Path) -> Path:
    return root / "scripts" / "__pycache__" / "derived.marshal"


@pytest.mark.parametrize("command", ["env", "ports"])
def test_cached_output_is_what_stack_config_prints(root, command):
    for offset in ("0", "10000", "0"):
        fresh = run(root, "stack_config.py", command, PORT_OFFSET=offset)
        first = run(root, "derived_cache.py", command, PORT_OFFSET=offset)
        again = run(root, "derived_cache.py", command, PORT_OFFSET=offset)
        assert fresh.returncode == first.returncode == again.returncode == 0
        assert fresh.stdout == first.stdout == again.stdout
    assert cache_file(root).exists()


def test_same_size_rewrite_within_one_tick_is_not_served_stale(root):
    env = root / "env" / "dev.env"
    env.write_text("PORT_OFFSET=1000\nPOSTGRES_PASSWORD=s3cret\n")
    stamp = env.stat().st_mtime_ns
    assert "POSTGRES_PORT=6432" in run(root, "derived_cache.py", "env").stdout
    env.write_text("PORT_OFFSET=2000\nPOSTGRES_PASSWORD=s3cret\n")  # same size
    os.utime(env, ns=(stamp, stamp))  # and the same mtime
    assert "POSTGRES_PORT=7432" in run(root, "derived_cache.py", "env").stdout


@pytest.mark.parametrize("change", ["stack.yml", "env/local.env", ".env.dynamic", "ENV", "SHOW_SECRETS", "code"])
def test_every_input_is_part_of_the_key(root, change):
    before = run(root, "derived_cache.py", "env").stdout
    env = {}
    if change == "stack.yml":
        (root / "stack.yml").write_text((root / "stack.yml").read_text().replace("host_port: 8003", "host_port: 8004"))
    elif change == "env/local.env":
        (root / "env" / "local.env").write_text("POSTGRES_DB=other\n")
    elif change == ".env.dynamic":
        (root / ".env.dynamic").write_text("PORT_OFFSET_DEV=3000\n")
    elif change == "ENV":
        (root / "env" / "test.env").write_text("PORT_OFFSET=1000\n")
        env = {"ENV": "test"}
    elif change == "SHOW_SECRETS":
        env = {"SHOW_SECRETS": "1"}
    else:
        script = root / "scripts" / "stack_config.py"
        script.write_text(script.read_text().replace('"POSTGRES_USER": "app"', '"POSTGRES_USER": "app2"'))
        (root / "env" / "dev.env").write_text("POSTGRES_PASSWORD=s3cret\n")
        before = run(root, "derived_cache.py", "env").stdout
        script.write_text(script.read_text().replace('"POSTGRES_USER": "app2"', '"POSTGRES_USER": "app3"'))
    after = run(root, "derived_cache.py", "env", **env)
    assert after.returncode == 0, after.stderr
    assert after.stdout != before
    assert after.stdout == run(root, "stack_config.py", "env", **env).stdout


def test_errors_and_auto_are_never_cached(root, tmp_path):
    bad = run(root, "derived_cache.py", "env", PORT_OFFSET="abc")
    assert bad.returncode == 2 and bad.stderr.startswith("error: PORT_OFFSET='abc'")
    assert not cache_file(root).exists()
    state = str(tmp_path / "state")
    auto = run(root, "derived_cache.py", "env", PORT_OFFSET="auto", PARALLEL_STACKS_STATE_DIR=state)
    assert auto.returncode == 0 and not cache_file(root).exists()
    (tmp_path / "state" / "registry.json").unlink()  # the registry must be asked again, not a cache
    again = run(root, "derived_cache.py", "env", PORT_OFFSET="auto", PARALLEL_STACKS_STATE_DIR=state)
    assert (tmp_path / "state" / "registry.json").exists() and again.stdout == auto.stdout


def test_a_corrupt_cache_is_ignored(root):
    expected = run(root, "derived_cache.py", "env").stdout
    cache_file(root).write_bytes(b"\x00garbage")
    assert run(root, "derived_cache.py", "env").stdout == expected


class Recording(dict):
    def __init__(self, *a):
        super().__init__(*a)
        self.asked = set()

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)


def test_the_key_lists_every_variable_the_derivation_reads(root):
    derived_cache = importlib.import_module("derived_cache")
    environ = Recording({"PORT_OFFSET": "10"})
    stack_config.load(root, environ)
    assert environ.asked <= set(derived_cache.ENV_INPUTS), environ.asked - set(derived_cache.ENV_INPUTS)
    environ = Recording({"TASK_ID": "x-12"})
    stack_config.load(root, environ)
    assert environ.asked <= set(derived_cache.ENV_INPUTS), environ.asked - set(derived_cache.ENV_INPUTS)


def test_check_ports_limits_match_stack_config():
    assert (check_ports.PORT_MIN, check_ports.PORT_MAX) == (stack_config.PORT_MIN, stack_config.PORT_MAX)


def test_quick_check_defers_to_the_full_one_on_any_doubt(root, monkeypatch):
    import docker_state

    values, services = stack_config.load(root, {"PORT_OFFSET": "41000"}), stack_config.services(root)
    monkeypatch.setattr(docker_state, "engine_get", lambda path: b'[{"Ports":[]}]')
    assert check_ports.quick_all_free(values, services)
    monkeypatch.setattr(docker_state, "engine_get", lambda path: b'[{"Ports":[{"PublicPort":49003,"Type":"tcp"}]}]')
    assert not check_ports.quick_all_free(values, services)  # api's port, published by some container
    monkeypatch.setattr(docker_state, "engine_get", lambda path: None)
    assert not check_ports.quick_all_free(values, services)  # no engine answer: the full check decides
    monkeypatch.setattr(docker_state, "engine_get", lambda path: b'[]')
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 49003))
        listener.listen()
        assert not check_ports.quick_all_free(values, services)
