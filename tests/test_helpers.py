"""Unit tests of the generated project's helper scripts, imported directly."""
from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import textwrap

import pytest
from dotenv import dotenv_values

from conftest import TEST_STACK_YML, make_worktree
from parallel_stacks import basics, config, derive, localenv
from parallel_stacks.model import Copy
from parallel_stacks.settings import Settings
from parallel_stacks import probe as check_ports
from parallel_stacks.basics import StackError
from parallel_stacks import composecli as compose_run
from parallel_stacks.commands import nuke

STACK = TEST_STACK_YML


@pytest.fixture
def root(tmp_path):
    return make_worktree(tmp_path, "PORT_OFFSET=0\nPOSTGRES_USER=app\n")


def copy_at(root, **environ):
    """The typed copy (model.Copy) `load` derives."""
    return Copy.of(load(root, **environ), derive.services(root))


def load(root, **environ):
    """derive.load with a registry of the test's own, claiming as `make up` does (task ids and build numbers claim slots there)."""
    return derive.load(root, Settings({"PARALLEL_STACKS_STATE_DIR": str(root / ".registry"), **environ}), claim=True)


# ---------------------------------------------------------------- arithmetic
@pytest.mark.parametrize(
    "offset, expected",
    [
        pytest.param("0", {"POSTGRES_PORT": "5432", "REDIS_PORT": "6379", "API_PORT": "8003", "UI_PORT": "3000"}, id="zero"),
        pytest.param("10000", {"POSTGRES_PORT": "15432", "REDIS_PORT": "16379", "API_PORT": "18003", "UI_PORT": "13000"}, id="seed003-10000"),
        pytest.param("20000", {"POSTGRES_PORT": "25432", "API_PORT": "28003", "UI_PORT": "23000"}, id="seed003-20000"),
        pytest.param("57532", {"API_PORT": "65535"}, id="highest-allowed"),
    ],
)
def test_ports_are_base_plus_offset(root, offset, expected):
    values = load(root, PORT_OFFSET=offset)
    for key, port in expected.items():
        assert values[key] == port
    assert values["POSTGRES_CONTAINER_PORT"] == "5432"


def test_names_carry_project_and_offset(root):
    values = load(root, PORT_OFFSET="10000")
    assert values["COMPOSE_PROJECT_NAME"] == "shop-10000"
    assert values["DB_DATA_VOLUME"] == "shop_db_data_10000"
    assert values["STACK_WORKTREE"] == str(root.resolve())


def test_names_differ_per_offset_and_env(root):
    (root / "env" / "test.env").write_text("PORT_OFFSET=500\n")
    names = {
        (load(root, PORT_OFFSET=o, ENV=e)["COMPOSE_PROJECT_NAME"], load(root, PORT_OFFSET=o, ENV=e)["DB_DATA_VOLUME"])
        for o in ("0", "1", "10000")
        for e in ("dev", "test")
    }
    assert len(names) == 6
    assert load(root, ENV="test")["COMPOSE_PROJECT_NAME"] == "shop-test-500"


def test_urls_follow_ports(root):
    values = load(root, PORT_OFFSET="10000", POSTGRES_PASSWORD="pw")
    assert values["DATABASE_URL"] == "postgresql://app:pw@127.0.0.1:15432/shop"
    assert values["REDIS_URL"] == "redis://127.0.0.1:16379/0"
    assert values["API_URL"] == "http://127.0.0.1:18003"
    assert values["UI_URL"] == "http://127.0.0.1:13000"


@pytest.mark.parametrize(
    "bind, host",
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("192.168.1.5", "192.168.1.5")],
    ids=["loopback", "any-v4", "any-v6", "loopback-v6", "lan"],
)
def test_client_host_for_bind_address(root, bind, host):
    values = load(root, BIND_ADDRESS=bind)
    assert values["BIND_ADDRESS"] == bind
    assert values["API_URL"] == f"http://{host}:8003"


# ---------------------------------------------------------------- validation
BAD_OFFSETS = [
    pytest.param("abc", "not a non-negative integer", id="letters"),
    pytest.param("-1", "not a non-negative integer", id="negative"),
    pytest.param("1.5", "not a non-negative integer", id="fraction"),
    pytest.param("", "not a non-negative integer", id="empty"),
    pytest.param(" 10", "not a non-negative integer", id="leading-space"),
    pytest.param("1e3", "not a non-negative integer", id="exponent"),
    pytest.param("\u0663", "not a non-negative integer", id="unicode-digit"),
    pytest.param("70000", "out of range", id="70000"),
    pytest.param("57533", "out of range", id="pushes-api-past-65535"),
]


@pytest.mark.parametrize("raw, problem", BAD_OFFSETS)
def test_bad_offset_is_one_clear_line(root, raw, problem):
    with pytest.raises(StackError) as info:
        load(root, PORT_OFFSET=raw)
    message = str(info.value)
    assert "\n" not in message
    assert problem in message
    assert repr(raw) in message or raw in message
    assert "0-57532" in message and "1024-65535" in message


def test_offset_range_respects_low_bases(root):
    (root / "stack.yml").write_text("project: x\nservices:\n  web: {container_port: 80, host_port: 80}\n")
    with pytest.raises(StackError, match=r"allowed: 0 \(the ports as declared\) or integers 944-65455"):
        load(root, PORT_OFFSET="100")
    assert load(root, PORT_OFFSET="944")["WEB_PORT"] == "1024"
    assert load(root, PORT_OFFSET="0")["WEB_PORT"] == "80"  # as declared: an adopted project's habits stay


def test_bad_offset_in_env_file_names_the_file(root):
    (root / "env" / "local.env").write_text("PORT_OFFSET=oops\n")
    with pytest.raises(StackError, match=r"from env/local.env"):
        load(root)


