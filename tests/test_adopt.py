"""`make adopt`: compose projects written by others get parallel copies; baked projects stay current with cruft.

The compose projects are docker/awesome-compose's, unchanged (tests/adopt/README.md).
Their third-party images are the offline stand-ins tagged with the names the
compose files use (only names this engine does not have; untagged afterwards).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
import yaml

from parallel_stacks.settings import Settings

from conftest import TEMPLATE, one_error_line

HERE = Path(__file__).parent
EXAMPLES = HERE / "adopt"
ADOPT = TEMPLATE / "scripts" / "adopt"
OFFSETS = (22000, 23000)  # every port below Linux's ephemeral range (no client socket of this run holds one)
# official name the compose files use -> offline stand-in (scripts/offline-images.sh --adoption)
STAND_INS = {
    "postgres:latest": "postgres",
    "postgres:alpine": "postgres",
    "dpage/pgadmin4:latest": "webapp",
    "nextcloud:apache": "webapp",
    "redislabs/redismod:latest": "redis",
    "nginx:1.21.6": "nginx",
    "node:14.17.3-alpine3.14": "node",
    "postgres:16": "postgres",
    "redis:7": "redis",
    "python:3.12-slim": "python",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def repository(tmp_path: Path, example: str) -> Path:
    """A fresh git repository holding one of the examples, committed."""
    repo = tmp_path / example
    shutil.copytree(EXAMPLES / example, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the project as its authors wrote it")
    return repo


def adopt(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ADOPT.parent)}  # scripts/, as `make adopt` runs it
    return subprocess.run([sys.executable, "-m", "adopt", *args, str(repo)], capture_output=True, text=True, timeout=120, env=env)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def make(repo: Path, *targets: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["make", *targets], cwd=repo, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"make {' '.join(targets)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def http_get(url: str, tries: int = 60) -> str:
    """GET with retries: services without a healthcheck are `running` before they listen."""
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return resp.read().decode()
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered 200")


def connect(url: str, tries: int = 120) -> psycopg.Connection:
    """A connection once the server accepts one: the adopted compose file has no healthcheck, so `up` returns when it runs."""
    for _ in range(tries):
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            time.sleep(0.5)
    raise AssertionError(f"{url} never accepted a connection")


def containers(project: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def volume_exists(name: str) -> bool:
    return subprocess.run(["docker", "volume", "inspect", name], capture_output=True).returncode == 0


# ---------------------------------------------------------------- conversion (no engine)
@pytest.mark.parametrize("example", ["postgresql-pgadmin", "nextcloud-postgres", "nginx-nodejs-redis", "gitea-postgres"])
def test_adopt_rewrites_ports_names_and_volumes_and_a_second_run_is_a_no_op(tmp_path, example):
    repo = repository(tmp_path, example)
    original = yaml.safe_load((repo / "compose.yaml").read_text())
    first = adopt(repo)
    assert first.returncode == 0, first.stderr
    assert "--- a/compose.yaml" in first.stdout and "+++ b/stack.yml" in first.stdout  # the diff is shown
    compose = yaml.safe_load((repo / "compose.yaml").read_text())
    stack = yaml.safe_load((repo / "stack.yml").read_text())
    assert stack["project"] == example.lower()
    for name, svc in compose["services"].items():
        assert "container_name" not in svc
        for port in svc.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:${"), port
        old = [str(p) for p in original["services"][name].get("ports", [])]
        assert len(old) == len(svc.get("ports", []))
    for vol, conf in (compose.get("volumes") or {}).items():
        assert conf["name"] == "${" + vol.upper().replace("-", "_") + f"_VOLUME:-{example.lower()}_{vol}" + "}"
        assert conf["labels"]["dev.parallel-stacks.worktree"] == "${STACK_WORKTREE:-}"
        declared = [v for s in stack["services"].values() for v in s.get("volumes", [])] + stack.get("volumes", [])
        assert vol in declared
    from parallel_stacks.config import load_stack

    load_stack(repo / "stack.yml")  # the package's own checks accept it
    assert (repo / "Makefile").read_text().rstrip().endswith("include parallel-stacks.mk")
    assert (repo / "parallel-stacks" / "tools" / "parallel_stacks" / "derive.py").is_file()
    assert git(repo, "diff", "--stat")  # the original is recoverable: tracked in git, changed in the work tree
    before = tree_digest(repo)
    second = adopt(repo)
    assert second.returncode == 0 and "already adopted; nothing to change" in second.stdout
    assert tree_digest(repo) == before


def test_with_port_offset_unset_the_project_behaves_as_before(tmp_path, docker_engine):
    """By hand (`docker compose config`, no make) and through make at offset 0: the same ports and volume names as before."""
    repo = repository(tmp_path, "nextcloud-postgres")
    by_hand_before = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=repo, capture_output=True, text=True, check=True)
    assert adopt(repo).returncode == 0
    by_hand_after = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=repo, capture_output=True, text=True, check=True)
    old, new = json.loads(by_hand_before.stdout), json.loads(by_hand_after.stdout)
    assert [p["published"] for p in new["services"]["nc"]["ports"]] == [p["published"] for p in old["services"]["nc"]["ports"]] == ["80"]
    assert {v["name"] for v in new["volumes"].values()} == {v["name"] for v in old["volumes"].values()}
    env = make(repo, "stack-env", STACK_PYTHON=sys.executable).stdout
    assert "NC_PORT=80\n" in env and "COMPOSE_PROJECT_NAME=nextcloud-postgres-0\n" in env


def test_a_repository_with_its_own_makefile_keeps_its_targets(tmp_path):
    repo = repository(tmp_path, "postgresql-pgadmin")
    (repo / "Makefile").write_text("up:\n\t@echo the teams own up\n\ntest:\n\t@echo the teams own test\n")
    git(repo, "add", "Makefile")
    git(repo, "commit", "-qm", "a Makefile")
    assert adopt(repo).returncode == 0
    assert make(repo, "up").stdout == "the teams own up\n"
    assert make(repo, "test").stdout == "the teams own test\n"
    out = make(repo, "stack-ports", PORT_OFFSET="43000").stdout  # its own .venv-stack, with the package it installed
    assert "127.0.0.1:48432" in out and "127.0.0.1:48050" in out
    assert (repo / ".venv-stack" / "bin" / "python").is_file() and not git(repo, "status", "--porcelain", "--ignored", ".venv-stack").startswith("??")
    assert "127.0.0.1:5050" in make(repo, "ports", STACK_PYTHON=sys.executable).stdout  # free names get the short alias
    assert "stack-up" in make(repo, "stack-help").stdout


def hostile(tmp_path: Path, name: str, compose: str) -> Path:
    repo = tmp_path / name
    repo.mkdir()
    (repo / "compose.yaml").write_text(compose)
    return repo


REFUSED = [
    pytest.param("pihole-cloudflared-DoH", None, "network dns-net has a fixed subnet; a second copy cannot have the same one", id="fixed-subnet"),
    pytest.param("host", "services:\n  web:\n    image: nginx\n    network_mode: host\n", "service web uses network_mode: host", id="host-network"),
    pytest.param("range", "services:\n  web:\n    image: nginx\n    ports: ['8000-8010:8000-8010']\n", "port range 8000-8010", id="port-range"),
    pytest.param(
        "extends", "services:\n  web:\n    extends: {file: base.yaml, service: web}\n", "extends base.yaml, which does not exist", id="extends-missing"
    ),
    pytest.param("nodefault", "services:\n  web:\n    image: nginx\n    ports: ['${WEB_PORT}:80']\n", "has no default and .env does not set WEB_PORT", id="unset-variable"),
    pytest.param("noports", "services:\n  worker:\n    image: busybox\n", "no service publishes a port", id="nothing-to-offset"),
    pytest.param("notyaml", "services: [\n", "compose.yaml is not valid YAML", id="not-yaml"),
]


@pytest.mark.parametrize("example, compose, problem", REFUSED)
def test_what_adopt_cannot_convert_is_refused_in_one_line_and_left_byte_identical(tmp_path, example, compose, problem):
    repo = repository(tmp_path, example) if compose is None else hostile(tmp_path, example, compose)
    before = tree_digest(repo)
    out = adopt(repo)
    assert out.returncode == 2
    line = one_error_line(out.stderr)
    assert problem in line and line.endswith("; nothing changed"), line
    assert tree_digest(repo) == before


def test_make_adopt_needs_a_target():
    out = subprocess.run(["make", "adopt"], cwd=TEMPLATE, capture_output=True, text=True)
    assert out.returncode == 2 and one_error_line(out.stderr) == "error: TARGET=path/to/repo is required"


# ---------------------------------------------------------------- two copies of each (real engine)
@pytest.fixture(scope="module")
def stand_ins(docker_engine):
    """The adoption stand-ins, tagged with the official names (only those this engine lacks; untagged afterwards)."""
    built = subprocess.run(["bash", str(TEMPLATE / "scripts" / "offline-images.sh"), "--adoption"], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    added = []
    for name, kind in STAND_INS.items():
        if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode != 0:
            subprocess.run(["docker", "tag", f"parallel-stacks-offline/{kind}:bookworm", name], check=True)
            added.append(name)
    yield
    for name in added:
        subprocess.run(["docker", "image", "rm", name], capture_output=True)


@pytest.fixture
def copies_of(tmp_path, stand_ins, image_env):
    """Adopt an example, start it at both OFFSETS with `make stack-up`; nuke both afterwards."""
    started = []
    env = {"STACK_PYTHON": sys.executable, "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state"), "NAMED_URLS_PORT": "off"}

    def start(example: str) -> Path:
        repo = repository(tmp_path, example)
        assert adopt(repo).returncode == 0
        for offset in OFFSETS:
            started.append((repo, offset))
            make(repo, "stack-up", PORT_OFFSET=str(offset), **env)
        return repo

    yield start, env
    for repo, offset in started:
        make(repo, "stack-nuke", check=False, PORT_OFFSET=str(offset), FORCE="1", **env)


@pytest.mark.docker
def test_pgadmin_and_postgres_two_copies_data_apart_and_nuke_leaves_the_other(copies_of):
    start, env = copies_of
    repo = start("postgresql-pgadmin")
    urls = {o: f"postgresql://yourUser:changeit@127.0.0.1:{5432 + o}/postgres" for o in OFFSETS}
    with connect(urls[OFFSETS[0]]) as conn:
        conn.execute("CREATE TABLE mark (v text)")
        conn.execute("INSERT INTO mark VALUES ('only in the first copy')")
    with connect(urls[OFFSETS[1]]) as conn:
        assert conn.execute("SELECT to_regclass('public.mark')").fetchone()[0] is None
    for offset in OFFSETS:
        assert http_get(f"http://127.0.0.1:{5050 + offset}/").split()[1] == "visits=0"
    first = "postgresql-pgadmin-22000"
    make(repo, "stack-nuke", PORT_OFFSET=str(OFFSETS[1]), FORCE="1", **env)
    assert containers("postgresql-pgadmin-23000") == [] and len(containers(first)) == 2
    with connect(urls[OFFSETS[0]]) as conn:
        assert conn.execute("SELECT v FROM mark").fetchone()[0] == "only in the first copy"
    dev = make(repo, "stack-env", "-s", SHOW_SECRETS="1", PORT_OFFSET=str(OFFSETS[0]), **env).stdout
    assert f"DATABASE_URL={urls[OFFSETS[0]]}\n" in dev  # the URL the adopted compose file's credentials give


@pytest.mark.docker
def test_nextcloud_two_copies_with_their_own_volumes(copies_of):
    start, env = copies_of
    repo = start("nextcloud-postgres")
    for offset in OFFSETS:
        assert volume_exists(f"nextcloud-postgres_db_data_{offset}") and volume_exists(f"nextcloud-postgres_nc_data_{offset}")
    assert not volume_exists("nextcloud-postgres_db_data"), "a copy used the by-hand volume"
    assert http_get(f"http://127.0.0.1:{80 + OFFSETS[0]}/").endswith("visits=1\n")
    assert http_get(f"http://127.0.0.1:{80 + OFFSETS[0]}/").endswith("visits=2\n")
    assert http_get(f"http://127.0.0.1:{80 + OFFSETS[1]}/").endswith("visits=1\n"), "the copies share the app's data volume"
    make(repo, "stack-nuke", PORT_OFFSET=str(OFFSETS[0]), FORCE="1", **env)
    assert not volume_exists(f"nextcloud-postgres_nc_data_{OFFSETS[0]}") and volume_exists(f"nextcloud-postgres_nc_data_{OFFSETS[1]}")
    assert http_get(f"http://127.0.0.1:{80 + OFFSETS[1]}/").endswith("visits=2\n")


@pytest.mark.docker
def test_build_contexts_nginx_node_and_redis_two_copies_count_apart(copies_of):
    """Two Node.js services built from one context (npm ci against the registry), nginx built FROM nginx, Redis."""
    start, env = copies_of
    repo = start("nginx-nodejs-redis")
    counts = [http_get(f"http://127.0.0.1:{80 + OFFSETS[0]}/").rsplit(" ", 1)[1] for _ in range(3)]
    assert counts == ["1", "2", "3"]
    assert http_get(f"http://127.0.0.1:{80 + OFFSETS[1]}/").rsplit(" ", 1)[1] == "1", "the copies share one Redis"
    make(repo, "stack-nuke", PORT_OFFSET=str(OFFSETS[1]), FORCE="1", **env)
    assert containers("nginx-nodejs-redis-23000") == []
    assert http_get(f"http://127.0.0.1:{80 + OFFSETS[0]}/").rsplit(" ", 1)[1] == "4"


# ---------------------------------------------------------------- cruft: keeping a baked project current
def template_repository(tmp_path: Path) -> Path:
    """This template's files (the work tree, as the tests see it) as a git repository at commit N."""
    repo = tmp_path / "template"
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "__pycache__", ".ruff_cache", ".mypy_cache", ".pytest_cache", "*.egg-info")
    shutil.copytree(TEMPLATE, repo, ignore=ignore)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "N")
    return repo


