"""A copy on a Docker engine on another host: a second real engine in its own network namespace
(scripts/second-engine.sh: dockerd on tcp://10.77.0.2:2375, reached over a veth pair) stands in for it."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import TEMPLATE, Project, bake, make_worktree, one_error_line

pytestmark = pytest.mark.docker
SCRIPT = TEMPLATE / "scripts" / "second-engine.sh"
NETNS = "/run/netns/ps-remote"


@pytest.fixture(scope="module")
def remote(docker_engine, image_env):
    """The second engine's endpoint, with the stand-in images the stack needs; stopped and wiped afterwards."""
    if os.geteuid() != 0 or not shutil.which("nsenter") or not shutil.which("ip"):
        message = "a second engine needs root, nsenter and ip (iproute2)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI=true, so this is a failure, not a skip")
        pytest.skip(message)
    images = [image_env[k] for k in ("POSTGRES_IMAGE", "PYTHON_IMAGE") if k in image_env]
    started = subprocess.run(["bash", str(SCRIPT), "start", *images], capture_output=True, text=True, timeout=900)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def stacks(remote, tmp_path_factory, image_env):
    """One baked project (postgres + api): copies 24000 and 25000 on the remote engine, 24000 on this one."""
    project = Project(bake(tmp_path_factory.mktemp("remote"), with_redis=False, with_mqtt=False, with_ui=False), image_env)
    state = str(tmp_path_factory.mktemp("state"))
    far = {"DOCKER_HOST": remote, "BIND_ADDRESS": "0.0.0.0", "PARALLEL_STACKS_STATE_DIR": state}
    near = {"PARALLEL_STACKS_STATE_DIR": state}
    started = []
    try:
        for env, offset in ((far, 24000), (far, 25000), (near, 24000)):
            started.append((env, offset))
            project.make("up", PORT_OFFSET=offset, **env)
        yield project, far, near
    finally:
        for env, offset in started:
            project.make("nuke", check=False, PORT_OFFSET=offset, FORCE="1", **env)


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        return json.load(resp)


def container_ids(env: dict, project: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        env={**os.environ, **{k: v for k, v in env.items() if k.startswith("DOCKER")}}, capture_output=True, text=True, check=True,
    )
    return sorted(out.stdout.split())


def test_copies_on_the_remote_engine_and_this_one_run_side_by_side(stacks, remote, tmp_path):
    project, far, near = stacks
    for env, offset, host in ((far, 24000, "10.77.0.2"), (far, 25000, "10.77.0.2"), (near, 24000, "127.0.0.1")):
        values = project.values(PORT_OFFSET=offset, **env)
        assert values["API_URL"] == f"http://{host}:{8003 + offset}"  # URLs name the engine's host
        assert values["STACK_ENGINE"] == (remote if env is far else "local")
        body = health(values["API_URL"])
        assert body["status"] == "ok" and body["port_offset"] == offset
    assert "API_NAMED_URL" not in project.values(PORT_OFFSET=24000, **far)  # *.localhost is this machine, not the engine's
    doctor = project.make("doctor", check=False, PORT_OFFSET=24000, **far).stdout
    assert "engine: Docker" in doctor and f"at {remote} (host 10.77.0.2)" in doctor
    slots = project.make("slots", **far).stdout
    rows = [ln for ln in slots.splitlines() if ln.startswith("demo-stack-2")]
    assert len(rows) == 2 and all(remote in ln for ln in rows), slots
    # both engines at once, through docker contexts
    config = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    subprocess.run(["docker", "context", "create", "far", "--docker", f"host={remote}"], env=config, capture_output=True, check=True)
    both = project.make("slots", CONTEXTS="default,far", DOCKER_CONFIG=config["DOCKER_CONFIG"], **near).stdout
    rows = [ln.split() for ln in both.splitlines() if ln.startswith("demo-stack-2")]
    assert sorted((r[0], r[-2]) for r in rows) == [("demo-stack-24000", "local"), ("demo-stack-24000", remote), ("demo-stack-25000", remote)], both


