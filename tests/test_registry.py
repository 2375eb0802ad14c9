"""PORT_OFFSET=auto: the machine-wide slot registry (real files, locks, processes, sockets)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import make_worktree
from parallel_stacks import derive
from parallel_stacks.settings import Settings
from parallel_stacks.basics import StackError
from parallel_stacks.registry import claims as registry_claims
from parallel_stacks.registry import dynamic as registry_dynamic
from parallel_stacks.registry import slots as registry_slots
from parallel_stacks.registry import store as registry_store

def worktree(base, name):
    return make_worktree(base / name)


@pytest.fixture
def state(tmp_path, monkeypatch):
    directory = tmp_path / "state"
    monkeypatch.setenv("PARALLEL_STACKS_STATE_DIR", str(directory))
    return directory


def auto(root, **env):
    """A PORT_OFFSET=auto copy, claimed explicitly as `make up` claims it (deriving alone writes nothing)."""
    return derive.load(root, Settings({"PORT_OFFSET": "auto", "PARALLEL_STACKS_STATE_DIR": os.environ["PARALLEL_STACKS_STATE_DIR"], **env}), claim=True)


def test_auto_claims_a_remembered_slot_outside_the_ephemeral_range(tmp_path, state):
    root = worktree(tmp_path, "a")
    values = auto(root)
    offset = int(values["PORT_OFFSET"])
    assert offset > 0 and offset % registry_claims.AUTO_STEP == 0
    low, high = registry_claims.ephemeral_range()
    for key in ("POSTGRES_PORT", "REDIS_PORT", "API_PORT", "UI_PORT"):
        assert not low <= int(values[key]) <= high
    assert values["PORT_OFFSET_SOURCE"] == "auto"
    assert f"PORT_OFFSET_DEV={offset}\n" in (root / ".env.dynamic").read_text()
    later = derive.load(root, Settings({}))  # a later plain `make` call agrees
    assert later["PORT_OFFSET"] == str(offset) and later["PORT_OFFSET_SOURCE"] == ".env.dynamic"
    assert auto(root)["PORT_OFFSET"] == str(offset)  # claiming again is idempotent
    assert derive.load(root, Settings({"PORT_OFFSET": "7"}))["PORT_OFFSET"] == "7"  # explicit still wins
    claims = json.loads((state / "registry.json").read_text())["claims"]
    assert [c["offset"] for c in claims.values()] == [offset]


def test_worktrees_get_distinct_slots_and_release_frees_one(tmp_path, state):
    a, b = worktree(tmp_path, "a"), worktree(tmp_path, "b")
    oa, ob = auto(a)["PORT_OFFSET"], auto(b)["PORT_OFFSET"]
    assert oa != ob
    assert registry_claims.release(a, "dev", Settings.read()) == int(oa)
    assert not (a / ".env.dynamic").exists()
    c = worktree(tmp_path, "c")
    assert auto(c)["PORT_OFFSET"] == oa  # the freed slot is free again
    assert registry_claims.release(a, "dev", Settings.read()) is None


def footprint(values) -> set[int]:
    """Every port a copy uses: its services' and its test workers' (TEST_PORTS, as `make env` prints it)."""
    from parallel_stacks.formula import worker_ports_of
    from parallel_stacks.model import Copy

    ports = {int(v) for k, v in values.items() if k.endswith("_PORT") and not k.endswith("_CONTAINER_PORT") and k != "NAMED_URLS_PORT"}
    return ports | set(worker_ports_of(Copy(values, ())))


def test_auto_and_task_slots_never_share_a_port_or_test_port(tmp_path, state):
    """12+ workers need 12+ port blocks: the claimed copies' test-port ranges stay apart, and
    apart from every claimed copy's (and the default copy's) service ports."""
    copies = [auto(worktree(tmp_path, f"w{i}")) for i in range(6)]
    copies += [derive.load(worktree(tmp_path, f"t{i}"), Settings({"TASK_ID": f"task-{1001 + i}", "PARALLEL_STACKS_STATE_DIR": str(state)}), claim=True)
               for i in range(4)]
    assert [c["PORT_OFFSET_SOURCE"] for c in copies[6:]] == ["TASK_ID"] * 4
    assert [c["PORT_OFFSET"] for c in copies[6:]] == ["10", "20", "30", "40"]  # seed 000's offsets, exactly: only test ports move
    assert copies[6]["TEST_PORTS"] != "20010-20209"  # the default copy's tests use 20000-20199
    default = footprint({**derive.load(worktree(tmp_path, "d"), Settings({"PORT_OFFSET": "0"}))})
    prints = [footprint(c) for c in copies] + [default]
    for i, a in enumerate(prints):
        for b in prints[i + 1 :]:
            assert not a & b, (sorted(a & b)[:5], [c["PORT_OFFSET"] for c in copies])
    assert all(len(p) >= 200 for p in prints)  # 20 blocks of 10 each


def test_each_environment_keeps_its_own_slot(tmp_path, state):
    root = worktree(tmp_path, "a")
    (root / "env" / "test.env").write_text("POSTGRES_USER=app\n")
    dev = auto(root)["PORT_OFFSET"]
    test = auto(root, ENV="test")["PORT_OFFSET"]
    assert dev != test
    assert derive.load(root, Settings({}))["PORT_OFFSET"] == dev  # the test claim did not overwrite dev's
    assert derive.load(root, Settings({"ENV": "test"}))["PORT_OFFSET"] == test
    assert registry_claims.release(root, "test", Settings.read()) == int(test)
    assert derive.load(root, Settings({}))["PORT_OFFSET"] == dev
    assert derive.load(root, Settings({"ENV": "test"}))["PORT_OFFSET_SOURCE"] == "default"
    assert registry_claims.release(root, "dev", Settings.read()) == int(dev)
    assert not (root / ".env.dynamic").exists()


def test_taken_slot_is_skipped_and_logged(tmp_path, state, capsys, monkeypatch):
    root = worktree(tmp_path, "a")
    monkeypatch.setattr(registry_claims, "AUTO_STEP", 1000)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", 9003))  # the api port of the first candidate, offset 1000
        except OSError:
            pytest.fail("port 9003 is busy on this machine; the test needs it free")
        listener.listen()
        offset = int(auto(root)["PORT_OFFSET"])
    assert offset >= 2000
    err = capsys.readouterr().err
    assert f"auto: skipped PORT_OFFSET=1000 (port 9003 is held by pid {os.getpid()}" in err


def test_no_free_slot_is_one_clear_line(tmp_path, state, monkeypatch):
    monkeypatch.setattr(registry_claims, "ephemeral_range", lambda: (1024, 65535))
    with pytest.raises(StackError, match="no free slot for PORT_OFFSET=auto") as info:
        auto(worktree(tmp_path, "a"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "a" / ".env.dynamic").exists()


def test_unusable_state_dir_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("PARALLEL_STACKS_STATE_DIR", str(blocker / "state"))
    with pytest.raises(StackError, match="cannot open the slot registry"):
        auto(worktree(tmp_path, "a"))


def test_state_dir_follows_xdg(tmp_path):
    assert registry_store.state_dir(Settings({"XDG_STATE_HOME": str(tmp_path)})) == tmp_path / "parallel-stacks"
    assert registry_store.state_dir(Settings({"HOME": "/h"})).name == "parallel-stacks"


def test_remembered_slot_taken_by_another_copy_is_refused(tmp_path, state):
    a, b = worktree(tmp_path, "a"), worktree(tmp_path, "b")
    offset = auto(a)["PORT_OFFSET"]
    (b / ".env.dynamic").write_text(f"PORT_OFFSET_DEV={offset}\n")  # copied by hand
    with pytest.raises(StackError, match="now claimed by another copy"):
        auto(b)


def test_auto_and_task_claims_on_a_remote_engine_check_that_hosts_ports(tmp_path, state, monkeypatch):
    """Issue 25: one claim loop, the same checks for every source. With the engine on another host, whether a
    port is free is asked on that host (a probe container there, probe.remote_busy_ports), never of this
    machine's sockets: before, a task id's claim tested this machine's ports and an auto claim tested none."""
    from parallel_stacks import engine, probe

    busy_there = {8003 + 100, 8003 + 50}  # the api ports of auto's first slot (100) and task-5's preferred one (50)
    probed = []

    def remote_busy_ports(bind, ports, settings):
        probed.extend(ports)
        return {port for port in ports if port in busy_there}

    def port_free(host, port):
        raise AssertionError(f"asked this machine's {host}:{port} about a copy on a remote engine")

    monkeypatch.setattr(probe, "remote_busy_ports", remote_busy_ports)
    monkeypatch.setattr(probe, "port_free", port_free)
    monkeypatch.setattr(engine, "running_containers", lambda *args: [])  # the remote engine runs nothing yet
    monkeypatch.setattr(engine, "missing_images", lambda *args: [])  # it has the probe's image
    far = {"DOCKER_HOST": "tcp://10.1.2.3:2376", "SLOT_CLAIMS": "local", "DOCKER_CONFIG": str(tmp_path), "PARALLEL_STACKS_STATE_DIR": str(state)}
    auto_copy = derive.load(worktree(tmp_path, "a"), Settings({**far, "PORT_OFFSET": "auto"}), claim=True)
    task_copy = derive.load(worktree(tmp_path, "t"), Settings({**far, "TASK_ID": "task-5"}), claim=True)
    assert (auto_copy["PORT_OFFSET"], task_copy["PORT_OFFSET"]) == ("200", "60")  # 100 and 50 are busy on that host
    assert {8103, 8053} <= set(probed)
    assert task_copy["PORT_OFFSET_SOURCE"] == "TASK_ID" and auto_copy["PORT_OFFSET_SOURCE"] == "auto"


