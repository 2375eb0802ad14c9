"""`make adopt` on the compose files of well-known open-source projects (tests/adopt/README.md: licences, origins).

Each is converted, or refused in one line naming the construct. A converted one: `docker compose config` by
hand is what it was but for the documented changes (published ports bind to 127.0.0.1 unless the port named its
own address; container_name becomes a network alias; volumes carry the worktree label); two offsets give disjoint
ports, volumes, networks and data directories; compose accepts the helper's own command line at both; a second
adopt changes nothing. Two of them run side by side for real (netbox-docker: docker-compose.yml + override;
label-studio: a bind-mounted database directory).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import one_error_line
from test_adopt import EXAMPLES, OFFSETS, adopt, containers, git, make, repository, stand_ins, tree_digest  # noqa: F401  (stand_ins: a fixture)

CONVERTED = [
    "postgresql-pgadmin", "nextcloud-postgres", "nginx-nodejs-redis", "gitea-postgres",  # docker/awesome-compose
    "langfuse", "opentelemetry-demo", "temporal", "netbox-docker", "defang-django-postgres", "label-studio",
]
REFUSED = {"pihole-cloudflared-DoH": "network dns-net has a fixed subnet; a second copy cannot have the same one"}
LABEL = "dev.parallel-stacks.worktree"


def test_the_corpus_is_what_the_readme_says():
    listed = (EXAMPLES / "README.md").read_text()
    dirs = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
    assert dirs == sorted(CONVERTED + list(REFUSED))
    for name in dirs:
        assert f"`{name}/`" in listed, f"{name} is not described in tests/adopt/README.md"


def by_hand(repo: Path, env: dict | None = None, args: list | None = None) -> dict:
    proc = subprocess.run([*(args or ["docker", "compose"]), "config", "--format", "json"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def documented(before: dict, after: dict) -> dict:
    """`after` with the documented changes taken back out, to compare with `before`."""
    after = json.loads(json.dumps(after))
    for name, svc in after["services"].items():
        old = before["services"][name]
        for port in [p for p in svc.get("ports", []) if p.get("published")]:  # (a container port alone is published on a random port)
            original = next(p for p in old.get("ports", []) if p["target"] == port["target"] and p.get("published") == port.get("published"))
            assert port.get("host_ip") == original.get("host_ip", "127.0.0.1"), (name, port)
            port.pop("host_ip", None)
            if "host_ip" in original:
                port["host_ip"] = original["host_ip"]
        if "container_name" in old:
            assert "container_name" not in svc
            svc["container_name"] = old["container_name"]
            for net, conf in (svc.get("networks") or {}).items():
                if conf and old["container_name"] in (conf.get("aliases") or []):
                    conf["aliases"].remove(old["container_name"])
                    if not conf["aliases"]:
                        del conf["aliases"]
                    svc["networks"][net] = conf or (old.get("networks") or {}).get(net)
    for vol in (after.get("volumes") or {}).values():
        labels = vol.get("labels") or {}
        assert labels.pop(LABEL, None) == "" or vol.get("external"), vol
        if not labels:
            vol.pop("labels", None)
    return after


def helper_config(repo: Path, offset: int) -> dict:
    """The model compose builds from the helper's own command line and environment for this copy."""
    from parallel_stacks import derive
    from parallel_stacks import composecli as compose_run
    from parallel_stacks.settings import Settings

    copy, env = derive.compose_environment(repo, Settings({**os.environ, "PORT_OFFSET": str(offset), "NAMED_URLS_PORT": "off"}))
    proc = subprocess.run([*compose_run.base_args(Settings.read(), ["docker", "compose"], copy), "config", "--format", "json"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"compose refuses the helper's command line at offset {offset}: {proc.stderr}"
    return json.loads(proc.stdout)


def published(model: dict) -> set:
    return {int(p["published"]) for svc in model["services"].values() for p in svc.get("ports", []) if p.get("published")}


def objects(model: dict) -> set:
    names = {v["name"] for v in (model.get("volumes") or {}).values() if not v.get("external")}
    names |= {n["name"] for n in (model.get("networks") or {}).values() if n.get("name") and not n.get("external")}
    names |= {m["source"] for svc in model["services"].values() for m in svc.get("volumes", []) if m.get("type") == "bind" and ".stack-data" in m["source"]}
    return names


@pytest.mark.parametrize("example", CONVERTED)
def test_each_converted_project_is_the_same_by_hand_and_apart_per_copy(tmp_path, example, docker_engine):
    repo = repository(tmp_path, example)
    before = by_hand(repo)
    out = adopt(repo)
    assert out.returncode == 0, out.stderr
    assert not list(repo.glob("*.orig")), "a .orig beside a git-tracked file"
    after = by_hand(repo)
    assert documented(before, after) == before
    first, second = (helper_config(repo, offset) for offset in OFFSETS)
    assert published(first) and not published(first) & published(second), "two copies share a host port"
    assert not published(first) & published(before) and not published(second) & published(before)
    assert not objects(first) & objects(second), "two copies share a volume, network or data directory"
    assert not objects(first) & objects(before)
    for model in (first, second):
        assert set(model["services"]) == set(before["services"])
    tracked = tree_digest(repo)
    again = adopt(repo)
    assert again.returncode == 0 and "already adopted; nothing to change" in again.stdout, again.stdout
    assert tree_digest(repo) == tracked


@pytest.mark.parametrize("example, problem", REFUSED.items())
def test_each_refused_project_gets_one_line_naming_the_construct(tmp_path, example, problem):
    repo = repository(tmp_path, example)
    before = tree_digest(repo)
    out = adopt(repo)
    assert out.returncode == 2
    assert problem in one_error_line(out.stderr)
    assert tree_digest(repo) == before and git(repo, "status", "--porcelain", "--ignored") == ""


def test_what_the_corpus_covers(tmp_path):
    """The constructs the issue asks the corpus to hold, each found in at least one real project."""
    stacks = {}
    texts = {}
    for example in CONVERTED:
        repo = repository(tmp_path, example)
        texts[example] = {p.name: p.read_text() for p in repo.iterdir() if p.is_file()}
        assert adopt(repo).returncode == 0
        stacks[example] = yaml.safe_load((repo / "stack.yml").read_text())
    files = {e: s["compose"]["files"] for e, s in stacks.items()}
    assert "docker-compose.yml" in files["langfuse"]
    assert files["netbox-docker"] == ["docker-compose.yml", "docker-compose.override.yml"]
    assert "COMPOSE_FILE=" in texts["defang-django-postgres"][".env"] and files["defang-django-postgres"] == ["compose.yaml", "compose.dev.yaml"]
    assert "published: 5432" in texts["defang-django-postgres"]["compose.yaml"]  # long-syntax ports
    assert "${ENVOY_PORT}:${ENVOY_PORT}" in texts["opentelemetry-demo"]["compose.yaml"] and stacks["opentelemetry-demo"]["services"]["frontend-proxy"]["host_port"] == 8080
    assert len(yaml.safe_load(texts["opentelemetry-demo"]["compose.yaml"])["services"]) >= 20
    assert "REDIS_PORT: ${REDIS_PORT:-6379}" in texts["langfuse"]["docker-compose.yml"] and "STACK_REDIS_PORT" in stacks["langfuse"]["compose"]["variables"]
    assert "CLICKHOUSE_URL: ${CLICKHOUSE_URL:-http://clickhouse:8123}" in texts["langfuse"]["docker-compose.yml"]
    assert stacks["label-studio"]["compose"]["data_dirs"] == {"DB_DATA_DIR": "postgres-data"}  # a bind-mounted database directory
    assert "postgres:${POSTGRESQL_VERSION}" in texts["temporal"]["docker-compose.yml"]  # a variable image tag (.env)
    assert "docker.io/valkey/valkey" in texts["netbox-docker"]["docker-compose.yml"]


# ---------------------------------------------------------------- two copies side by side, for real
NETBOX_STAND_IN = """\
FROM parallel-stacks-offline/webapp:bookworm
RUN useradd -M unit && mkdir -p /srv/login \\
 && printf '#!/bin/sh\\nfor a; do u=$a; done\\nexec python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$u"\\n' > /usr/local/bin/curl \\
 && chmod +x /usr/local/bin/curl
CMD ["python3", "-m", "http.server", "8080", "--directory", "/srv"]
"""
VALKEY_STAND_IN = """\
FROM parallel-stacks-offline/redis:bookworm
RUN ln -s "$(command -v redis-server)" /usr/local/bin/valkey-server && ln -s "$(command -v redis-cli)" /usr/local/bin/valkey-cli
"""
# the official image accepts POSTGRES_HOST_AUTH_METHOD=trust without a password; the stand-in wants one (in-container psql is trusted)
TRUSTING_POSTGRES_STAND_IN = "FROM parallel-stacks-offline/postgres:bookworm\nENV POSTGRES_PASSWORD=stand-in\n"
TAGGED = {"docker.io/postgres:16-alpine": "parallel-stacks-offline/postgres:bookworm"}
BUILT = {
    "docker.io/netboxcommunity/netbox:v4.1-3.0.2": NETBOX_STAND_IN,
    "docker.io/valkey/valkey:8.0-alpine": VALKEY_STAND_IN,
    "postgres:11.5": TRUSTING_POSTGRES_STAND_IN,
}


@pytest.fixture(scope="module")
def corpus_stand_ins(request):
    """Offline stand-ins under the official names these projects use (only names this engine lacks; removed afterwards)."""
    request.getfixturevalue("stand_ins")  # test_adopt's: the adoption stand-ins built, the official names tagged
    added = []
    for name, source in {**TAGGED, **BUILT}.items():
        if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0:
            continue
        if name in TAGGED:
            subprocess.run(["docker", "tag", source, name], check=True)
        else:
            built = subprocess.run(["docker", "build", "-q", "-t", name, "-"], input=source, capture_output=True, text=True, timeout=600)
            assert built.returncode == 0, built.stderr
        added.append(name)
    yield
    for name in added:
        subprocess.run(["docker", "image", "rm", name], capture_output=True)


@pytest.fixture
def two_copies(tmp_path, corpus_stand_ins, image_env):
    """Adopt an example and start it at both OFFSETS (SERVICES: only those); nuke both afterwards."""
    started = []
    env = {"STACK_PYTHON": sys.executable, "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state"), "NAMED_URLS_PORT": "off"}

    def start(example: str, services: str) -> Path:
        repo = repository(tmp_path, example)
        assert adopt(repo).returncode == 0
        for offset in OFFSETS:
            started.append((repo, offset))
            make(repo, "stack-up", PORT_OFFSET=str(offset), SERVICES=services, **env)
        return repo

    yield start, env
    for repo, offset in started:
        make(repo, "stack-nuke", check=False, PORT_OFFSET=str(offset), FORCE="1", **env)


def psql(container: str, user: str, database: str, sql: str) -> str:
    proc = subprocess.run(["docker", "exec", container, "psql", "-U", user, "-d", database, "-tAc", sql], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def wait_for_psql(container: str, user: str, database: str) -> None:
    import time

    for _ in range(120):
        if subprocess.run(["docker", "exec", container, "psql", "-U", user, "-d", database, "-tAc", "SELECT 1"], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{container} never accepted psql")


@pytest.mark.docker
def test_netbox_docker_compose_yml_and_its_override_two_copies(two_copies):
    from test_adopt import http_get

    start, env = two_copies
    repo = start("netbox-docker", "netbox")  # its worker and housekeeping run NetBox's own code, which the stand-in lacks
    for offset in OFFSETS:
        http_get(f"http://127.0.0.1:{8000 + offset}/login/")  # the override's port, per copy
        wait_for_psql(f"netbox-docker-{offset}-postgres-1", "netbox", "netbox")
    psql(f"netbox-docker-{OFFSETS[0]}-postgres-1", "netbox", "netbox", "CREATE TABLE mark (v text)")
    assert psql(f"netbox-docker-{OFFSETS[1]}-postgres-1", "netbox", "netbox", "SELECT to_regclass('public.mark')") == ""
    make(repo, "stack-nuke", PORT_OFFSET=str(OFFSETS[1]), FORCE="1", **env)
    assert containers(f"netbox-docker-{OFFSETS[1]}") == [] and len(containers(f"netbox-docker-{OFFSETS[0]}")) == 4
    assert psql(f"netbox-docker-{OFFSETS[0]}-postgres-1", "netbox", "netbox", "SELECT to_regclass('public.mark')") == "mark"


@pytest.mark.docker
def test_label_studio_database_on_a_bind_mounted_directory_two_copies(two_copies):
    start, env = two_copies
    repo = start("label-studio", "db")  # the app's image is built from Label Studio's source, not vendored
    for offset in OFFSETS:
        wait_for_psql(f"label-studio-{offset}-db-1", "postgres", "postgres")
    psql(f"label-studio-{OFFSETS[0]}-db-1", "postgres", "postgres", "CREATE TABLE mark (v text)")
    assert psql(f"label-studio-{OFFSETS[1]}-db-1", "postgres", "postgres", "SELECT to_regclass('public.mark')") == ""
    for offset in OFFSETS:
        assert (repo / ".stack-data" / f"label-studio-{offset}" / "postgres-data" / "PG_VERSION").is_file()
    assert not (repo / "postgres-data").exists(), "a copy used the by-hand data directory"
    make(repo, "stack-nuke", PORT_OFFSET=str(OFFSETS[0]), FORCE="1", **env)
    assert not (repo / ".stack-data" / f"label-studio-{OFFSETS[0]}").exists()
    assert psql(f"label-studio-{OFFSETS[1]}-db-1", "postgres", "postgres", "SELECT 1") == "1"
