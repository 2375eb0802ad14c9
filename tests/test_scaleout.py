"""Beyond one machine: `make k8s` (rendered and validated offline against the Kubernetes schemas)."""
from __future__ import annotations

import pytest
import yaml

from conftest import Project, bake, one_error_line

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
    assert {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "copy-secrets", "key": "postgres.POSTGRES_PASSWORD"}}} in container["env"]
    assert postgres["spec"]["strategy"]["type"] == "Recreate"  # it holds a volume
    (schema,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "postgres-schema-sql"]
    assert "CREATE TABLE" in schema["data"]["schema.sql"].upper()


def test_k8s_with_a_bad_offset_is_one_line(project):
    out = project.make("-s", "k8s", check=False, PORT_OFFSET="abc")
    assert out.returncode == 2 and out.stdout == ""
    assert "PORT_OFFSET='abc'" in one_error_line(out.stderr)