@pytest.mark.parametrize("durability", ["fast", "OFF", "", "x" * 5000])
def test_bad_postgres_durability_is_one_clear_line(root, durability):
    with pytest.raises(StackError) as info:
        load(root, POSTGRES_DURABILITY=durability) if durability else load(root, POSTGRES_DURABILITY=" ")
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith("POSTGRES_DURABILITY=") and "durable" in message and "off" in message


def test_postgres_durability_decides_the_servers_settings(root):
    assert (load(root)["POSTGRES_DURABILITY"], load(root)["POSTGRES_SYNC"]) == ("durable", "on")
    fast = load(root, POSTGRES_DURABILITY="off")
    assert (fast["POSTGRES_SYNC"], fast["POSTGRES_PGDATA"]) == ("off", "/var/lib/postgresql/tmpfs/data")


@pytest.mark.parametrize("bind", ["localhost", "999.1.1.1", "", "127.0.0.1:80"], ids=["name", "bad-octet", "empty", "with-port"])
def test_bad_bind_address(root, bind):
    with pytest.raises(StackError, match="BIND_ADDRESS"):
        load(root, BIND_ADDRESS=bind)


BAD_STACKS = [
    pytest.param("project: [unclosed\n", "not valid YAML", id="not-yaml"),
    pytest.param("- a\n- b\n", "must be a mapping", id="a-list"),
    pytest.param("project: x\nservices: {}\nextra: 1\n", "unknown top-level", id="unknown-top-key"),
    pytest.param("project: X\nservices:\n  a: {container_port: 1, host_port: 2000}\n", "lowercase slug", id="bad-project"),
    pytest.param("project: x\nservices: {}\n", "non-empty mapping", id="no-services"),
    pytest.param("project: x\nservices:\n  a: {container_port: 1, host_port: 2000, colour: red}\n", "unknown key", id="unknown-service-key"),
    pytest.param("project: x\nservices:\n  a: {container_port: 1}\n", "missing host_port", id="no-host-port"),
    pytest.param("project: x\nservices:\n  a: {host_port: 2000}\n", "missing container_port", id="no-container-port"),
    pytest.param("project: x\nservices:\n  a: {container_port: 1, host_port: 70000}\n", "1-65535", id="port-too-big"),
    pytest.param("project: x\nservices:\n  a: {container_port: 0, host_port: 2000}\n", "1-65535", id="port-zero"),
    pytest.param("project: x\nservices:\n  a: {container_port: '80', host_port: 2000}\n", "1-65535", id="port-string"),
    pytest.param(
        "project: x\nservices:\n  a: {container_port: 1, host_port: 2000}\n  b: {container_port: 1, host_port: 2000}\n",
        "also used by service 'a'",
        id="duplicate-host-port",
    ),
    pytest.param("project: x\nservices:\n  a: {container_port: 1, host_port: 2000, kind: mysql}\n", "kind", id="unknown-kind"),
    pytest.param("project: x\nservices:\n  named_urls: {container_port: 1, host_port: 2000}\n", "NAMED_URLS_PORT", id="reserved-name"),
    pytest.param("project: x\nservices:\n  a: {container_port: 1, host_port: 2000, volumes: [d]}\nvolumes: [d]\n", "also declared", id="top-volume-twice"),
    pytest.param("project: x\nservices:\n  a: {container_port: 1, host_port: 2000}\nvolumes: d\n", "list of names", id="top-volumes-not-list"),
    pytest.param(
        "project: x\nservices:\n  a: {container_port: 1, host_port: 2000, volumes: [d]}\n  b: {container_port: 1, host_port: 2001, volumes: [d]}\n",
        "also declared",
        id="duplicate-volume",
    ),
]


@pytest.mark.parametrize("text, problem", BAD_STACKS)
def test_bad_stack_yml(root, text, problem):
    (root / "stack.yml").write_text(text)
    with pytest.raises(StackError, match=problem) as info:
        load(root)
    assert "\n" not in str(info.value)


def test_missing_stack_yml(root):
    (root / "stack.yml").unlink()
    with pytest.raises(StackError, match="cannot read"):
        load(root)


def test_malformed_env_line_names_file_and_line(root):
    (root / "env" / "dev.env").write_text("PORT_OFFSET=0\n# fine\nthis is not an assignment\n")
    with pytest.raises(StackError, match=r"env/dev.env: line 3 "):
        load(root)


def test_unknown_env_name(root):
    with pytest.raises(StackError, match="env/staging.env does not exist"):
        load(root, ENV="staging")
    with pytest.raises(StackError, match="lowercase name"):
        load(root, ENV="Bad Name")


def test_env_from_the_posix_shell_is_not_ours(root):
    (root / "env" / "test.env").write_text("PORT_OFFSET=1000\n")
    assert load(root, ENV="/home/me/.shrc")["STACK_ENV"] == "dev"
    assert load(root, ENV="test")["STACK_ENV"] == "test"
    assert load(root, ENV="/home/me/.shrc", STACK_ENV="test")["PORT_OFFSET"] == "1000"


# ---------------------------------------------------------------- task ids and CI numbers
SEED_000_STACK = textwrap.dedent(
    """\
    # seed 000's layout: a range per service, slot = task number % 1000
    project: shop
    task_step: 1
    services:
      postgres: {kind: postgres, container_port: 5432, host_port: 10000}
      redis: {kind: redis, container_port: 6379, host_port: 16000}
      api: {kind: http, container_port: 8003, host_port: 18000}
      ui: {kind: http, container_port: 3000, host_port: 15000}
    """
)