def test_cruft_update_applies_the_next_template_commit_and_keeps_the_users_files(tmp_path):
    from cookiecutter.main import cookiecutter

    template = template_repository(tmp_path)
    project = Path(cookiecutter(str(template), no_input=True, output_dir=str(tmp_path / "out")))
    state = json.loads((project / ".cruft.json").read_text())
    assert state["template"] == str(template) and state["commit"] == git(template, "rev-parse", "HEAD").strip()
    secrets_before = (project / "env" / "local.env").read_bytes()
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baked")
    # the user's own edits: the app, a setting, the compose file (a comment of theirs at the top)
    (project / "api" / "app.py").write_text((project / "api" / "app.py").read_text() + "\n# the team's own endpoint\n")
    (project / "env" / "dev.env").write_text((project / "env" / "dev.env").read_text() + "POSTGRES_DURABILITY=off\n")
    (project / "compose.yaml").write_text("# the team's note\n" + (project / "compose.yaml").read_text())
    git(project, "commit", "-qam", "our changes")
    check = subprocess.run([sys.executable, "-m", "cruft", "check"], cwd=project, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # commit N+1 of the template: the Makefile's help, a new docs page, the app (which is the user's: skipped)
    makefile = template / "{{cookiecutter.project}}" / "Makefile"
    makefile.write_text(makefile.read_text().replace("## Show this help", "## Show this help (every target)"))
    (template / "{{cookiecutter.project}}" / "docs" / "NEW.md").write_text("# New in N+1\n")
    app = template / "{{cookiecutter.project}}" / "api" / "app.py"
    app.write_text(app.read_text() + "\n# the template's change to the example app\n")
    git(template, "add", "-A")
    git(template, "commit", "-qm", "N+1")
    stale = subprocess.run([sys.executable, "-m", "cruft", "check"], cwd=project, capture_output=True, text=True)
    assert stale.returncode == 1, stale.stdout + stale.stderr
    update = subprocess.run([sys.executable, "-m", "cruft", "update", "--skip-apply-ask"], cwd=project, capture_output=True, text=True, timeout=300)
    assert update.returncode == 0, update.stdout + update.stderr
    assert "## Show this help (every target)" in (project / "Makefile").read_text()
    assert (project / "docs" / "NEW.md").read_text() == "# New in N+1\n"
    assert (project / "api" / "app.py").read_text().endswith("# the team's own endpoint\n")
    assert "the template's change" not in (project / "api" / "app.py").read_text()
    assert (project / "env" / "dev.env").read_text().endswith("POSTGRES_DURABILITY=off\n")
    assert (project / "compose.yaml").read_text().startswith("# the team's note\n")
    assert (project / "env" / "local.env").read_bytes() == secrets_before, "the update clobbered the secrets"
    assert not list(project.rglob("*.rej")) and not list(project.rglob("*.orig")), "conflicts left behind"
    assert json.loads((project / ".cruft.json").read_text())["commit"] == git(template, "rev-parse", "HEAD").strip()
    assert subprocess.run([sys.executable, "-m", "cruft", "check"], cwd=project, capture_output=True).returncode == 0


# ---------------------------------------------------------------- port forms
@pytest.mark.parametrize(
    "item, dotenv, expected",
    [
        pytest.param("8080:80", {}, (8080, 80, ""), id="short"),
        pytest.param("127.0.0.1:5432:5432", {}, (5432, 5432, ""), id="with-ip"),
        pytest.param("[::1]:5432:5432", {}, (5432, 5432, ""), id="with-ipv6"),
        pytest.param("5353:53/udp", {}, (5353, 53, "/udp"), id="udp"),
        pytest.param("${WEB_PORT:-8080}:80", {}, (8080, 80, ""), id="variable-with-default"),
        pytest.param("${WEB_PORT:-8080}:80", {"WEB_PORT": "9090"}, (9090, 80, ""), id="dotenv-beats-default"),
        pytest.param("${WEB_PORT}:80", {"WEB_PORT": "9090"}, (9090, 80, ""), id="variable-from-dotenv"),
        pytest.param("80", {}, None, id="container-only"),
        pytest.param({"target": 80, "published": "8080", "protocol": "tcp"}, {}, (8080, 80, ""), id="long"),
        pytest.param({"target": 80}, {}, None, id="long-unpublished"),
        pytest.param("${BIND_ADDRESS:-127.0.0.1}:${WEB_PORT:-8080}:80", {}, (8080, 80, ""), id="already-adopted"),
    ],
)
def test_every_port_form_compose_accepts_is_read(item, dotenv, expected):
    import adopt as adopt_module  # scripts/ is on pytest's pythonpath

    assert adopt_module.published_port(item, "compose.yaml: service web", dotenv) == expected


@pytest.mark.parametrize(
    "image, kind",
    [
        ("postgres:16-alpine", "postgres"), ("docker.io/library/postgres", "postgres"), ("postgres:${POSTGRES_VERSION:-17}", "postgres"),
        ("postgres:${POSTGRES_VERSION}", "postgres"), ("${POSTGRES_IMAGE:-postgis/postgis:16-3.4}", "postgres"),
        ("postgis/postgis:16-3.4-alpine", "postgres"), ("pgvector/pgvector:pg16", "postgres"), ("timescale/timescaledb:latest-pg16", "postgres"),
        ("docker.io/bitnami/postgresql:16", "postgres"), ("ghcr.io/${ORG:-acme}/postgres:16", "http"),
        ("postgres@sha256:" + "a" * 64, "postgres"), ("${REGISTRY:-docker.io}/library/postgres:16", "postgres"),
        ("redis/redis-stack:latest", "redis"), ("redis/redis-stack-server:7.2.0-v10", "redis"), ("bitnami/redis:7.2", "redis"),
        ("valkey/valkey:8-alpine", "redis"), ("docker.io/valkey/valkey:${VALKEY_TAG:-8}", "redis"), ("redis:${REDIS_VERSION:-7}-alpine", "redis"),
        ("registry.example.com:5000/eclipse-mosquitto:2", "mqtt"), ("eclipse-mosquitto", "mqtt"),
        ("nginx", "http"), ("postgrest/postgrest:v12", "http"), ("redis-commander/redis-commander", "http"), (None, "http"), ("", "http"),
    ],
)
def test_kinds_are_recognised_from_images(image, kind):
    import adopt as adopt_module

    assert adopt_module.kind_of(image) == kind


def test_a_tag_variable_from_dotenv_is_read():
    import adopt as adopt_module

    assert adopt_module.kind_of("${DB_IMAGE}:16", {"DB_IMAGE": "postgres"}) == "postgres"
    assert adopt_module.kind_of("${DB_IMAGE}:16", {"DB_IMAGE": "mysql"}) == "http"


def test_volume_fallbacks_are_the_names_compose_gave_them_by_hand(tmp_path):
    """A directory name compose normalises, COMPOSE_PROJECT_NAME in .env: by hand, the same volumes as before."""
    repo = hostile(tmp_path, "2048-Game.v2", "services:\n  web:\n    image: nginx\n    ports: ['8080:80']\n    volumes: [data:/d]\nvolumes:\n  data:\n")
    assert adopt(repo).returncode == 0
    assert yaml.safe_load((repo / "compose.yaml").read_text())["volumes"]["data"]["name"] == "${DATA_VOLUME:-2048-gamev2_data}"
    named = hostile(tmp_path, "app", "services:\n  web:\n    image: nginx\n    ports: ['8080:80']\n    volumes: [data:/d]\nvolumes:\n  data:\n")
    (named / ".env").write_text("COMPOSE_PROJECT_NAME=prod\n")
    assert adopt(named).returncode == 0
    assert yaml.safe_load((named / "compose.yaml").read_text())["volumes"]["data"]["name"] == "${DATA_VOLUME:-prod_data}"


def test_an_override_files_ports_get_their_own_variables_and_network_mode_gets_no_alias(tmp_path):
    repo = hostile(
        tmp_path, "ovr",
        "services:\n  vpn:\n    image: gluetun\n    ports: ['8888:8888']\n  web:\n    image: nginx\n    ports: ['8080:80']\n"
        "  app:\n    image: x\n    container_name: myapp\n    network_mode: 'service:vpn'\n",
    )
    (repo / "compose.override.yaml").write_text("services:\n  web:\n    ports: ['8443:443']\n")
    assert adopt(repo).returncode == 0, "refused"
    stack = yaml.safe_load((repo / "stack.yml").read_text())["services"]
    assert stack["web"]["host_port"] == 8080 and stack["web-443"]["host_port"] == 8443
    assert yaml.safe_load((repo / "compose.override.yaml").read_text())["services"]["web"]["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:${WEB_443_PORT:-8443}:443"]
    app = yaml.safe_load((repo / "compose.yaml").read_text())["services"]["app"]
    assert "networks" not in app and "container_name" not in app


# ---------------------------------------------------------------- compose files as compose finds them
def committed(tmp_path: Path, name: str, files: dict) -> Path:
    """A git repository of `files` ({relative path: text}), committed."""
    repo = tmp_path / name
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "theirs")
    return repo


