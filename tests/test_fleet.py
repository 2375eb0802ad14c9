"""Issues 24 and 28 on a real engine: copies that stop at once, `make up` on an up copy without compose
only when nothing changed, and health checks for engines older than start_interval.

One baked copy at PORT_OFFSET 14000 (nuked at the end). Speed is not asserted here (that is `make
bench`, sections 12 and 13); what is asserted is what makes it fast: every container ends on its stop
signal (not compose's SIGKILL after 10 s), and the quick `make up` never serves a changed copy stale.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

from conftest import TEMPLATE, Project, bake

pytestmark = pytest.mark.docker

OFFSET = 14000
NOTHING_CHANGED = "is already up and healthy; nothing changed"


@pytest.fixture(scope="module")
def standins(docker_engine) -> dict:
    """The offline stand-ins as scripts/offline-images.sh builds them from this checkout (OFFLINE_IMAGES_PREFIX
    honoured), so a changed entrypoint is what runs; the caller's *_IMAGE settings win."""
    proc = subprocess.run(["bash", str(TEMPLATE / "scripts" / "offline-images.sh")], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.skip(f"offline stand-ins could not be built: {proc.stderr.strip()[-300:]}")
    found = dict(line.split("=", 1) for line in proc.stdout.split() if "=" in line)
    return {**found, **{k: os.environ[k] for k in found if os.environ.get(k)}}


@pytest.fixture(scope="module")
def copy(tmp_path_factory, standins):
    cache = tmp_path_factory.mktemp("cache")  # the quick up's stamps: this suite's own
    project = Project(bake(tmp_path_factory.mktemp("fleet")), {**standins, "PORT_OFFSET": str(OFFSET), "XDG_CACHE_HOME": str(cache)})
    try:
        project.make("up")
        assert list((cache / "parallel-stacks" / "up").glob("*.json")), "no stamp after a successful up"
        yield project
    finally:
        project.make("nuke", check=False, FORCE="1")
        assert not list((cache / "parallel-stacks" / "up").glob("*.json")), "nuke left the copy's stamp"


def containers(project: Project) -> dict[str, dict]:
    """{service: inspect record} of the copy's containers."""
    name = project.values()["COMPOSE_PROJECT_NAME"]
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}"],
                         capture_output=True, text=True, check=True).stdout.split()
    records = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout) if ids else []
    return {r["Config"]["Labels"]["com.docker.compose.service"]: r for r in records}


def ids(project: Project) -> dict[str, str]:
    return {service: rec["Id"] for service, rec in containers(project).items()}


def test_up_on_an_up_copy_changes_nothing_and_says_so(copy):
    before = ids(copy)
    out = copy.make("up")
    assert NOTHING_CHANGED in out.stdout, out.stdout + out.stderr
    assert ids(copy) == before
    for rec in containers(copy).values():
        assert rec["State"]["Health"]["Status"] == "healthy", rec["Name"]


def test_up_after_an_edit_of_the_api_rebuilds_and_replaces_it(copy):
    before = ids(copy)
    app = copy.path / "api" / "app.py"
    original = app.read_text()
    app.write_text(original.replace('"/ready": ready}', '"/ready": ready, "/edited": ready}'))
    try:
        out = copy.make("up")
        assert NOTHING_CHANGED not in out.stdout, "an edited build context was served from the stamp"
        after = ids(copy)
        assert after["api"] != before["api"] and after["postgres"] == before["postgres"]
        with urllib.request.urlopen(copy.values()["API_URL"] + "/edited", timeout=10) as resp:
            assert resp.status == 200
    finally:
        app.write_text(original)
        copy.make("up")


def test_up_after_an_edit_of_compose_yaml_applies_it(copy):
    compose = copy.path / "compose.yaml"
    original = compose.read_text()
    compose.write_text(original.replace("      PGHOST: postgres\n", "      PGHOST: postgres\n      EDITED: \"yes\"\n", 1))
    try:
        out = copy.make("up")
        assert NOTHING_CHANGED not in out.stdout
        assert "EDITED=yes" in containers(copy)["api"]["Config"]["Env"]
    finally:
        compose.write_text(original)
        copy.make("up")
    assert "EDITED=yes" not in containers(copy)["api"]["Config"]["Env"]


def test_up_restarts_a_stopped_service(copy):
    subprocess.run(["docker", "stop", containers(copy)["redis"]["Id"]], capture_output=True, check=True)
    out = copy.make("up")
    assert NOTHING_CHANGED not in out.stdout
    assert containers(copy)["redis"]["State"]["Health"]["Status"] == "healthy"


def test_every_container_ends_on_its_stop_signal(copy):
    """`make down` waits for no timeout: each container exits on its stop signal (exit status 0 or the
    signal's), not on the SIGKILL compose sends after 10 s (137). A server behind a parent that ignores
    the signal as PID 1 (the stand-in's `runuser` did) fails here."""
    records = containers(copy)
    for service in ("ui", "api", "mqtt", "redis", "postgres"):  # compose's order: dependants first
        subprocess.run(["docker", "stop", "-t", "20", records[service]["Id"]], capture_output=True, check=True, timeout=60)
    for service, rec in containers(copy).items():
        state = rec["State"]
        assert not state["Running"] and state["ExitCode"] != 137 and not state["OOMKilled"], (service, state)
    copy.make("up")
    assert all(rec["State"]["Health"]["Status"] == "healthy" for rec in containers(copy).values())


def test_engines_without_start_interval_get_checks_every_2s(copy):
    """What Compose v1 and Engine < 25 get (forced with STACK_LEGACY_HEALTHCHECKS=1): compose.yaml without
    start_interval, every check every 2 s (as before issue 28), the copy healthy, and back with the setting gone."""
    out = copy.make("up", STACK_LEGACY_HEALTHCHECKS="1")
    assert "no health-check start_interval" in out.stderr
    for service, rec in containers(copy).items():
        check = rec["Config"]["Healthcheck"]
        assert check["Interval"] == 2_000_000_000 and not check.get("StartInterval"), (service, check)
        assert rec["State"]["Health"]["Status"] == "healthy"
    assert NOTHING_CHANGED in copy.make("up", STACK_LEGACY_HEALTHCHECKS="1").stdout
    copy.make("up")
    for service, rec in containers(copy).items():
        check = rec["Config"]["Healthcheck"]
        assert check["Interval"] == 30_000_000_000 and check["StartInterval"] == 1_000_000_000, (service, check)