CORRUPTIONS = [
    pytest.param(lambda good: b"{ not json", id="not-json"),
    pytest.param(lambda good: b"", id="truncated-to-empty"),
    pytest.param(lambda good: good[: len(good) // 2], id="truncated-half-way"),
    pytest.param(lambda good: b"\xff\xfe\x00garbage", id="binary"),
    pytest.param(lambda good: b"[]", id="a-list"),
    pytest.param(lambda good: good.replace(b'"claims": {', b'"claims": [{', 1)[:-1] + b"]}", id="claims-a-list"),
    pytest.param(lambda good: good.replace(b'"offset": ', b'"offset": "x', 1).replace(b',\n', b'",\n', 1), id="offset-a-string"),
    pytest.param(lambda good: good.replace(b'"version": 1', b'"version": 99'), id="unknown-version"),
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_corrupt_registry_keeps_the_callers_claim(tmp_path, state, capsys, corrupt):
    a = worktree(tmp_path, "a")
    offset = auto(a)["PORT_OFFSET"]
    good = (state / "registry.json").read_bytes()
    (state / "registry.json").write_bytes(corrupt(good))
    assert auto(a)["PORT_OFFSET"] == offset
    assert "was corrupt" in capsys.readouterr().err
    assert list(state.glob("registry.json.corrupt-*"))
    claims = json.loads((state / "registry.json").read_text())["claims"]
    assert [c["offset"] for c in claims.values()] == [int(offset)]


CLAIMER = """
import sys, time
from parallel_stacks import derive
from parallel_stacks.settings import Settings
from pathlib import Path
while time.time() < {start}:
    time.sleep(0.001)
print(derive.load(Path(sys.argv[1]), Settings({{"PORT_OFFSET": "auto", "PARALLEL_STACKS_STATE_DIR": {state!r}}}), claim=True)["PORT_OFFSET"])
"""


def test_fifty_concurrent_claims_get_fifty_distinct_slots(tmp_path, state):
    roots = [worktree(tmp_path, f"w{i}") for i in range(50)]
    start = time.time() + 3  # every process waits for the same instant, then claims
    code = CLAIMER.format(start=start, state=str(state))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in roots]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results if r[1]][:3]
    offsets = [int(out.strip()) for out, _ in results]
    assert len(set(offsets)) == 50
    claims = json.loads((state / "registry.json").read_text())["claims"]
    assert sorted(c["offset"] for c in claims.values()) == sorted(offsets)
    ports = [p for c in claims.values() for p in c["ports"]]
    assert len(ports) == len(set(ports)) == 200, "two copies share a port"
    for root, offset in zip(roots, offsets):
        assert registry_dynamic.read_dynamic(root, "dev") == offset


@pytest.mark.docker
def test_corrupt_registry_loses_no_live_copy(tmp_path, image_env, docker_engine):
    from conftest import Project, bake

    state_dir = str(tmp_path / "state")
    a = Project(bake(tmp_path / "a"), {**image_env, "PARALLEL_STACKS_STATE_DIR": state_dir})
    b = Project(bake(tmp_path / "b"), {**image_env, "PARALLEL_STACKS_STATE_DIR": state_dir})
    try:
        up = a.make("up", PORT_OFFSET="auto")
        offset_a = a.values()["PORT_OFFSET"]  # later calls agree, no PORT_OFFSET needed
        assert f"PORT_OFFSET={offset_a}" in up.stdout
        (tmp_path / "state" / "registry.json").write_bytes(b"\x00garbage")
        out = b.make("claim")  # the explicit claim (`make env` only reads: it repairs nothing)
        assert "was corrupt" in out.stderr
        offset_b = b.values()["PORT_OFFSET"]
        assert offset_b != offset_a, "a live copy's slot was handed out again"
        claims = json.loads((tmp_path / "state" / "registry.json").read_text())["claims"]
        assert {str(c["offset"]) for c in claims.values()} == {offset_a, offset_b}
        released = b.make("release")
        assert f"released PORT_OFFSET={offset_b}" in released.stdout
        assert not (b.path / ".env.dynamic").exists()
    finally:
        a.make("nuke", check=False, FORCE="1")
        a.make("release", check=False)


@pytest.mark.docker
def test_stale_claims_are_freed_only_with_force(tmp_path, state, capsys, docker_engine):
    import shutil

    from parallel_stacks.commands import fleet

    gone, idle, fresh = worktree(tmp_path, "gone"), worktree(tmp_path, "idle"), worktree(tmp_path, "fresh")
    offsets = {name: auto(root)["PORT_OFFSET"] for name, root in (("gone", gone), ("idle", idle), ("fresh", fresh))}
    shutil.rmtree(gone)
    data = json.loads((state / "registry.json").read_text())
    for claim in data["claims"].values():
        if claim["worktree"] == str(idle.resolve()):
            claim["claimed_at"] = time.time() - 3600  # claimed an hour ago, never started
    (state / "registry.json").write_text(json.dumps(data))
    environ = Settings({"PARALLEL_STACKS_STATE_DIR": str(state)})

    assert fleet.gc(environ, force=False) == 0
    out = capsys.readouterr().out
    assert f"would free PORT_OFFSET={offsets['gone']} of {gone.resolve()} (worktree directory is gone)" in out
    assert f"would free PORT_OFFSET={offsets['idle']} of {idle.resolve()} (no containers or volumes left)" in out
    assert str(fresh.resolve()) not in out  # young claims get a grace period
    assert len(json.loads((state / "registry.json").read_text())["claims"]) == 3
    assert (idle / ".env.dynamic").exists()

    assert fleet.gc(environ, force=True) == 0
    assert "freed 2 claim(s)" in capsys.readouterr().out
    claims = json.loads((state / "registry.json").read_text())["claims"]
    assert [c["offset"] for c in claims.values()] == [int(offsets["fresh"])]
    assert not (idle / ".env.dynamic").exists() and (fresh / ".env.dynamic").exists()
    assert fleet.gc(environ, force=False) == 0 and "no stale claims" in capsys.readouterr().out


@pytest.mark.docker
def test_read_only_targets_never_claim(tmp_path, image_env, docker_engine):
    """`make env`, `make ports` and `make check-ports` of a PORT_OFFSET=auto copy say which slot it would get and
    write nothing: no registry, no .env.dynamic, no claim on the engine (issue 25: deriving has no side effects)."""
    import subprocess

    from conftest import Project, bake

    def engine_slots() -> list[str]:
        return subprocess.run(["docker", "ps", "-aq", "--filter", f"label={registry_slots.SLOT_LABEL}"],
                              capture_output=True, text=True, check=True).stdout.split()

    state = tmp_path / "state"
    project = Project(bake(tmp_path / "w"), {**image_env, "PARALLEL_STACKS_STATE_DIR": str(state), "PORT_OFFSET": "auto"})
    slots = engine_slots()
    env = project.make("env").stdout
    assert "PORT_OFFSET_SOURCE=auto (unclaimed)" in env
    ports = project.make("ports").stdout
    offset = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("PORT_OFFSET="))
    assert f"(PORT_OFFSET={offset}," in ports  # the slot it would get, the same in both
    project.make("check-ports")
    assert not state.exists() and not (project.path / ".env.dynamic").exists() and engine_slots() == slots
    claimed = project.make("claim").stdout.strip()  # the explicit step: now it is recorded
    assert claimed == offset and (project.path / ".env.dynamic").exists() and (state / "registry.json").exists()
    assert "PORT_OFFSET_SOURCE=auto\n" in project.make("env").stdout
    project.make("release")