WEB = "services:\n  web:\n    image: nginx\n    ports: ['8080:80']\n"


def compose_files_of(repo: Path) -> list:
    return yaml.safe_load((repo / "stack.yml").read_text())["compose"]["files"]


@pytest.mark.parametrize(
    "files, expected",
    [
        pytest.param({"docker-compose.yml": WEB}, ["docker-compose.yml"], id="docker-compose.yml"),
        pytest.param({"docker-compose.yml": WEB, "docker-compose.override.yml": "services:\n  web:\n    environment: {A: b}\n"},
                     ["docker-compose.yml", "docker-compose.override.yml"], id="with-override"),
        pytest.param({"compose.yaml": WEB, "docker-compose.yml": "services: {}\n"}, ["compose.yaml"], id="compose.yaml-first"),
        pytest.param({"docker-compose.yml": WEB, "docker-compose.yaml": "services: {}\n"}, ["docker-compose.yml"], id="yml-before-yaml"),
        pytest.param({"compose.yml": WEB, "compose.override.yaml": "services:\n  web:\n    environment: {A: b}\n"},
                     ["compose.yml", "compose.override.yaml"], id="compose.yml-and-override"),
        pytest.param({"base.yml": WEB, "dev.yml": "services:\n  web:\n    environment: {A: b}\n", "compose.yaml": "services: {}\n",
                      ".env": "COMPOSE_FILE=base.yml:dev.yml\n"}, ["base.yml", "dev.yml"], id="COMPOSE_FILE-in-.env"),
    ],
)
def test_the_file_set_is_the_one_compose_itself_uses(tmp_path, files, expected, docker_engine):
    repo = committed(tmp_path, "files", files)
    by_hand = json.loads(subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=repo, capture_output=True, text=True, check=True).stdout)
    out = adopt(repo)
    assert out.returncode == 0, out.stderr
    assert compose_files_of(repo) == expected
    assert "web" in by_hand["services"]  # the set compose picks holds the service adopt converted
    for name in set(files) - set(expected) - {".env"}:
        assert (repo / name).read_text() == files[name], f"{name} is not in compose's set and must stay as it is"