def test_seed_000_layout_is_reproduced_exactly(root):
    (root / "stack.yml").write_text(SEED_000_STACK)
    (root / "env" / "dev.env").write_text("")
    values = load(root, TASK_ID="ci-suite-tests-parallele-zenflow-9947")
    assert (values["POSTGRES_PORT"], values["REDIS_PORT"], values["API_PORT"], values["UI_PORT"]) == ("10947", "16947", "18947", "15947")
    assert values["PORT_OFFSET_SOURCE"] == "TASK_ID"
    # (2000 % 9000 + 1000) % 1000 = 0 is the default copy's slot: the next step is taken instead
    assert load(root, ZENFLOW_TASK_ID="task-b-2000")["POSTGRES_PORT"] == "10001"


@pytest.mark.parametrize(
    "task, offset",
    [("ci-suite-tests-parallele-zenflow-9947", 9470), ("task-a-1000", 10), ("fix_login_42", 420), ("1234", 2340), ("agent.7", 70)],
    ids=["seed-000", "seed-000-task-a", "underscore", "digits-only", "dot"],
)
def test_task_id_gives_offset_in_steps_of_ten(root, task, offset):
    (root / "env" / "dev.env").write_text("")
    values = load(root, TASK_ID=task)
    assert values["PORT_OFFSET"] == str(offset)
    assert values["COMPOSE_PROJECT_NAME"] == f"shop-{offset}"


def test_task_ids_that_map_to_one_slot_get_distinct_slots_and_keep_them(root, capsys):
    """Seed 000's own example of two tasks side by side: both ids map to offset 0."""
    (root / "env" / "dev.env").write_text("")
    a, b = load(root, TASK_ID="task-a-1000"), load(root, TASK_ID="task-b-2000")
    assert (a["PORT_OFFSET"], b["PORT_OFFSET"]) == ("10", "20")
    assert "TASK_ID=task-b-2000: preferred PORT_OFFSET=0 is the default copy's; using PORT_OFFSET=20" in capsys.readouterr().err
    assert load(root, TASK_ID="task-b-2000")["PORT_OFFSET"] == "20" and load(root, TASK_ID="task-a-1000")["PORT_OFFSET"] == "10"
    assert load(root, TASK_ID="task-c-1001")["PORT_OFFSET"] == "30"  # its preferred 10 is task a's
    assert load(root, GITHUB_RUN_ID="1000")["PORT_OFFSET"] == "40"
    assert load(root, GITHUB_RUN_ID="5")["PORT_OFFSET"] == "50"  # free: the formula's own slot


def test_a_task_slot_with_a_busy_port_moves_to_the_next_one(root):
    (root / "env" / "dev.env").write_text("")
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 8003 + 4560))
        listener.listen()
        assert load(root, TASK_ID="t-456")["PORT_OFFSET"] == "4570"


def test_ci_jobs_on_one_runner_get_distinct_slots(root, tmp_path):
    (root / "env" / "ci.env").write_text("DEFAULT_PORT_OFFSET=auto\n")
    first = load(root, ENV="ci", CI_BUILD_NUMBER="1005")
    other = make_worktree(tmp_path / "job-2", "")
    (other / "env" / "ci.env").write_text("DEFAULT_PORT_OFFSET=auto\n")
    second = derive.load(other, Settings({"PARALLEL_STACKS_STATE_DIR": str(root / ".registry"), "ENV": "ci", "CI_BUILD_NUMBER": "2005"}), claim=True)
    assert first["PORT_OFFSET"] == "50" and second["PORT_OFFSET"] == "60"
    assert first["COMPOSE_PROJECT_NAME"] != second["COMPOSE_PROJECT_NAME"]
    no_number = load(root, ENV="ci")
    assert no_number["PORT_OFFSET_SOURCE"] == "auto" and int(no_number["PORT_OFFSET"]) % 100 == 0


@pytest.mark.parametrize("var", ["TASK_ID", "CI_BUILD_NUMBER"])
def test_a_five_thousand_digit_number_is_one_line(root, var):
    (root / "env" / "dev.env").write_text("")
    with pytest.raises(StackError) as info:
        load(root, **{var: "t-" * (var == "TASK_ID") + "7" * 5000})
    assert "\n" not in str(info.value) and len(str(info.value)) < 300, str(info.value)


def test_a_five_thousand_digit_offset_is_one_line(root):
    with pytest.raises(StackError, match="is out of range") as info:
        load(root, PORT_OFFSET="7" * 5000)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("task", ["no-number", "task-12a", "", "12-", "task 12 "], ids=["words", "mixed-suffix", "empty", "trailing-dash", "spaces"])
def test_task_id_without_numeric_suffix_is_one_clear_line(root, task):
    (root / "env" / "dev.env").write_text("")
    with pytest.raises(StackError, match="has no numeric suffix") as info:
        load(root, TASK_ID=task)
    assert "\n" not in str(info.value)


def test_offset_precedence_explicit_then_task_then_ci_then_zero(root):
    (root / "env" / "dev.env").write_text("")
    assert load(root)["PORT_OFFSET_SOURCE"] == "default"
    assert load(root, BUILD_NUMBER="1234")["PORT_OFFSET"] == "2340"
    assert load(root, BUILD_NUMBER="1234", TASK_ID="t-5")["PORT_OFFSET"] == "50"
    assert load(root, BUILD_NUMBER="1234", TASK_ID="t-5", PORT_OFFSET="7")["PORT_OFFSET"] == "7"
    (root / "env" / "local.env").write_text("TASK_ID=from-file-8\n")
    assert load(root)["PORT_OFFSET"] == "80" and load(root, PORT_OFFSET="9")["PORT_OFFSET"] == "9"
    (root / "env" / "local.env").unlink()
    with pytest.raises(StackError, match="BUILD_NUMBER='#12' is not a build number"):
        load(root, BUILD_NUMBER="#12")


