"""Bake the template with supported and rejected answers (pytest-cookies)."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PACKAGE, TEMPLATE, one_error_line
from parallel_stacks import basics, config, derive
from parallel_stacks.settings import Settings
from parallel_stacks.basics import StackError

SUPPORTED = [
    pytest.param({}, id="defaults"),
    pytest.param({"with_redis": False}, id="no-redis"),
    pytest.param({"with_mqtt": False}, id="no-mqtt"),
    pytest.param({"with_ui": False}, id="no-ui"),
    pytest.param({"with_redis": False, "with_mqtt": False, "with_ui": False}, id="postgres-and-api-only"),
    pytest.param({"project": "a"}, id="one-letter-slug"),
    pytest.param({"project": "my_app-2"}, id="slug-underscore-dash-digit"),
    pytest.param({"project_name": "Café Ünïcødé"}, id="unicode-name-slugified"),
    pytest.param({"project_name": "It's \"quoted\" $(shell touch /tmp/pwned) `id` \\ ; & |"}, id="hostile-name"),
    pytest.param({"description": "Uses \"quotes\", 'single', $HOME, ${PATH}, \\n and # hashes"}, id="hostile-description"),
    pytest.param({"project_name": "Space Station 9"}, id="spaces-in-name"),
    pytest.param({"postgres_user": "_svc_user"}, id="pg-user-underscore"),
]

REJECTED = [
    pytest.param({"project": "My Project"}, "project", id="slug-space"),
    pytest.param({"project": "Demo"}, "project", id="slug-uppercase"),
    pytest.param({"project": "1demo"}, "project", id="slug-leading-digit"),
    pytest.param({"project": "-demo"}, "project", id="slug-leading-dash"),
    pytest.param({"project": "café"}, "project", id="slug-unicode"),
    pytest.param({"project": "a\"b"}, "project", id="slug-quote"),
    pytest.param({"project": "a;rm -rf ~"}, "project", id="slug-shell"),
    pytest.param({"project": "$(shell id)"}, "project", id="slug-make-metachar"),
    pytest.param({"project": "a/b"}, "project", id="slug-slash"),
    pytest.param({"project": "x" * 41}, "project", id="slug-too-long"),
    pytest.param({"project_name": "123"}, "project", id="name-slugifies-to-digits"),
    pytest.param({"postgres_user": "Bad-User"}, "postgres_user", id="pg-user-dash"),
    pytest.param({"postgres_user": "a b"}, "postgres_user", id="pg-user-space"),
    pytest.param({"description": "two\nlines"}, "description", id="description-newline"),
]

TEMPLATE_LEFTOVER = re.compile(r"\{\{\s*cookiecutter\.|\{%|%\}")


def all_files(path):
    return [p for p in path.rglob("*") if p.is_file()]


def assert_clean_bake(result):
    assert result.exit_code == 0, result.exception
    assert result.exception is None
    project = result.project_path
    for file in all_files(project):
        text = file.read_text(encoding="utf-8", errors="replace")
        assert not TEMPLATE_LEFTOVER.search(text), f"template tag left in {file.relative_to(project)}"
    return project


def compose_vars(text: str) -> set[str]:
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", code))


@pytest.mark.parametrize("answers", SUPPORTED)
def test_supported_answers_bake_a_consistent_project(cookies, answers, tmp_path):
    result = cookies.bake(extra_context=answers)
    project = assert_clean_bake(result)
    slug = result.context["project"]
    assert project.name == slug

    stack = yaml.safe_load((project / "stack.yml").read_text())
    compose_text = (project / "compose.yaml").read_text()
    compose = yaml.safe_load(compose_text)

    expected = {"postgres", "api"} | ({"redis"} if result.context["with_redis"] else set()) | (
        {"ui"} if result.context["with_ui"] else set()
    ) | ({"mqtt"} if result.context["with_mqtt"] else set())
    assert set(stack["services"]) == expected
    assert set(compose["services"]) == expected, "compose and stack.yml must declare the same services"
    assert stack["project"] == slug
    assert (project / "ui").exists() == result.context["with_ui"]
    assert (project / "mqtt" / "mosquitto.conf").exists() == (project / "tests" / "test_events.py").exists() == result.context["with_mqtt"]

    for name, svc in compose["services"].items():
        assert "container_name" not in svc
        assert "healthcheck" in svc, f"{name} has no healthcheck"
        for port in svc.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), port
            var = basics.var_name(name)
            assert f"${{{var}_PORT:?" in port, port
    assert compose["volumes"]["db_data"]["name"].startswith("${DB_DATA_VOLUME")
    assert compose["services"]["postgres"]["image"].startswith("${POSTGRES_IMAGE:-")

    # every variable compose reads is derived by the helpers or an optional override
    derived = derive.load(project, Settings({"POSTGRES_PASSWORD": "x"}))
    optional = {"POSTGRES_IMAGE", "REDIS_IMAGE", "MOSQUITTO_IMAGE", "PYTHON_IMAGE"}
    assert compose_vars(compose_text) - set(derived) <= optional

    workflow = yaml.safe_load((project / ".github" / "workflows" / "tests.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    assert "make test-parallel" in runs and "FORCE=1 make nuke" in runs
    assert workflow["jobs"]["test"]["concurrency"]["group"].startswith("tests-${{ github.workflow }}")

    import configparser

    ini = configparser.ConfigParser()
    ini.read(project / "pytest.ini")
    markers = {line.split(":")[0].strip() for line in ini["pytest"]["markers"].strip().splitlines()}
    assert markers == {"unit", "api", "processing", "e2e"}
    assert "--strict-markers" in ini["pytest"]["addopts"]

    # dev, test and ci copies coexist: distinct names, volumes and ports
    # (ENV=ci claims a PORT_OFFSET=auto slot: in a registry of this test's own, never this machine's)
    state = {"PARALLEL_STACKS_STATE_DIR": str(tmp_path / "registry")}
    copies = [derive.load(project, Settings({"ENV": e, "POSTGRES_PASSWORD": "x", **state})) for e in ("dev", "test", "ci")]
    for key in ("COMPOSE_PROJECT_NAME", "DB_DATA_VOLUME", "POSTGRES_PORT", "API_PORT"):
        assert len({c[key] for c in copies}) == 3, key

    # the helper package copied verbatim (no rendering), so the tests' imports are the real ones
    baked = sorted(p.relative_to(project / "tools" / "parallel_stacks") for p in (project / "tools" / "parallel_stacks").rglob("*.py"))
    assert baked == sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")) and len(baked) > 20
    for relative in baked:
        assert (project / "tools" / "parallel_stacks" / relative).read_bytes() == (PACKAGE / relative).read_bytes(), relative
    assert not list((project / "tools").rglob("__pycache__")), "bytecode of the template's test runs was baked in"


# The linters come from env/requirements-dev.txt, installed next to this interpreter.
VENV_BIN = Path(sys.executable).parent


def run_linter(tool: str, *args: str) -> subprocess.CompletedProcess:
    exe = VENV_BIN / tool
    assert exe.is_file(), f"{exe} missing: pip install -r env/requirements-dev.txt"
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("answers", SUPPORTED)
def test_baked_workflow_passes_zizmor_and_schema(cookies, answers):
    """Every supported variant's CI workflow: no zizmor findings and a valid workflow schema."""
    project = assert_clean_bake(cookies.bake(extra_context=answers))
    workflow = project / ".github" / "workflows" / "tests.yml"
    # zizmor exits 0 only with no findings; 10-14 mean findings (by highest severity), 1-2 tool errors.
    # --no-config: no zizmor.yml can silence an audit; --offline: no GitHub API calls.
    audit = run_linter("zizmor", "--offline", "--no-config", str(workflow))
    assert audit.returncode == 0, f"zizmor exit {audit.returncode}:\n{audit.stdout}\n{audit.stderr}"
    schema = run_linter("check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow))
    assert schema.returncode == 0, f"check-jsonschema exit {schema.returncode}:\n{schema.stdout}\n{schema.stderr}"


@pytest.mark.parametrize("answers", SUPPORTED[:1] + SUPPORTED[7:8])
def test_baked_secrets_are_private_ignored_and_unique(cookies, answers):
    first = assert_clean_bake(cookies.bake(extra_context=answers))
    local = first / "env" / "local.env"
    assert stat.S_IMODE(os.stat(local).st_mode) == 0o600
    password = config.read_env_file(local)["POSTGRES_PASSWORD"]
    assert len(password) >= 30
    assert "env/local.env" in (first / ".gitignore").read_text().splitlines()
    for file in all_files(first):
        if file != local:
            assert password not in file.read_text(encoding="utf-8", errors="replace"), file
    second = assert_clean_bake(cookies.bake(extra_context=answers))
    assert config.read_env_file(second / "env" / "local.env")["POSTGRES_PASSWORD"] != password


def test_git_ignores_the_secret_file(cookies):
    project = assert_clean_bake(cookies.bake())
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    tracked = subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True, check=True).stdout.split()
    assert "env/local.env" not in tracked
    assert "stack.yml" in tracked and "env/dev.env" in tracked