def test_compose_profiles_from_dotenv_are_recorded_and_used(tmp_path, docker_engine):
    repo = committed(tmp_path, "profiles", {
        "compose.yaml": WEB + "  extra:\n    image: nginx\n    profiles: [debug]\n    ports: ['8081:80']\n",
        ".env": "COMPOSE_PROFILES=debug\n",
    })
    assert adopt(repo).returncode == 0
    assert yaml.safe_load((repo / "stack.yml").read_text())["compose"]["profiles"] == ["debug"]
    from parallel_stacks import composecli as compose_run

    from parallel_stacks.model import Copy

    copy = Copy({"STACK_WORKTREE": str(repo), "COMPOSE_PROJECT_NAME": "profiles-22000"}, ())
    args = compose_run.base_args(Settings({}), ["docker", "compose"], copy)
    assert args == ["docker", "compose", "-p", "profiles-22000", "-f", str(repo / "compose.yaml"), "--profile", "debug", "--project-directory", str(repo)]


BAD_INPUT = [
    pytest.param({"compose.yaml": WEB + "    depends_on: [nowhere]\n"},
                 "docker compose refuses compose.yaml as it is", id="compose-rejects-it"),
    pytest.param({"compose.yaml": WEB, ".env": "COMPOSE_FILE=compose.yaml:compose.dev.yaml\n"},
                 "COMPOSE_FILE names compose.dev.yaml, which does not exist", id="COMPOSE_FILE-missing-file"),
    pytest.param({"compose.yaml": WEB, ".env": "COMPOSE_FILE=compose.yaml:../elsewhere.yaml\n"},
                 "COMPOSE_FILE names ../elsewhere.yaml, outside the repository", id="COMPOSE_FILE-outside"),
]