@pytest.mark.parametrize("step", [0, 1001, "10", 1.5, True], ids=["zero", "too-big", "string", "float", "bool"])
def test_bad_task_step(root, step):
    (root / "stack.yml").write_text(STACK + f"task_step: {step!r}\n".replace("'", '"'))
    with pytest.raises(StackError, match="task_step"):
        load(root)


# ---------------------------------------------------------------- precedence
def test_offset_precedence_env_over_local_over_dev(root):
    assert load(root)["PORT_OFFSET"] == "0"
    (root / "env" / "dev.env").write_text("PORT_OFFSET=100\n")
    assert load(root)["PORT_OFFSET"] == "100"
    (root / "env" / "local.env").write_text("PORT_OFFSET=200\n")
    assert load(root)["PORT_OFFSET"] == "200"
    assert load(root, PORT_OFFSET="300")["PORT_OFFSET"] == "300"


def test_offset_defaults_to_zero_without_files(root):
    (root / "env" / "dev.env").unlink()
    assert load(root)["PORT_OFFSET"] == "0"


def test_derived_values_beat_inherited_shell_values(root):
    copy, env = derive.compose_environment(root, Settings({"PORT_OFFSET": "10000", "POSTGRES_PORT": "1", "COMPOSE_PROJECT_NAME": "other"}))
    assert copy.service("postgres").port == 15432 and copy.env["POSTGRES_PORT"] == "15432"
    assert env["POSTGRES_PORT"] == "15432"
    assert env["COMPOSE_PROJECT_NAME"] == "shop-10000"


def test_compose_environment_passes_env_file_settings(root):
    (root / "env" / "local.env").write_text("POSTGRES_IMAGE=mirror/postgres:16\n")
    assert derive.compose_environment(root, Settings({}))[1]["POSTGRES_IMAGE"] == "mirror/postgres:16"
    assert derive.compose_environment(root, Settings({"POSTGRES_IMAGE": "x"}))[1]["POSTGRES_IMAGE"] == "x"


# ---------------------------------------------------------------- output & secrets
def test_env_output_is_dotenv_parseable(root):
    values = load(root, PORT_OFFSET="10000", POSTGRES_PASSWORD="s3cret")
    parsed = dotenv_values(stream=io.StringIO(derive.format_env(values)))
    assert parsed == values
    for key in ("PORT_OFFSET", "COMPOSE_PROJECT_NAME", "POSTGRES_PORT", "REDIS_PORT", "API_PORT", "UI_PORT", "DB_DATA_VOLUME"):
        assert key in parsed


def test_redact_masks_secret_everywhere(root):
    values = derive.redact(load(root, POSTGRES_PASSWORD="s3cret-pw"))
    assert not any("s3cret-pw" in v for v in values.values())
    assert values["POSTGRES_PASSWORD"] == "********"
    assert "********" in values["DATABASE_URL"]


def test_redact_masks_by_key_not_by_substring(root):
    """Project `shop`, password `shop`: only the password (and the URL's password field) is masked, whole."""
    text = (root / "stack.yml").read_text()
    (root / "stack.yml").write_text(text.replace(f"project: {derive.load(root, Settings({}))['STACK_PROJECT']}", "project: shop", 1))
    values = load(root, POSTGRES_PASSWORD="shop", POSTGRES_USER="shop", POSTGRES_DB="shop")
    shown = derive.redact(values)
    assert shown["POSTGRES_PASSWORD"] == "********"
    assert shown["COMPOSE_PROJECT_NAME"] == values["COMPOSE_PROJECT_NAME"] == "shop-0"
    assert shown["POSTGRES_USER"] == "shop" and shown["POSTGRES_DB"] == "shop"
    assert shown["DATABASE_URL"] == values["DATABASE_URL"].replace("shop:shop@", "shop:********@")
    assert shown["DATABASE_URL"].endswith("/shop")
    part = derive.redact(load(root, POSTGRES_PASSWORD="s3cret", POSTGRES_DB="s3cret-db"))
    assert part["POSTGRES_DB"] == "s3cret-db", "a value merely containing the password is not a secret"
    encoded = derive.redact(load(root, POSTGRES_PASSWORD="p@ss:w/rd"))
    assert "p%40ss" not in encoded["DATABASE_URL"] and ":********@" in encoded["DATABASE_URL"]  # percent-encoded in the URL


def test_ports_table_lists_every_service(root):
    values = load(root, PORT_OFFSET="10000")
    table = derive.format_ports(values, derive.services(root))
    for service, port in (("postgres", "15432"), ("redis", "16379"), ("api", "18003"), ("ui", "13000")):
        line = next(ln for ln in table.splitlines() if ln.startswith(service))
        assert f"127.0.0.1:{port}" in line
    assert "shop_db_data_10000" in table


# ---------------------------------------------------------------- named URLs
def test_named_urls_name_service_and_copy(root):
    values = load(root, PORT_OFFSET="10000")
    assert values["NAMED_URLS_PORT"] == "7355"
    assert values["API_NAMED_URL"] == "http://api.shop-10000.localhost:7355"
    assert values["UI_NAMED_URL"] == "http://ui.shop-10000.localhost:7355"
    assert "POSTGRES_NAMED_URL" not in values  # only http services are routed
    other = load(root, PORT_OFFSET="20000", NAMED_URLS_PORT="8123")
    assert other["API_NAMED_URL"] == "http://api.shop-20000.localhost:8123"
    table = derive.format_ports(values, derive.services(root))
    assert "  api  http://api.shop-10000.localhost:7355" in table.splitlines()


def test_named_urls_off(root):
    values = load(root, NAMED_URLS_PORT="off")
    assert values["NAMED_URLS_PORT"] == "off"
    assert not [k for k in values if k.endswith("_NAMED_URL")]
    assert "named URLs" not in derive.format_ports(values, derive.services(root))


