"""The fast paths of `make env`, `make ports` and `make check-ports` answer exactly as the slow ones."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PACKAGE, make_worktree
from parallel_stacks import basics, derive
from parallel_stacks.settings import Settings
from parallel_stacks import probe as check_ports


@pytest.fixture
def root(tmp_path):
    """A worktree, a copy of the helper package of its own (to edit), and a cache directory of its own."""
    root = make_worktree(tmp_path / "w", dev_env="POSTGRES_USER=app\nPOSTGRES_PASSWORD=s3cret\n")
    shutil.copytree(PACKAGE, tmp_path / "lib" / "parallel_stacks", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run(root: Path, command: str, *args, fresh: bool = False, **env) -> subprocess.CompletedProcess:
    """`python -m parallel_stacks <command>` with the worktree's own package copy; `fresh`: cache emptied first."""
    if fresh:
        shutil.rmtree(root.parent / "cache", ignore_errors=True)
    full = {k: v for k, v in os.environ.items() if k not in ("PORT_OFFSET", "ENV", "STACK_ENV", "TASK_ID", "SHOW_SECRETS")}
    full.update(STACK_ROOT=str(root), PYTHONPATH=str(root.parent / "lib"), XDG_CACHE_HOME=str(root.parent / "cache"))
    out = subprocess.run([sys.executable, "-m", "parallel_stacks", command, *args], env={**full, **env}, capture_output=True, text=True)
    if fresh:
        shutil.rmtree(root.parent / "cache", ignore_errors=True)
    return out


def cache_file(root: Path) -> Path:
    return root.parent / "cache" / "parallel-stacks" / "derived" / (str(root).strip("/").replace("/", "%") + ".marshal")