@pytest.mark.parametrize("files, problem", BAD_INPUT)
def test_bad_compose_input_is_one_line_and_nothing_is_written(tmp_path, files, problem, docker_engine):
    repo = committed(tmp_path, "bad", files)
    outside = tree_digest(tmp_path)
    out = adopt(repo)
    assert out.returncode == 2, out.stdout
    line = one_error_line(out.stderr)
    assert problem in line and line.endswith("; nothing changed"), line
    assert tree_digest(tmp_path) == outside and git(repo, "status", "--porcelain", "--ignored") == ""


# ---------------------------------------------------------------- a namespace that cannot collide
APP_ENV = """\
services:
  postgres:
    image: postgres:${POSTGRES_VERSION:-16}
    environment:
      POSTGRES_PASSWORD: app
    ports:
      - "5432:5432"
  redis:
    image: redis:7
    ports:
      - "6379:6379"
  app:
    image: python:3.12-slim
    command: ["sleep", "infinity"]
    environment:
      REDIS_PORT: ${REDIS_PORT:-6379}
      DATABASE_URL: ${DATABASE_URL:-postgresql://postgres:app@postgres:5432/postgres}
      CLICKHOUSE_URL: ${CLICKHOUSE_URL:-http://clickhouse:8123}
      BIND_ADDRESS: ${BIND_ADDRESS:-app-side}
"""
APP_ORIGINAL = {"REDIS_PORT": "6379", "DATABASE_URL": "postgresql://postgres:app@postgres:5432/postgres",
                "CLICKHOUSE_URL": "http://clickhouse:8123", "BIND_ADDRESS": "app-side"}


