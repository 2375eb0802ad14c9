"""Beyond one machine: `make k8s` (rendered and validated offline against the Kubernetes schemas), where the engine is."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import Project, bake, make_worktree, one_error_line
from parallel_stacks.settings import Settings

K8S_VERSION = "1.37.0"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return Project(bake(tmp_path_factory.mktemp("k8s")), {})


def manifests(project: Project, offset: int) -> list[dict]:
    out = project.make("-s", "k8s", PORT_OFFSET=offset)
    assert out.stdout.startswith("# Rendered by `make k8s`")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_k8s_output_of_two_copies_validates_and_keeps_them_apart(project):
    import kubernetes_validate

    rendered = {offset: manifests(project, offset) for offset in (0, 10000)}
    for offset, docs in rendered.items():
        for doc in docs:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on anything the schema rejects
        (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
        assert namespace["metadata"]["name"] == f"demo-stack-{offset}"
        assert all(d["metadata"].get("namespace") == f"demo-stack-{offset}" for d in docs if d["kind"] != "Namespace")
        assert all(d["metadata"]["labels"]["dev.parallel-stacks/offset"] == str(offset) for d in docs)
        assert {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} == {"postgres", "redis", "mqtt", "api", "ui"}
        assert {d["metadata"]["name"] for d in docs if d["kind"] == "Service"} == {"postgres", "redis", "mqtt", "api", "ui"}
    def kinds(offset, kind, key):
        return {key(d) for d in rendered[offset] if d["kind"] == kind}

    hosts = {o: kinds(o, "Ingress", lambda d: tuple(r["host"] for r in d["spec"]["rules"])) for o in rendered}
    assert hosts[0] == {("api.demo-stack-0.localhost", "ui.demo-stack-0.localhost")}
    assert hosts[10000] == {("api.demo-stack-10000.localhost", "ui.demo-stack-10000.localhost")}
    claims = {o: kinds(o, "PersistentVolumeClaim", lambda d: d["metadata"]["name"]) for o in rendered}
    assert claims[0] == {"demo-stack-db-data-0", "demo-stack-mqtt-data-0"}
    assert claims[10000] == {"demo-stack-db-data-10000", "demo-stack-mqtt-data-10000"}


def test_k8s_keeps_secrets_in_a_secret_and_probes_from_healthchecks(project):
    docs = manifests(project, 0)
    password = project.values(PORT_OFFSET=0)["POSTGRES_PASSWORD"]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert password in secret["stringData"].values()
    plain = [d for d in docs if d["kind"] != "Secret"]
    assert password not in yaml.safe_dump_all(plain), "a secret value outside the Secret"
    (postgres,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "postgres"]
    container = postgres["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["exec"]["command"][:2] == ["sh", "-c"] and "pg_isready" in container["readinessProbe"]["exec"]["command"][2]
    assert '"$POSTGRES_USER"' in container["readinessProbe"]["exec"]["command"][2], "compose's $$ escape left in an exec probe"
    assert {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "copy-secrets", "key": "postgres.POSTGRES_PASSWORD"}}} in container["env"]
    assert postgres["spec"]["strategy"]["type"] == "Recreate"  # it holds a volume
    (schema,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "postgres-schema-sql"]
    assert "CREATE TABLE" in schema["data"]["schema.sql"].upper()


def test_k8s_with_a_bad_offset_is_one_line(project):
    out = project.make("-s", "k8s", check=False, PORT_OFFSET="abc")
    assert out.returncode == 2 and out.stdout == ""
    assert "PORT_OFFSET='abc'" in one_error_line(out.stderr)


# ---------------------------------------------------------------- where the engine is
@pytest.mark.parametrize(
    "environ, expected",
    [
        pytest.param({}, ("local", None), id="default-socket"),
        pytest.param({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, ("local", None), id="rootless-socket"),
        pytest.param({"DOCKER_HOST": "tcp://127.0.0.1:2375"}, ("local", None), id="loopback-tcp"),
        pytest.param({"DOCKER_HOST": "tcp://localhost:2375"}, ("local", None), id="localhost-tcp"),
        pytest.param({"DOCKER_HOST": "tcp://10.1.2.3:2376"}, ("tcp://10.1.2.3:2376", "10.1.2.3"), id="tcp"),
        pytest.param({"DOCKER_HOST": "ssh://me@build-box:2222"}, ("ssh://me@build-box:2222", "build-box"), id="ssh"),
    ],
)
def test_engine_location_follows_docker_host(tmp_path, environ, expected):
    from parallel_stacks import engine

    assert engine.location(Settings({"DOCKER_CONFIG": str(tmp_path), **environ})) == expected


def docker_context(config: Path, name: str, host: str, current: bool = False) -> None:
    import hashlib
    import json

    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}}))
    if current:
        (config / "config.json").write_text(json.dumps({"auths": {"x": {"auth": "c2VjcmV0"}}, "currentContext": name}))


def test_engine_location_follows_docker_contexts(tmp_path):
    from parallel_stacks import engine
    from parallel_stacks.basics import StackError

    docker_context(tmp_path, "build-box", "ssh://ci@build-box", current=True)
    docker_context(tmp_path, "other", "tcp://192.0.2.7:2376")
    assert engine.location(Settings({"DOCKER_CONFIG": str(tmp_path)})) == ("ssh://ci@build-box", "build-box")  # `docker context use`
    assert engine.location(Settings({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "other"})) == ("tcp://192.0.2.7:2376", "192.0.2.7")
    assert engine.location(Settings({"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "unix:///var/run/docker.sock"})) == ("local", None)
    assert engine.location(Settings({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "default"})) == ("local", None)
    with pytest.raises(StackError, match=r"^docker context 'nope' is not defined \(`docker context ls`\)$"):
        engine.location(Settings({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "nope"}))


def test_a_remote_engine_names_its_host_in_urls_and_stack_host_overrides_it(tmp_path):
    from parallel_stacks import derive
    from parallel_stacks.basics import StackError

    root = make_worktree(tmp_path / "w")
    base = {"PORT_OFFSET": "10000", "DOCKER_CONFIG": str(tmp_path), "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state")}
    local = derive.load(root, Settings(base))
    assert local["STACK_ENGINE"] == "local" and "STACK_HOST" not in local and local["API_URL"] == "http://127.0.0.1:18003"
    assert local["API_NAMED_URL"] == "http://api.shop-10000.localhost:7355"
    far = derive.load(root, Settings({**base, "DOCKER_HOST": "ssh://ci@build-box"}))
    assert far["STACK_ENGINE"] == "ssh://ci@build-box" and far["STACK_HOST"] == "build-box"
    assert far["API_URL"] == "http://build-box:18003" and "API_NAMED_URL" not in far
    named = derive.load(root, Settings({**base, "DOCKER_HOST": "ssh://ci@build-box", "STACK_HOST": "box.vpn"}))
    assert named["API_URL"] == "http://box.vpn:18003"
    assert derive.load(root, Settings({**base, "STACK_HOST": "fd00::7"}))["API_URL"] == "http://[fd00::7]:18003"
    with pytest.raises(StackError, match=r"STACK_HOST='http://x' \(from environment\) must be a host name or an IP address"):
        derive.load(root, Settings({**base, "STACK_HOST": "http://x"}))


def test_slot_claims_setting_is_checked(tmp_path):
    from parallel_stacks.registry import slots
    from parallel_stacks.basics import StackError

    assert slots.engine_claims_on(Settings({"DOCKER_CONFIG": str(tmp_path)})) is False
    assert slots.engine_claims_on(Settings({"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://10.1.2.3:2376"})) is True
    assert slots.engine_claims_on(Settings({"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://10.1.2.3:2376", "SLOT_CLAIMS": "local"})) is False
    assert slots.engine_claims_on(Settings({"DOCKER_CONFIG": str(tmp_path), "SLOT_CLAIMS": "engine"})) is True
    with pytest.raises(StackError, match=r"SLOT_CLAIMS='both': use engine"):
        slots.engine_claims_on(Settings({"SLOT_CLAIMS": "both"}))


def test_the_env_cache_follows_docker_context_use(tmp_path, monkeypatch):
    """`docker context use` changes the engine: a cached `make env` must not keep the old one's URLs."""
    from parallel_stacks import cache

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    root = make_worktree(tmp_path / "w")
    before = cache.inputs(str(root), "values", Settings.read())
    docker_context(tmp_path, "build-box", "ssh://ci@build-box", current=True)
    after = cache.inputs(str(root), "values", Settings.read())
    assert before != after
    assert b"c2VjcmV0" not in after, "the cache key holds the CLI's credentials"


def test_k8s_names_are_dns_labels():
    from parallel_stacks.commands.k8s import dns_name

    assert dns_name("shop_db_data_10000") == "shop-db-data-10000"
    long = dns_name("x" * 100)
    assert len(long) == 63 and long != dns_name("x" * 101)


def test_k8s_ports_once_per_protocol_and_exposed_ports_get_services():
    from parallel_stacks.commands.k8s import ports_of

    svc = {"ports": [{"target": 53, "protocol": "tcp"}, {"target": 53, "protocol": "udp"}, {"target": 53, "protocol": "tcp"}], "expose": ["5432", "53/udp"]}
    assert ports_of(svc) == [(53, "TCP"), (53, "UDP"), (5432, "TCP")]