@pytest.mark.parametrize("answers, field", REJECTED)
def test_rejected_answers_fail_with_one_line(cookies, capfd, answers, field):
    result = cookies.bake(extra_context=answers)
    assert result.exit_code != 0
    assert result.project_path is None or not result.project_path.exists()
    assert one_error_line(capfd.readouterr().err).startswith(f"error: {field}")


@pytest.mark.parametrize("answers", [SUPPORTED[0], SUPPORTED[3], SUPPORTED[7]])
def test_baked_makefile_runs(cookies, answers):
    project = assert_clean_bake(cookies.bake(extra_context=answers))
    env = {**os.environ, "PYTHON": sys.executable, "PARALLEL_STACKS_STATE_DIR": str(project.parent / "registry")}
    env.pop("PORT_OFFSET", None)
    out = subprocess.run(["make"], cwd=project, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for target in ("up", "down", "ps", "logs", "ports", "env", "check-ports", "nuke", "psql", "release", "slots", "dashboard", "dashboard-stop", "gc", "doctor", "lint",
                   "test", "test-parallel", "test-unit", "test-integration", "test-processing"):
        assert re.search(rf"^\s+{target}\s+\S", out.stdout, re.M), f"`make help` lacks {target}"
    assert_help_aligned(out.stdout)
    ports = subprocess.run(["make", "ports"], cwd=project, env={**env, "PORT_OFFSET": "10000"}, capture_output=True, text=True)
    assert ports.returncode == 0, ports.stderr
    assert "127.0.0.1:18003" in ports.stdout and "127.0.0.1:15432" in ports.stdout
    task = subprocess.run(["make", "env"], cwd=project, env={**env, "TASK_ID": "ci-suite-tests-parallele-zenflow-9947"}, capture_output=True, text=True)
    assert "PORT_OFFSET=9470" in task.stdout.splitlines() and "PORT_OFFSET_SOURCE=TASK_ID (unclaimed)" in task.stdout.splitlines()  # make env claims nothing
    bad = subprocess.run(["make", "up"], cwd=project, env={**env, "TASK_ID": "no-number"}, capture_output=True, text=True)
    assert bad.returncode != 0 and "TASK_ID='no-number' (from environment) has no numeric suffix" in bad.stderr


def assert_help_aligned(text: str) -> None:
    """Every target's description starts in one column, whatever the target's length."""
    columns = {m.start(2) for m in map(re.compile(r"^  ([a-z][a-z-]*) +(\S)").match, text.splitlines()) if m}
    assert len(columns) == 1, f"`make help` descriptions start at columns {sorted(columns)}:\n{text}"


def test_template_help_is_aligned():
    out = subprocess.run(["make", "help"], cwd=TEMPLATE, capture_output=True, text=True, check=True)
    assert "demo-clean" in out.stdout
    assert_help_aligned(out.stdout)


def test_hostile_name_does_not_execute(cookies, tmp_path):
    marker = "/tmp/pwned"
    if os.path.exists(marker):
        os.remove(marker)
    project = assert_clean_bake(cookies.bake(extra_context=SUPPORTED[7].values[0]))
    env = {**os.environ, "PYTHON": sys.executable}
    for target in ("help", "env", "ports"):
        subprocess.run(["make", target], cwd=project, env=env, capture_output=True, check=True)
    assert not os.path.exists(marker)


def test_fresh_project_installs_its_own_virtualenv(cookies):
    """A user's fresh clone: no PYTHON given, so make builds .venv from requirements-dev.txt."""
    project = assert_clean_bake(cookies.bake())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PORT_OFFSET", "VIRTUAL_ENV", "UV")}
    out = subprocess.run(["make", "env"], cwd=project, env={**env, "PORT_OFFSET": "10000"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert (project / ".venv" / ".installed").exists()
    assert "POSTGRES_PORT=15432" in out.stdout.splitlines()
    # it says what it is doing, and did it with uv (fetched once per user when not on PATH)
    assert "setup: creating .venv (first run only)" in out.stderr and "setup: .venv ready (uv)" in out.stderr, out.stderr
    again = subprocess.run(["make", "env"], cwd=project, env=env, capture_output=True, text=True)
    assert "POSTGRES_PORT=5432" in again.stdout.splitlines() and "setup:" not in again.stderr


def test_virtualenv_falls_back_to_pip(cookies):
    """UV=none (or no way to get uv): plain venv + pip, the same packages."""
    project = assert_clean_bake(cookies.bake())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PORT_OFFSET", "VIRTUAL_ENV")}
    out = subprocess.run(["make", "env"], cwd=project, env={**env, "UV": "none"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "setup: .venv ready (pip)" in out.stderr, out.stderr
    assert (project / ".venv" / "bin" / "pip").exists()  # a pip-made venv (uv's has no pip)
    assert "POSTGRES_PORT=5432" in out.stdout.splitlines()


def load_demo():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_script", TEMPLATE / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_hint_lines_each_run_on_their_own(tmp_path):
    """Pasted, `make ports | make ps | make nuke` piped the commands and ran the last two at offset 0."""
    demo = load_demo()
    lines = demo.hint(tmp_path / "with space" / "demo-stack")
    assert lines[0] == f"cd '{tmp_path}/with space/demo-stack'"
    for line in lines[1:]:
        words = __import__("shlex").split(line)
        assert words[0] == f"PORT_OFFSET={demo.OFFSETS[1]}" and words[1] == "make", line
        assert not set("|;&") & set(line.replace("'select version()'", "")), line


def test_demo_clean_leaves_no_build_directory(tmp_path):
    build = tmp_path / "build"
    (build / "demo" / "other-leftover").mkdir(parents=True)
    env = {**os.environ, "DEMO_DIR": str(build / "demo")}
    out = subprocess.run([sys.executable, str(TEMPLATE / "scripts" / "demo.py"), "--clean"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not build.exists()
    (build / "demo").mkdir(parents=True)
    (build / "bench").mkdir()  # build/ holds something else: only build/demo goes
    subprocess.run([sys.executable, str(TEMPLATE / "scripts" / "demo.py"), "--clean"], env=env, check=True, capture_output=True)
    assert not (build / "demo").exists() and (build / "bench").exists()


def test_baked_project_lint_passes(cookies):
    """ruff and mypy --strict on the baked helper package, through the project's own `make lint`."""
    project = assert_clean_bake(cookies.bake())
    out = subprocess.run(["make", "lint"], cwd=project, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout


MEMCACHED_KIND = '''\
"""Kind `memcached`: a cache server, reached as memcached://host:port."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Kind, Service


class Memcached(Kind):
    name = "memcached"
    one_per_stack = True
    variables = ("MEMCACHED_URL",)

    def url_variable(self, service: Service) -> str:
        return "MEMCACHED_URL"

    def url(self, service: Service, values: Mapping[str, str]) -> str:
        return f"memcached://{service.host}:{service.port}"


KIND = Memcached()
'''


def seconds(duration) -> float:
    """A compose duration ("30s", "1m30s", "500ms", "1h") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def test_seconds_reads_compose_durations():
    assert seconds("30s") == 30 and seconds("1m30s") == 90 and seconds("500ms") == 0.5 and seconds("1h") == 3600
    with pytest.raises(AssertionError):
        seconds("30")


@pytest.mark.parametrize("answers", SUPPORTED[:5])
def test_health_checks_poll_fast_while_starting_and_rarely_once_healthy(cookies, answers):
    """Issue 28: idle copies cost next to nothing (a check every 30 s or less often once healthy), a starting
    service is noticed within about a second (start_interval), and no check starts an interpreter."""
    project = assert_clean_bake(cookies.bake(extra_context=answers))
    compose = yaml.safe_load((project / "compose.yaml").read_text())  # parsed: the merged anchor counts, a comment does not
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert "start_interval" in check, f"{name}: no start_interval"
        assert seconds(check["start_interval"]) <= 2, f"{name}: start_interval {check['start_interval']}"
        assert seconds(check["interval"]) >= 30, f"{name}: interval {check['interval']}"
        assert seconds(check["start_period"]) >= 60, f"{name}: start_period {check.get('start_period')} ends before a slow start does"
        assert check.get("retries", 3) >= 1 and seconds(check["timeout"]) <= 10
        test = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
        assert not re.search(r"\bpython3?\b", test), f"{name}'s check starts an interpreter: {test}"


def test_a_new_kind_is_one_module_plus_its_stack_and_compose_entries(cookies, tmp_path):
    project = assert_clean_bake(cookies.bake())
    (project / "tools" / "parallel_stacks" / "kinds" / "memcached.py").write_text(MEMCACHED_KIND)
    with (project / "stack.yml").open("a") as stack:
        stack.write("  cache:\n    kind: memcached\n    container_port: 11211\n    host_port: 11211\n")
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    compose["services"]["cache"] = {
        "image": "memcached:1.6-alpine",
        "ports": ["${BIND_ADDRESS:-127.0.0.1}:${CACHE_PORT:?run through make}:${CACHE_CONTAINER_PORT:?run through make}"],
    }
    (project / "compose.yaml").write_text(yaml.safe_dump(compose, sort_keys=False))
    # this project's own copy of the package (with the new module), not the template's
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(project / "tools"), "PORT_OFFSET": "10000"}
    values = dict(line.split("=", 1) for line in subprocess.run(
        ["make", "env"], cwd=project, env=env, capture_output=True, text=True, check=True).stdout.splitlines())
    assert values["MEMCACHED_URL"] == "memcached://127.0.0.1:21211" and values["CACHE_PORT"] == "21211"
    ports = subprocess.run(["make", "ports"], cwd=project, env=env, capture_output=True, text=True, check=True).stdout
    assert re.search(r"^cache\s+11211\s+127\.0\.0\.1:21211\s+memcached://127\.0\.0\.1:21211$", ports, re.M), ports
    config = subprocess.run(["docker", "compose", "-f", "compose.yaml", "config", "--format", "json"], cwd=project,
                            env={**env, **values}, capture_output=True, text=True)
    assert config.returncode == 0, config.stderr  # compose reads the new service's port from the derived values
    assert json.loads(config.stdout)["services"]["cache"]["ports"][0]["published"] == "21211"
    lint = subprocess.run(["make", "lint"], cwd=project, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr  # the new module meets the package's standard too


def test_two_services_of_a_one_per_stack_kind_are_one_line(tmp_path):
    from conftest import make_worktree

    root = make_worktree(tmp_path / "w")
    with (root / "stack.yml").open("a") as stack:
        stack.write("  reporting-db: {kind: postgres, container_port: 5432, host_port: 5433}\n")
    with pytest.raises(StackError) as info:
        derive.load(root, Settings({"PORT_OFFSET": "0"}))
    message = str(info.value)
    assert "\n" not in message
    assert "service 'reporting-db': a second service of kind postgres (besides 'postgres')" in message
    assert "DATABASE_URL" in message


ORDER_SUITE = '''
import subprocess

import pytest

pytestmark = pytest.mark.unit
NAMES = list({f"name-{i}" for i in range(40)})  # set order: depends on the hash seed


@pytest.mark.parametrize("name", NAMES)
def test_order(name):
    assert name.startswith("name-")


def test_a_console_script_of_the_virtualenv_is_on_path():
    out = subprocess.run(["pytest", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "pytest" in (out.stdout + out.stderr)
'''


def test_make_test_puts_the_interpreters_bin_on_path_and_fixes_the_hash_seed(cookies):
    """Suites parametrised over set order, and suites that spawn console scripts, run unchanged."""
    project = assert_clean_bake(cookies.bake())
    (project / "tests" / "test_order.py").write_text(ORDER_SUITE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "PORT_OFFSET")}
    env.update(PYTHON=sys.executable, PYTEST_WORKERS="2", PATH="/usr/bin:/bin")  # no virtualenv on PATH
    out = subprocess.run(["make", "test-unit", "ARGS=tests/test_order.py"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "41 passed" in out.stdout, out.stdout[-2000:] + out.stderr
    # the user's own seed wins, and a random one shows what the fixed seed prevents
    chosen = subprocess.run(["make", "test-unit", "ARGS=tests/test_order.py"], cwd=project, env={**env, "PYTHONHASHSEED": "random"},
                            capture_output=True, text=True, timeout=300)
    assert chosen.returncode != 0 and "Different tests were collected" in chosen.stdout


def test_a_bad_isolation_env_line_is_one_error_line(cookies):
    project = assert_clean_bake(cookies.bake())
    env = {**os.environ, "PYTHON": sys.executable, "PYTEST_WORKERS": "0"}
    env.pop("PORT_OFFSET", None)
    out = subprocess.run(["make", "test-unit", "ARGS=-o isolation_env=MYLIB_DB={DATABSE_URL}"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if "isolation_env" in ln]
    assert len(lines) == 1 and "names {DATABSE_URL}, not one of this worker's variables" in lines[0], out.stderr


def test_n_auto_runs_a_run_too_small_to_gain_in_one_process(cookies):
    """The worker count follows the work: after a run whose tests took well under two workers'
    start-up, `-n auto` runs the same selection in one process and says why in the header."""
    project = assert_clean_bake(cookies.bake())
    env = {**os.environ, "PYTHON": sys.executable, "PYTEST_WORKERS": "auto"}
    env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    first = subprocess.run(["make", "test-unit"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    assert re.search(r"created: \d+/\d+ worker", first.stdout), "no record yet: the CPUs decide"
    record = json.loads((project / ".pytest_cache" / "v" / "parallel_stacks" / "work").read_text())
    (selection,) = record
    assert "-n" not in selection.split() and "auto" not in selection.split() and "unit" in selection, selection
    assert record[selection]["tests"] >= 5 and record[selection]["seconds"] < 4.0, record
    second = subprocess.run(["make", "test-unit"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr
    assert "-n auto: one process, no workers: the last run of these" in second.stdout, second.stdout[:2000]
    assert "created:" not in second.stdout
    passed = [re.search(r"(\d+) passed", out.stdout).group(1) for out in (first, second)]
    assert passed[0] == passed[1]
    explicit = subprocess.run(["make", "test-unit"], cwd=project, env={**env, "PYTEST_WORKERS": "2"}, capture_output=True, text=True, timeout=300)
    assert "created: 2/2 workers" in explicit.stdout, "an explicit worker count is obeyed as given"


def test_n_auto_follows_the_cpus_this_process_may_use(cookies):
    """xdist's own `auto` counts the machine's cores; under an affinity of one CPU it still started two."""
    import shutil as _shutil

    project = assert_clean_bake(cookies.bake())
    taskset = _shutil.which("taskset")
    assert taskset, "taskset (util-linux) is needed for this test"
    env = {**os.environ, "PYTHON": sys.executable, "PYTEST_WORKERS": "auto"}
    env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    out = subprocess.run([taskset, "-c", "0", "make", "test-unit"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert re.search(r"created: 1/1 worker", out.stdout), out.stdout[:2000]