def test_adoption_variables_never_shadow_the_teams_own(tmp_path):
    repo = committed(tmp_path, "shop", {"compose.yaml": APP_ENV})
    assert adopt(repo).returncode == 0
    variables = yaml.safe_load((repo / "stack.yml").read_text())["compose"]["variables"]
    assert variables["STACK_REDIS_PORT"] == "REDIS_PORT" and "REDIS_PORT" not in variables
    assert variables["STACK_BIND_ADDRESS"] == "BIND_ADDRESS" and variables["POSTGRES_PORT"] == "POSTGRES_PORT"
    assert not set(variables) & set(APP_ORIGINAL)
    compose = (repo / "compose.yaml").read_text()
    assert '"${STACK_BIND_ADDRESS:-127.0.0.1}:${STACK_REDIS_PORT:-6379}:6379"' in compose
    from parallel_stacks import derive

    env = {k: v for k, v in os.environ.items() if k not in APP_ORIGINAL}
    copy, compose_env = derive.compose_environment(repo, Settings({**env, "PORT_OFFSET": "22000"}))
    assert copy.env["REDIS_URL"].endswith(":28379/0") and copy.service("redis").port == 28379  # the helper's own names, for make env
    assert compose_env["STACK_REDIS_PORT"] == "28379" and compose_env["POSTGRES_PORT"] == "27432"
    for name in ("REDIS_PORT", "DATABASE_URL", "REDIS_URL", "POSTGRES_URL", "CLICKHOUSE_URL", "BIND_ADDRESS", "STACK_BIND_ADDRESS"):
        assert name not in compose_env, f"compose would interpolate the helper's {name}"
    second = adopt(repo)
    assert "already adopted; nothing to change" in second.stdout, second.stdout


@pytest.mark.docker
def test_the_app_container_sees_its_own_values_in_every_copy(tmp_path, stand_ins, image_env):
    repo = committed(tmp_path, "shop", {"compose.yaml": APP_ENV})
    assert adopt(repo).returncode == 0
    env = {"STACK_PYTHON": sys.executable, "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state"), "NAMED_URLS_PORT": "off"}
    try:
        for offset in OFFSETS:
            make(repo, "stack-up", PORT_OFFSET=str(offset), **env)
            seen = subprocess.run(["docker", "exec", f"shop-{offset}-app-1", "env"], capture_output=True, text=True, check=True).stdout
            container_env = dict(line.split("=", 1) for line in seen.splitlines() if "=" in line)
            assert {k: container_env.get(k) for k in APP_ORIGINAL} == APP_ORIGINAL, offset
            with connect(f"postgresql://postgres:app@127.0.0.1:{5432 + offset}/postgres") as conn:
                assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        for offset in OFFSETS:
            make(repo, "stack-nuke", check=False, PORT_OFFSET=str(offset), FORCE="1", **env)