@pytest.mark.parametrize("raw", ["80", "65536", "abc", "7355x", "-1"])
def test_bad_proxy_port_is_one_clear_line(root, raw):
    with pytest.raises(StackError, match=rf"NAMED_URLS_PORT='{raw}' \(from environment\) must be a port between 1024 and 65535, or off"):
        load(root, NAMED_URLS_PORT=raw)


def test_top_level_volumes_are_per_copy_too(root):
    (root / "stack.yml").write_text((root / "stack.yml").read_text() + "volumes: [db-only]\n")
    assert load(root, PORT_OFFSET="300")["DB_ONLY_VOLUME"] == "shop_db-only_300"


def test_named_host_has_no_underscores():
    from parallel_stacks.formula import named_host

    assert named_host("web_app", "shop_x-10000") == "web-app.shop-x-10000.localhost"


def test_proxy_config_routes_each_copy_and_lists_them_for_other_hosts():
    from parallel_stacks import proxy

    text = proxy.caddyfile(
        "7355",
        {
            "shop-10000": {"worktree": "/w/a", "routes": {"api.shop-10000.localhost": "127.0.0.1:18003"}},
            "shop-20000": {"worktree": "/w/b", "routes": {"api.shop-20000.localhost": "127.0.0.1:28003"}},
        },
    )
    assert "http://api.shop-10000.localhost:7355 {\n\treverse_proxy 127.0.0.1:18003\n}" in text
    assert "http://api.shop-20000.localhost:7355 {\n\treverse_proxy 127.0.0.1:28003\n}" in text
    assert "default_bind 127.0.0.1" in text and "auto_https off" in text
    fallback = text[text.index("http://:7355 {"):]
    assert "http://api.shop-10000.localhost:7355, http://api.shop-20000.localhost:7355" in fallback


def test_proxy_routes_are_the_named_services(root):
    from parallel_stacks import proxy

    values = copy_at(root, PORT_OFFSET="10000")
    assert proxy.routes_of(values, derive.services(root)) == {
        "api.shop-10000.localhost": "127.0.0.1:18003",
        "ui.shop-10000.localhost": "127.0.0.1:13000",
    }
    assert proxy.routes_of(copy_at(root, PORT_OFFSET="10000", NAMED_URLS_PORT="off"), derive.services(root)) == {}


def test_ensure_local_env_creates_private_secret_once(root):
    path = localenv.ensure_local_env(root)
    first = path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "POSTGRES_PASSWORD=" in first
    localenv.ensure_local_env(root)
    assert path.read_text() == first


def test_ensure_local_env_keeps_existing_settings(root):
    (root / "env" / "local.env").write_text("PORT_OFFSET=7")
    localenv.ensure_local_env(root)
    values = config.read_env_file(root / "env" / "local.env")
    assert values["PORT_OFFSET"] == "7" and len(values["POSTGRES_PASSWORD"]) >= 30