def test_check_ports_is_right_about_its_own_engines_host(stacks):
    project, far, near = stacks
    # a listener on the remote host on copy 26000's API port; a local one on copy 27000's
    remote_listener = subprocess.Popen(
        ["nsenter", f"--net={NETNS}", sys.executable, "-c",
         "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 34003)); s.listen(); time.sleep(600)"],
    )
    local = socket.socket()
    local.bind(("127.0.0.1", 35003))
    local.listen()
    try:
        time.sleep(0.5)
        out = project.make("check-ports", check=False, PORT_OFFSET=26000, **far)
        assert out.returncode == 2
        assert "port 34003 for service api on 0.0.0.0 is held by a process on the engine's host 10.77.0.2" in one_error_line(out.stderr)
        assert project.make("check-ports", PORT_OFFSET=26000, **near).returncode == 0  # this machine's 34003 is free
        assert project.make("check-ports", PORT_OFFSET=27000, **far).returncode == 0  # the local listener is not the remote host's
        out = project.make("check-ports", check=False, PORT_OFFSET=27000, **near)
        assert out.returncode == 2 and f"is held by pid {os.getpid()}" in one_error_line(out.stderr)
        # a container of the other remote copy is named as the holder, from the remote engine's labels
        out = project.make("check-ports", check=False, PORT_OFFSET=24000 + 8003 - 5432, **far)
        assert "is held by container demo-stack-24000-api-1 (compose project demo-stack-24000" in one_error_line(out.stderr)
    finally:
        remote_listener.kill()
        local.close()


def test_nuke_of_a_remote_copy_leaves_the_other_remote_copy_and_the_local_one(stacks):
    project, far, near = stacks
    keep = {("far", 25000): container_ids(far, "demo-stack-25000"), ("near", 24000): container_ids(near, "demo-stack-24000")}
    assert all(keep.values())
    out = project.make("nuke", PORT_OFFSET=24000, FORCE="1", **far)
    assert "removed" in out.stdout
    assert container_ids(far, "demo-stack-24000") == []
    assert container_ids(far, "demo-stack-25000") == keep[("far", 25000)]
    assert container_ids(near, "demo-stack-24000") == keep[("near", 24000)]
    assert health(project.values(PORT_OFFSET=24000, **near)["API_URL"])["status"] == "ok"
    assert health(project.values(PORT_OFFSET=25000, **far)["API_URL"])["status"] == "ok"


def claim_offsets(remote: str, tmp_path: Path, mode: str) -> list[int]:
    """20 concurrent PORT_OFFSET=auto claims, half from each of two state directories (two machines sharing the engine)."""
    code = "import sys; from pathlib import Path; from parallel_stacks import derive; from parallel_stacks.settings import Settings; print(derive.load(Path(sys.argv[1]), Settings.read(), claim=True)['PORT_OFFSET'])  # claims, as make up does"
    trees = [make_worktree(tmp_path / mode / f"w{i}") for i in range(20)]

    def one(i: int) -> int:
        env = {**os.environ, "PORT_OFFSET": "auto", "DOCKER_HOST": remote, "SLOT_CLAIMS": mode,
               "PARALLEL_STACKS_STATE_DIR": str(tmp_path / mode / f"state-{i % 2}")}
        proc = subprocess.run([sys.executable, "-c", code, str(trees[i])], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout.strip())

    with ThreadPoolExecutor(max_workers=20) as pool:
        return list(pool.map(one, range(20)))


def test_twenty_concurrent_auto_claims_from_two_machines_get_twenty_slots(remote, tmp_path):
    def engine_slots() -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", "label=dev.parallel-stacks.slot", "--format", "{{.Names}}"],
                             env={**os.environ, "DOCKER_HOST": remote}, capture_output=True, text=True, check=True)
        return sorted(out.stdout.split())

    before = engine_slots()
    offsets = claim_offsets(remote, tmp_path, "engine")
    assert len(set(offsets)) == 20, sorted(offsets)
    assert len(engine_slots()) == len(before) + 20
    # without the engine's claims, two registries hand out the same slots: the check above can fail
    local_only = claim_offsets(remote, tmp_path, "local")
    assert len(set(local_only)) < 20
    for tree in sorted((tmp_path / "engine").glob("w*")):
        state = tmp_path / "engine" / f"state-{int(tree.name[1:]) % 2}"
        env = {**os.environ, "DOCKER_HOST": remote, "PARALLEL_STACKS_STATE_DIR": str(state), "STACK_ROOT": str(tree)}
        subprocess.run([sys.executable, "-m", "parallel_stacks", "release"], env=env, capture_output=True, check=True)
    assert engine_slots() == before, "release left claims on the engine"