# ---------------------------------------------------------------- fidelity: only the lines that must change
FAITHFUL = """\
---
# the team's stack
services:
  db:
    image: docker.io/library/postgres:${POSTGRES_VERSION:-16}
    container_name: shop-db   # fixed name
    environment:
      POSTGRES_PASSWORD: shop
    ports:
      - 127.0.0.1:5432:5432  # local only
  cache:
    image: redis:7
    ports: ["6379:6379"]
  web:
    image: nginx
    ports:
      # the app, on the port .env gives it
      - "$APP_BIND:80"
      - target: 443
        published: 8443
        name: https
        app_protocol: https
      - target: 8081
        published: "8081"
        host_ip: 0.0.0.0
    volumes:
      - ./site:/usr/share/nginx/html:ro   # shared: code, not data
"""
FAITHFUL_AFTER = {  # every line adopt changes, and what it becomes
    "    container_name: shop-db   # fixed name": "    # fixed name\n    networks:\n      default:\n        aliases:\n          - shop-db",
    "      - 127.0.0.1:5432:5432  # local only": '      - "${BIND_ADDRESS:-127.0.0.1}:${DB_PORT:-5432}:5432"  # local only',
    '    ports: ["6379:6379"]': '    ports: ["${BIND_ADDRESS:-127.0.0.1}:${CACHE_PORT:-6379}:6379"]',
    '      - "$APP_BIND:80"': '      - "${BIND_ADDRESS:-127.0.0.1}:${WEB_PORT:-${APP_BIND}}:80"',
    "        published: 8443": '        host_ip: "${BIND_ADDRESS:-127.0.0.1}"\n        published: "${WEB_443_PORT:-8443}"',
    '        published: "8081"': '        published: "${WEB_8081_PORT:-8081}"',
    "        host_ip: 0.0.0.0": '        host_ip: "${BIND_ADDRESS:-0.0.0.0}"',
}


def by_hand(repo: Path) -> dict:
    out = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=repo, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_only_the_lines_that_must_change_change(tmp_path, docker_engine):
    override = "# nothing to convert here\nservices:\n    web:\n        environment:\n            - MODE=dev\n"
    repo = committed(tmp_path, "shop", {"docker-compose.yml": FAITHFUL, "docker-compose.override.yml": override, ".env": "APP_BIND=9000\n"})
    before = by_hand(repo)
    out = adopt(repo)
    assert out.returncode == 0, out.stderr
    after_text = (repo / "docker-compose.yml").read_text()
    expected = FAITHFUL
    for old, new in FAITHFUL_AFTER.items():
        assert expected.count(old + "\n") == 1, old
        expected = expected.replace(old + "\n", new + "\n")
    assert after_text == expected
    assert (repo / "docker-compose.override.yml").read_text() == override, "a file with nothing to convert was rewritten"
    assert "--- a/docker-compose.override.yml" not in out.stdout  # not even in the diff
    assert not list(repo.glob("*.orig")), "a .orig beside a git-tracked file"
    stack = yaml.safe_load((repo / "stack.yml").read_text())
    assert stack["services"]["web"]["host_port"] == 9000 and stack["compose"]["files"] == ["docker-compose.yml", "docker-compose.override.yml"]
    # by hand: the same model but for the documented changes (loopback default, container_name as an alias)
    after = by_hand(repo)
    for name, svc in before["services"].items():
        new = dict(after["services"][name])
        old = dict(svc)
        if name == "db":
            assert old.pop("container_name") == "shop-db" and "container_name" not in new
            assert new.pop("networks") == {"default": {"aliases": ["shop-db"]}} and old.pop("networks") == {"default": None}
        for port in new.get("ports", []):
            original = next(p for p in old["ports"] if p["target"] == port["target"])
            assert port.pop("host_ip") == original.get("host_ip", "127.0.0.1")
            original.pop("host_ip", None)
        assert new == old, name
    # .env still drives the port by hand
    (repo / ".env").write_text("APP_BIND=9100\n")
    assert [p["published"] for p in by_hand(repo)["services"]["web"]["ports"] if p["target"] == 80] == ["9100"]


def test_untracked_files_keep_an_orig(tmp_path):
    repo = hostile(tmp_path, "plain", WEB)
    assert adopt(repo).returncode == 0
    assert (repo / "compose.yaml.orig").read_text() == WEB


# ---------------------------------------------------------------- bind-mounted data, SERVICES, doctor
DATA_APP = """\
services:
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: app
    ports:
      - "5432:5432"
    volumes:
      - ./pgdata:/var/lib/postgresql/data
      - ./init:/docker-entrypoint-initdb.d:ro
  redis:
    image: redis:7
    ports:
      - "6379:6379"
  app:
    build: ./app
    ports:
      - "8000:8000"
    depends_on: [db]
"""
BROKEN_APP = {"app/Dockerfile": "FROM scratch\nRUN false\n", "init/.keep": ""}