def test_the_copy_is_what_runs(root):
    """The tests below edit the worktree's own copy of the package: it must be the one imported."""
    out = subprocess.run([sys.executable, "-c", "import parallel_stacks; print(parallel_stacks.__file__)"],
                         env={**os.environ, "PYTHONPATH": str(root.parent / "lib")}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(root.parent / "lib" / "parallel_stacks" / "__init__.py")


@pytest.mark.parametrize("command", ["env", "ports"])
def test_cached_output_is_what_a_fresh_derivation_prints(root, command):
    for offset in ("0", "10000", "0"):
        fresh = run(root, command, fresh=True, PORT_OFFSET=offset)
        first = run(root, command, PORT_OFFSET=offset)
        again = run(root, command, PORT_OFFSET=offset)
        assert fresh.returncode == first.returncode == again.returncode == 0
        assert fresh.stdout == first.stdout == again.stdout
    assert cache_file(root).exists()


def test_same_size_rewrite_within_one_tick_is_not_served_stale(root):
    env = root / "env" / "dev.env"
    env.write_text("PORT_OFFSET=1000\nPOSTGRES_PASSWORD=s3cret\n")
    stamp = env.stat().st_mtime_ns
    assert "POSTGRES_PORT=6432" in run(root, "env").stdout
    env.write_text("PORT_OFFSET=2000\nPOSTGRES_PASSWORD=s3cret\n")  # same size
    os.utime(env, ns=(stamp, stamp))  # and the same mtime
    assert "POSTGRES_PORT=7432" in run(root, "env").stdout


@pytest.mark.parametrize("change", ["stack.yml", "env/local.env", ".env.dynamic", "ENV", "SHOW_SECRETS", "kind input", "code"])
def test_every_input_is_part_of_the_key(root, change):
    before = run(root, "env").stdout
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
    elif change == "kind input":
        env = {"POSTGRES_DB": "elsewhere"}  # read by the postgres kind, named nowhere in the cache
    else:  # any module of the package: here the postgres kind's default user, and basics (not on the derivation's path)
        module = root.parent / "lib" / "parallel_stacks" / "kinds" / "postgres.py"
        module.write_text(module.read_text().replace('lookup("POSTGRES_USER") or "app"', 'lookup("POSTGRES_USER") or "app2"'))
        (root / "env" / "dev.env").write_text("POSTGRES_PASSWORD=s3cret\n")
        before = run(root, "env").stdout
        module.write_text(module.read_text().replace('or "app2"', 'or "app3"'))
    after = run(root, "env", **env)
    assert after.returncode == 0, after.stderr
    assert after.stdout != before
    assert after.stdout == run(root, "env", fresh=True, **env).stdout


def test_errors_and_auto_are_never_cached(root, tmp_path):
    bad = run(root, "env", PORT_OFFSET="abc")
    assert bad.returncode == 2 and bad.stderr.startswith("error: PORT_OFFSET='abc'")
    assert not cache_file(root).exists()
    state = str(tmp_path / "state")
    auto = run(root, "env", PORT_OFFSET="auto", PARALLEL_STACKS_STATE_DIR=state)
    assert auto.returncode == 0 and not cache_file(root).exists()
    assert "PORT_OFFSET_SOURCE=auto (unclaimed)\n" in auto.stdout and not (tmp_path / "state").exists()  # deriving claims nothing
    derive.load(root, Settings({"PORT_OFFSET": "auto", "PARALLEL_STACKS_STATE_DIR": state}), claim=True)  # as `make up` (or `make claim`) does
    claimed = run(root, "env", PORT_OFFSET="auto", PARALLEL_STACKS_STATE_DIR=state)
    assert "PORT_OFFSET_SOURCE=auto\n" in claimed.stdout and not cache_file(root).exists()
    (tmp_path / "state" / "registry.json").unlink()  # the registry must be asked again, not a cache
    (root / ".env.dynamic").unlink()
    again = run(root, "env", PORT_OFFSET="auto", PARALLEL_STACKS_STATE_DIR=state)
    assert again.stdout == auto.stdout


def test_a_corrupt_cache_is_ignored(root):
    expected = run(root, "env").stdout
    cache_file(root).write_bytes(b"\x00garbage")
    assert run(root, "env").stdout == expected


def test_an_edit_to_any_module_is_a_miss(root):
    """Not only the modules on the derivation's path: basics.py was missing from the old key."""
    import marshal

    before = run(root, "env").stdout
    assert len(marshal.loads(cache_file(root).read_bytes())) == 1
    basics_py = root.parent / "lib" / "parallel_stacks" / "basics.py"
    basics_py.write_text(basics_py.read_text() + "\n# an edit\n")
    assert run(root, "env").stdout == before  # the same output, computed again and stored under a new key
    assert len(marshal.loads(cache_file(root).read_bytes())) == 2


def test_the_stored_entry_lists_every_variable_the_derivation_read(root):
    from parallel_stacks import cache

    recorder = cache.Recorder({"PORT_OFFSET": "10", "UNRELATED": "x"})
    derive.load(root, Settings(recorder))
    assert {"PORT_OFFSET", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "BIND_ADDRESS", "STACK_ENV"} <= set(recorder.asked)
    assert "UNRELATED" not in recorder.asked


def test_check_ports_limits_match_basics():
    assert (check_ports.PORT_MIN, check_ports.PORT_MAX) == (basics.PORT_MIN, basics.PORT_MAX)


def test_quick_check_defers_to_the_full_one_on_any_doubt(root, monkeypatch):
    from parallel_stacks import engine as docker_state

    values = derive.copy_of(root, Settings({"PORT_OFFSET": "41000"}))
    monkeypatch.setattr(docker_state, "engine_get", lambda settings, path: b'[{"Ports":[]}]')
    assert check_ports.quick_all_free(Settings({}), values)
    monkeypatch.setattr(docker_state, "engine_get", lambda settings, path: b'[{"Ports":[{"PublicPort":49003,"Type":"tcp"}]}]')
    assert not check_ports.quick_all_free(Settings({}), values)  # api's port, published by some container
    monkeypatch.setattr(docker_state, "engine_get", lambda settings, path: None)
    assert not check_ports.quick_all_free(Settings({}), values)  # no engine answer: the full check decides
    monkeypatch.setattr(docker_state, "engine_get", lambda settings, path: b'[]')
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 49003))
        listener.listen()
        assert not check_ports.quick_all_free(Settings({}), values)