def test_main_env_prints_masked_and_exits_2_on_error(root, monkeypatch, capsys, tmp_path):
    from parallel_stacks.commands import env as env_command

    monkeypatch.setenv("STACK_ROOT", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("POSTGRES_PASSWORD", "hunter2")
    monkeypatch.delenv("SHOW_SECRETS", raising=False)
    monkeypatch.delenv("PORT_OFFSET", raising=False)
    assert env_command.main(["env"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "POSTGRES_PASSWORD=********" in out
    assert env_command.main(["env", "--show-secrets"]) == 0
    assert "hunter2" in capsys.readouterr().out
    monkeypatch.setenv("PORT_OFFSET", "abc")
    assert env_command.main(["ports"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: PORT_OFFSET='abc'")


# ---------------------------------------------------------------- ports
def test_port_free_sees_a_real_listener():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert check_ports.port_free("127.0.0.1", port) is False
    assert check_ports.port_free("127.0.0.1", port) is True


def api_listener(family=socket.AF_INET, host="127.0.0.1", v6only=None):
    """A real listener on a kernel-chosen port, and the offset that puts the api there."""
    listener = socket.socket(family)
    if v6only is not None:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    listener.bind((host, 0))
    listener.listen()
    port = listener.getsockname()[1]
    return listener, port, str(port - 8003)


def api_conflict(found, port):
    return next(c for c in found if c.service == "api" and c.port == port)


def test_foreign_ipv4_listener_is_named_with_its_pid(root):
    listener, port, offset = api_listener()
    with listener:
        values = copy_at(root, PORT_OFFSET=offset)
        found = check_ports.find_conflicts(values, running=[])
        conflict = api_conflict(found, port)
        assert f"pid {os.getpid()} (" in conflict.owner and "python" in conflict.owner
        message = check_ports.describe(values, found, 12000)
        assert message.startswith(f"port {port} for service api on 127.0.0.1 is held by pid {os.getpid()}")
        assert f"this copy has PORT_OFFSET={offset}: PORT_OFFSET=12000 is free, PORT_OFFSET=auto picks a free slot" in message and "\n" not in message


@pytest.mark.skipif(not check_ports._ipv6_available(), reason="this machine has no IPv6 loopback")
def test_foreign_dual_stack_listener_on_any_v6_is_named(root):
    listener, port, offset = api_listener(socket.AF_INET6, "::", v6only=0)
    with listener:
        values = copy_at(root, PORT_OFFSET=offset)
        conflict = api_conflict(check_ports.find_conflicts(values, running=[]), port)
        assert f"pid {os.getpid()}" in conflict.owner


@pytest.mark.skipif(not check_ports._ipv6_available(), reason="this machine has no IPv6 loopback")
def test_v6_only_listener_on_loopback_counts_for_localhost(root):
    listener, port, offset = api_listener(socket.AF_INET6, "::1", v6only=1)
    with listener:
        assert check_ports.port_free("127.0.0.1", port)  # IPv4 alone would miss it
        values = copy_at(root, PORT_OFFSET=offset)
        assert api_conflict(check_ports.find_conflicts(values, running=[]), port)


def test_container_published_port_without_listener_is_a_conflict(root):
    values = copy_at(root, PORT_OFFSET="23000")
    other = {"name": "other-1-api-1", "project": "other-1", "working_dir": "/src/other", "ports": [("127.0.0.1", 31003)]}
    found = check_ports.find_conflicts(values, running=[other])
    conflict = api_conflict(found, 31003)
    assert conflict.owner == "container other-1-api-1 (compose project other-1, worktree /src/other)"


def test_ports_of_this_copy_are_not_conflicts(root):
    listener, port, offset = api_listener()
    with listener:
        values = copy_at(root, PORT_OFFSET=offset)
        mine = {"name": f"shop-{offset}-api-1", "project": f"shop-{offset}", "working_dir": str(root), "ports": [("127.0.0.1", port)]}
        found = check_ports.find_conflicts(values, running=[mine])
        assert not [c for c in found if c.port == port]
        other = dict(mine, project="someone-else")
        found = check_ports.find_conflicts(values, running=[other])
        assert "compose project someone-else" in api_conflict(found, port).owner


def test_container_on_another_address_is_not_a_conflict(root):
    values = copy_at(root, PORT_OFFSET="23000", BIND_ADDRESS="127.0.0.2")
    other = {"name": "x", "project": "x", "working_dir": None, "ports": [("127.0.0.1", 31003)]}
    assert check_ports.find_conflicts(values, running=[other]) == []


def test_nearest_free_offset_skips_taken_ports(root):
    values = copy_at(root, PORT_OFFSET="23000")
    taken = {"name": "x", "project": "x", "working_dir": None, "ports": [("0.0.0.0", 32003)]}  # api of offset 24000
    assert check_ports.nearest_free_offset(values, derive.services(root), [taken]) == 22000


# ---------------------------------------------------------------- compose & nuke
def test_compose_command_honours_override():
    assert compose_run.compose_command(Settings({}), "docker-compose --verbose") == ["docker-compose", "--verbose"]


def test_compose_base_args_pin_project_and_file(root):
    values = copy_at(root, PORT_OFFSET="10000")
    args = compose_run.base_args(Settings({}), ["docker", "compose"], values)
    assert args[:4] == ["docker", "compose", "-p", "shop-10000"]


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("yes", True), ("", False), ("0", False), ("false", False), (None, False)])
def test_truthy(value, expected):
    assert basics.truthy(value) is expected


def test_nuke_refuses_without_terminal():
    class NoTty(io.StringIO):
        def isatty(self):
            return False

    with pytest.raises(StackError, match="FORCE=1"):
        nuke.confirm("shop-0", NoTty("shop-0\n"))


def test_compose_detection_prefers_v2_then_falls_back_to_v1(monkeypatch):
    import shutil
    import subprocess as sp

    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return sp.CompletedProcess(argv, 1 if argv[:2] == ["docker", "compose"] else 0, b"", b"")

    monkeypatch.delenv("COMPOSE", raising=False)
    monkeypatch.setattr(compose_run, "compose_plugin", lambda settings: None)  # not the plugin this machine has
    monkeypatch.setattr(compose_run.subprocess, "run", fake_run)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/docker-compose" if name == "docker-compose" else None)
    assert compose_run.compose_command(Settings({})) == ["docker-compose"]
    assert calls[0] == ["docker", "compose", "version", "--short"]  # the probe that also tells its version
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(StackError, match="neither `docker compose`"):
        compose_run.compose_command(Settings({}))


@pytest.mark.parametrize("version, v1", [("1.29.2", True), ("2.26.1", False), ("v2.30.0", False)])
def test_is_v1(monkeypatch, version, v1):
    import subprocess as sp

    monkeypatch.setattr(compose_run, "_VERSIONS", {})
    monkeypatch.setattr(compose_run.subprocess, "run", lambda argv, **kw: sp.CompletedProcess(argv, 0, version + "\n", ""))
    assert compose_run.is_v1(["docker-compose"]) is v1


# ---------------------------------------------------------------- start_interval on old engines (issue 28)
@pytest.mark.parametrize("version, api, legacy", [
    ("2.26.1", (1, 45), None),
    ("v2.30.0", (1, 47), None),
    ("1.29.2", (1, 45), "Compose 1.29.2"),
    ("2.23.3", (1, 45), "Compose 2.23.3"),
    ("2.26.1", (1, 43), "Docker Engine API 1.43 (Engine < 25)"),
    ("2.26.1", None, None),  # no engine: nothing to decide here (up refuses later)
])
def test_start_interval_needs_engine_25_and_compose_2_24(monkeypatch, version, api, legacy):
    from parallel_stacks import engine

    monkeypatch.setattr(compose_run, "_VERSIONS", {("docker-compose",): version})
    monkeypatch.setattr(compose_run, "_LEGACY", {})
    monkeypatch.setattr(engine, "api_version", lambda settings: api)
    assert compose_run.start_interval_missing(Settings({}), ["docker-compose"]) == legacy
    assert compose_run.start_interval_missing(Settings({"STACK_LEGACY_HEALTHCHECKS": "1"}), ["docker-compose"]) is not None


def test_legacy_copy_drops_start_interval_and_checks_every_2s_or_the_start_interval():
    model = {
        "x-healthcheck": {"interval": "30s", "start_interval": "1s", "retries": 3},
        "services": {
            "db": {"image": "x", "healthcheck": {"test": ["CMD", "true"], "interval": "30s", "start_interval": "1s", "start_period": "180s"}},
            "slow": {"image": "x", "healthcheck": {"test": ["CMD", "true"], "interval": "1m", "start_interval": "5s"}},
            "web": {"image": "y", "healthcheck": {"test": ["CMD", "true"], "interval": "10s"}},
            "plain": {"image": "z"},
        },
    }
    out = compose_run.without_start_interval(model)
    assert "start_interval" not in repr(out)
    assert out["services"]["db"]["healthcheck"] == {"test": ["CMD", "true"], "interval": "2s", "start_period": "180s"}
    assert out["services"]["slow"]["healthcheck"]["interval"] == "5s"
    assert out["services"]["web"]["healthcheck"]["interval"] == "10s" and out["services"]["plain"] == {"image": "z"}
    assert compose_run.duration_seconds("1m30s") == 90 and compose_run.duration_seconds("500ms") == 0.5
    assert compose_run.duration_seconds("30") is None


def test_context_digest_changes_with_any_byte_and_file(tmp_path):
    from parallel_stacks import upstate

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.py").write_text("print(1)\n")
    (ctx / "Dockerfile").write_text("FROM x\n")
    first = upstate.context_digest(str(ctx))
    assert upstate.context_digest(str(ctx)) == first
    (ctx / "app.py").write_text("print(2)\n")  # same size, same second
    second = upstate.context_digest(str(ctx))
    assert second != first
    (ctx / "sub").mkdir()
    (ctx / "sub" / "new.txt").write_text("")
    assert upstate.context_digest(str(ctx)) != second
    (ctx / "__pycache__").mkdir()
    before = upstate.context_digest(str(ctx))
    (ctx / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert upstate.context_digest(str(ctx)) == before
    outside = tmp_path / "Dockerfile.other"
    outside.write_text("FROM a\n")
    with_outside = upstate.context_digest(str(ctx), str(outside))
    outside.write_text("FROM b\n")
    assert upstate.context_digest(str(ctx), str(outside)) != with_outside


def test_up_stamp_needs_the_same_digest_containers_health_and_images(monkeypatch, tmp_path):
    from parallel_stacks import engine
    from parallel_stacks import upstate

    values = Copy({"STACK_WORKTREE": str(tmp_path), "COMPOSE_PROJECT_NAME": "shop-100"}, ())
    environ = Settings({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    config = upstate.model_of("the text", {"services": {"db": {"image": "pg:1"}, "api": {"build": {"context": str(tmp_path)}}}})
    assert config["services"]["api"]["build"] == {"context": str(tmp_path), "dockerfile": None} and config["images"] == ["pg:1"]
    assert "the text" not in repr(config)  # compose's answer holds secrets: the stamp keeps a digest of it
    assert upstate.service_images(config, "shop-100", "_") == {"db": "pg:1", "api": "shop-100_api"}  # Compose v1's names
    entries = [
        {"Id": "c1", "State": "running", "Status": "Up 2 minutes (healthy)", "ImageID": "sha256:pg",
         "Labels": {"com.docker.compose.service": "db"}},
        {"Id": "c2", "State": "running", "Status": "Up 2 minutes (healthy)", "ImageID": "sha256:api",
         "Labels": {"com.docker.compose.service": "api"}},
    ]
    images = {"pg:1": "sha256:pg", "shop-100-api": "sha256:api"}
    monkeypatch.setattr(engine, "project_containers", lambda settings, project: [dict(e) for e in entries])
    monkeypatch.setattr(engine, "image_id", lambda settings, name: images.get(name))
    assert not upstate.unchanged(values, "d1", config, environ)  # no stamp yet
    upstate.record(values, "d1", environ)
    assert upstate.unchanged(values, "d1", config, environ)
    assert not upstate.unchanged(values, "d2", config, environ)  # an input changed
    assert not upstate.unchanged(values, None, config, environ)
    images["shop-100-api"] = "sha256:rebuilt"  # `docker compose build` by hand: compose would recreate
    assert not upstate.unchanged(values, "d1", config, environ)
    images["shop-100-api"] = "sha256:api"
    entries[0]["Status"] = "Up 2 minutes (unhealthy)"
    assert not upstate.unchanged(values, "d1", config, environ)
    entries[0]["Status"], entries[1]["State"] = "Up 2 minutes (healthy)", "exited"
    assert not upstate.unchanged(values, "d1", config, environ)
    entries[1]["State"] = "running"
    entries.append(dict(entries[1], Id="c3"))  # a container the stamp does not know
    assert not upstate.unchanged(values, "d1", config, environ)
    entries.pop()
    assert upstate.unchanged(values, "d1", config, environ)
    upstate.forget(values, environ)
    assert not upstate.unchanged(values, "d1", config, environ)
    upstate.record(values, "d1", environ, "key", config)
    assert upstate.remembered_model(values, "key", environ) == config
    assert upstate.remembered_model(values, "other", environ) is None and upstate.remembered_model(values, None, environ) is None


def test_what_compose_config_reads_is_keyed_by_file_dotenv_and_the_variables_it_names(tmp_path):
    from parallel_stacks import upstate

    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  db:\n    image: ${DB_IMAGE:-pg}\n    environment: [PASSED_THROUGH]\n")
    env = {"STACK_WORKTREE": str(tmp_path), "DB_IMAGE": "pg:1", "PASSED_THROUGH": "a", "UNRELATED": "x", "COMPOSE_PROFILES": ""}
    key = lambda **changes: upstate.config_key(["docker", "compose"], "2.26.1", [str(compose)], {**env, **changes})  # noqa: E731
    first = key()
    assert first == key() and first == key(UNRELATED="y")
    for change in ({"DB_IMAGE": "pg:2"}, {"PASSED_THROUGH": "b"}, {"COMPOSE_PROFILES": "x"}, {"DOCKER_HOST": "tcp://x:2375"}):
        assert key(**change) != first, change
    assert upstate.config_key(["docker", "compose"], "2.27.0", [str(compose)], env) != first
    (tmp_path / ".env").write_text("DB_IMAGE=pg:3\n")
    assert key() != first
    first = key()
    (tmp_path / "stack.yml").write_text("compose: {profiles: [debug]}\n")  # profiles live there (adopted projects)
    assert key() != first
    override = tmp_path / "compose.override.yaml"
    override.write_text("services: {}\n")
    assert upstate.config_key(["docker", "compose"], "2.26.1", [str(compose), str(override)], env) != key()
    compose.write_text(compose.read_text() + "    env_file: other.env\n")
    assert key() is None  # compose would read another file: always ask it


def test_compose_version_is_remembered_by_the_plugin_binary(monkeypatch, tmp_path):
    import subprocess as sp

    plugin = tmp_path / "cli-plugins" / "docker-compose"
    plugin.parent.mkdir()
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    monkeypatch.delenv("COMPOSE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(compose_run, "compose_plugin", lambda settings: str(plugin))
    monkeypatch.setattr(compose_run, "_VERSIONS", {})
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return sp.CompletedProcess(argv, 0, "2.26.1\n", "")

    monkeypatch.setattr(compose_run.subprocess, "run", fake_run)
    assert compose_run.compose_command(Settings({})) == ["docker", "compose"] and len(calls) == 1
    assert compose_run.compose_command(Settings({})) == ["docker", "compose"] and len(calls) == 1  # from the cache
    assert compose_run.compose_version(["docker", "compose"]) == "2.26.1"
    plugin.write_text("#!/bin/sh\n# upgraded\n")  # another binary: asked again
    assert compose_run.compose_command(Settings({})) == ["docker", "compose"] and len(calls) == 2


def test_labels_are_spelled_once_and_compose_files_use_the_same():
    """labels.py names every label; the baked compose.yaml (parsed) and adopt's conversion write the same worktree label."""
    import yaml as _yaml

    from conftest import PROJECT_TEMPLATE
    from parallel_stacks import engine, labels, proxy
    from parallel_stacks.registry import slots

    assert (engine.PROJECT_LABEL, engine.WORKTREE_LABEL, slots.SLOT_LABEL, proxy.PROXY_LABEL) == (
        labels.PROJECT, labels.WORKTREE, labels.SLOT, labels.PROXY)
    text = (PROJECT_TEMPLATE / "compose.yaml").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("{%"))  # template tags, not YAML
    volumes = _yaml.safe_load(text)["volumes"]
    assert all(labels.WORKTREE in (conf.get("labels") or {}) for conf in volumes.values()), volumes
    from adopt import convert

    assert convert.LABEL == labels.WORKTREE
    package = PROJECT_TEMPLATE / "tools" / "parallel_stacks"
    spelled = [p.relative_to(package) for p in package.rglob("*.py") if p.name != "labels.py" and '"dev.parallel-stacks.' in p.read_text()]
    assert spelled == [], f"labels spelled outside labels.py: {spelled}"


def test_one_docker_runner_words_every_failure_in_one_line(tmp_path, monkeypatch):
    """engine.run_docker is the only way the package runs the docker CLI: a missing binary, a CLI that does not
    answer, an engine that is down are each one StackError line; the proxy's table read goes through it too."""
    from parallel_stacks import engine, proxy
    from parallel_stacks.basics import StackError

    sleep = shutil.which("sleep")
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker at all
    here = Settings.read()
    with pytest.raises(StackError, match="^docker is not installed or not on PATH$"):
        engine.docker(here, "ps")
    monkeypatch.setattr(engine, "engine_request", lambda settings, path: None)  # no socket either: the CLI path
    with pytest.raises(StackError, match="^docker is not installed"):
        proxy._read(here, "parallel-stacks-proxy-1")  # was a FileNotFoundError traceback
    stub = tmp_path / "docker"
    stub.write_text(f"#!/bin/sh\nexec {sleep} 5\n")
    stub.chmod(0o755)
    monkeypatch.setattr(engine, "DOCKER_TIMEOUT", 0.3)
    with pytest.raises(StackError, match="^docker ps did not answer within 0.3 s$"):
        engine.docker(here, "ps")
    stub.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?' >&2\nexit 1\n")
    with pytest.raises(StackError, match="^the Docker engine is not reachable"):
        engine.missing_images(here, ["x:1"])


def test_a_copy_is_typed_once_from_what_make_env_derives(root):
    """model.Copy (issue 25): the services' ports are ints, their URLs and named URLs those `make env` prints, the
    copy's names and offset typed; `as_env()` is exactly the derived values (what compose and make env get)."""
    values = load(root, PORT_OFFSET="10000")
    copy = derive.copy_of(root, Settings({"PARALLEL_STACKS_STATE_DIR": str(root / ".registry"), "PORT_OFFSET": "10000"}))
    assert copy.as_env() == values
    assert (copy.offset, copy.offset_source, copy.env_name, copy.compose_project) == (10000, "environment", "dev", "shop-10000")
    assert copy.worktree == root.resolve() and not copy.remote and copy.bind == "127.0.0.1"
    api = copy.service("api")
    assert (api.kind_name, api.port, api.container_port) == ("http", 18003, int(values["API_CONTAINER_PORT"]))
    assert api.url == values["API_URL"] and api.named_url == values["API_NAMED_URL"]
    assert copy.service("postgres").url == values["DATABASE_URL"] and copy.service("postgres").named_url is None
    assert copy.ports() == [(s, int(values[f"{s.upper()}_PORT"])) for s in derive.services(root)]
    assert copy.secrets["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    assert [s.name for s in copy.only({"api", "redis"}).services] == [s for s in derive.services(root) if s in ("api", "redis")]
    with pytest.raises(KeyError):
        copy.service("nope")