def test_a_bind_mounted_data_directory_becomes_per_copy(tmp_path):
    repo = committed(tmp_path, "data", {"compose.yaml": DATA_APP, **BROKEN_APP})
    out = adopt(repo)
    assert out.returncode == 0, out.stderr
    compose = yaml.safe_load((repo / "compose.yaml").read_text())
    assert compose["services"]["db"]["volumes"] == ["${DB_DATA_DIR:-./pgdata}:/var/lib/postgresql/data", "./init:/docker-entrypoint-initdb.d:ro"]
    stack = yaml.safe_load((repo / "stack.yml").read_text())
    assert stack["compose"]["data_dirs"] == {"DB_DATA_DIR": "pgdata"}
    assert ".stack-data/" in (repo / ".gitignore").read_text().splitlines()
    assert "note: shared by every copy (bind mounts of config or code): db:./init" in out.stdout
    from parallel_stacks import derive

    copy, env = derive.compose_environment(repo, Settings({"PORT_OFFSET": "22000", "PATH": os.environ["PATH"]}))
    assert env["DB_DATA_DIR"] == copy.env["DB_DATA_DIR"] == str(repo / ".stack-data" / "data-22000" / "pgdata")


def test_a_data_directory_outside_the_repository_stays_shared_with_one_warning(tmp_path):
    outside = DATA_APP.replace("./pgdata:", "../shared-pgdata:")
    repo = committed(tmp_path, "data", {"compose.yaml": outside, **BROKEN_APP})
    before = tree_digest(tmp_path)
    out = adopt(repo)
    assert out.returncode == 0, out.stderr
    warnings = [ln for ln in out.stdout.splitlines() if ln.startswith("warning:")]
    assert warnings == ["warning: compose.yaml: service db keeps its data (/var/lib/postgresql/data) in ../shared-pgdata, outside the repository: every copy shares it"]
    assert "../shared-pgdata:/var/lib/postgresql/data" in (repo / "compose.yaml").read_text()
    assert "data_dirs" not in yaml.safe_load((repo / "stack.yml").read_text())["compose"]
    assert {k: v for k, v in tree_digest(tmp_path).items() if not k.startswith("data/")} == {k: v for k, v in before.items() if not k.startswith("data/")}
    assert not (tmp_path / "shared-pgdata").exists(), "adopt wrote outside the repository"


@pytest.mark.docker
def test_two_copies_of_a_bind_mounted_database_and_only_the_services_asked_for(tmp_path, stand_ins, image_env):
    """SERVICES="db redis": the app (whose image cannot even be built) is not needed; each copy's data in its own directory."""
    repo = committed(tmp_path, "data", {"compose.yaml": DATA_APP, **BROKEN_APP})
    assert adopt(repo).returncode == 0
    env = {"STACK_PYTHON": sys.executable, "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state"), "NAMED_URLS_PORT": "off"}
    doctor = make(repo, "stack-doctor", check=False, PORT_OFFSET=str(OFFSETS[0]), **env)
    assert "ok    compose files: compose.yaml accepted by compose" in doctor.stdout, doctor.stdout
    failed = make(repo, "stack-up", check=False, PORT_OFFSET=str(OFFSETS[0]), **env)
    assert failed.returncode != 0 and containers(f"data-{OFFSETS[0]}") == []  # the whole copy: the build fails first
    try:
        for offset in OFFSETS:
            make(repo, "stack-up", PORT_OFFSET=str(offset), SERVICES="db redis", **env)
            names = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter", f"label=com.docker.compose.project=data-{offset}"],
                                   capture_output=True, text=True, check=True).stdout.split()
            assert sorted(names) == [f"data-{offset}-db-1", f"data-{offset}-redis-1"]
        with connect(f"postgresql://postgres:app@127.0.0.1:{5432 + OFFSETS[0]}/postgres") as conn:
            conn.execute("CREATE TABLE mark (v text)")
        with connect(f"postgresql://postgres:app@127.0.0.1:{5432 + OFFSETS[1]}/postgres") as conn:
            assert conn.execute("SELECT to_regclass('public.mark')").fetchone()[0] is None
        for offset in OFFSETS:
            assert (repo / ".stack-data" / f"data-{offset}" / "pgdata" / "PG_VERSION").is_file()
        assert not (repo / "pgdata").exists(), "a copy used the by-hand data directory"
        assert git(repo, "status", "--porcelain", ".stack-data") == ""  # gitignored
        unknown = make(repo, "stack-up", check=False, PORT_OFFSET=str(OFFSETS[0]), SERVICES="db nosuch", **env)
        assert unknown.returncode != 0 and one_error_line(unknown.stderr).startswith("error: SERVICES names nosuch, not a service of this copy")
        make(repo, "stack-nuke", PORT_OFFSET=str(OFFSETS[0]), FORCE="1", **env)
        assert not (repo / ".stack-data" / f"data-{OFFSETS[0]}").exists()
        assert (repo / ".stack-data" / f"data-{OFFSETS[1]}" / "pgdata" / "PG_VERSION").is_file()
        with connect(f"postgresql://postgres:app@127.0.0.1:{5432 + OFFSETS[1]}/postgres") as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        for offset in OFFSETS:
            make(repo, "stack-nuke", check=False, PORT_OFFSET=str(offset), FORCE="1", **env)
