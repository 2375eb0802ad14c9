"""Print this copy's stack as Kubernetes manifests: one namespace per copy (`make -s k8s | kubectl apply -f -`).

Rendered from stack.yml and the resolved compose model (`docker compose
config` with this copy's values; no engine needed): a Namespace named like
the compose project; per compose service a Deployment (Recreate when it
holds a volume), a Service with the compose service's name (so the names
the services use for each other keep working) and its named volumes as
PersistentVolumeClaims named like the copy's Docker volumes; read-only
bind-mounted files as ConfigMaps; healthchecks as readiness probes; values
carrying this copy's secrets in a Secret; an Ingress with the copy's named
hosts (`<service>.<copy>.localhost`) for its HTTP services. Labels carry
project, offset and worktree (a hash; the path as an annotation).

What Kubernetes cannot take from a compose file is said on stderr, one line
each (bind-mounted directories, images only built locally).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import derive, labels
from ..basics import StackError, var_name
from ..formula import named_host
from ..model import Copy
from ..runner import run
from ..settings import Settings

LABEL = labels.K8S_PREFIX


def dns_name(text: str, limit: int = 63) -> str:
    """A DNS-1123 label from any name: lowercase letters, digits and '-' (Kubernetes object names)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if len(name) > limit:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name[: limit - 9].rstrip("-") + "-" + digest
    return name or "x"


def labels_of(copy: Copy, service: str | None = None) -> dict[str, str]:
    """The Kubernetes labels of this copy's objects (and of one service's, given `service`)."""
    out = {
        "app.kubernetes.io/part-of": dns_name(copy.env["STACK_PROJECT"]),
        "app.kubernetes.io/managed-by": "parallel-stacks",
        f"{LABEL}/copy": dns_name(copy.env["COMPOSE_PROJECT_NAME"]),
        f"{LABEL}/offset": copy.env["PORT_OFFSET"],
        f"{LABEL}/worktree-hash": hashlib.sha256(copy.env["STACK_WORKTREE"].encode()).hexdigest()[:12],
    }
    if service:
        out["app.kubernetes.io/name"] = dns_name(service)
    return out


def meta(name: str, namespace: str | None, copy: Copy, service: str | None = None) -> dict[str, Any]:
    """An object's metadata: name, namespace, labels, and the worktree as an annotation."""
    out: dict[str, Any] = {
        "name": name,
        "labels": labels_of(copy, service),
        "annotations": {f"{LABEL}/worktree": copy.env["STACK_WORKTREE"]},
    }
    if namespace:
        out["namespace"] = namespace
    return out


def probe_of(health: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A compose healthcheck as a readiness probe (exec)."""
    if not health or health.get("disable"):
        return None
    test = [unescape(t) for t in health.get("test") or []] if not isinstance(health.get("test"), str) else unescape(health["test"])
    if isinstance(test, str):
        command = ["sh", "-c", test]
    elif test[:1] == ["CMD-SHELL"]:
        command = ["sh", "-c", " ".join(test[1:])]
    elif test[:1] == ["CMD"]:
        command = list(test[1:])
    else:
        return None
    return {"exec": {"command": command}, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 60}


def unescape(text: str) -> str:
    """`docker compose config` writes a literal `$` as `$$`; Kubernetes undoes that in command, args and env
    values, but not in exec probes or Secret data."""
    return text.replace("$$", "$")


def ports_of(svc: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(container port, protocol) of a service, published or only exposed, each once."""
    found: list[tuple[int, str]] = []
    for port in svc.get("ports") or []:
        entry = (int(port["target"]), str(port.get("protocol") or "tcp").upper())
        if entry not in found:
            found.append(entry)
    for raw in svc.get("expose") or []:
        number, _, proto = str(raw).partition("/")
        if number.isdigit() and (int(number), (proto or "tcp").upper()) not in found:
            found.append((int(number), (proto or "tcp").upper()))
    return found


def secret_values(copy: Copy) -> list[str]:
    """The values of this copy's secrets (they go into a Secret, never into a manifest's plain text)."""
    return [copy.env[k] for k in derive.secret_keys(derive.services(Path(copy.env["STACK_WORKTREE"]))) if copy.env.get(k)]


Manifest = dict[str, Any]  # one Kubernetes object, as `dump` writes it (key order kept)
Warn = Callable[[str], None]


def namespace_manifest(ns: str, copy: Copy) -> Manifest:
    """The copy's Namespace, named like its compose project (every other object lives in it)."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, None, copy)}


def secret_manifest(ns: str, copy: Copy, data: Mapping[str, str]) -> Manifest:
    """The Secret `copy-secrets`: the environment values carrying this copy's secrets, keyed `<app>.<VARIABLE>`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta("copy-secrets", ns, copy),
        "type": "Opaque",
        "stringData": dict(data),
    }


def claim_manifest(claim: str, ns: str, copy: Copy, service: str) -> Manifest:
    """A PersistentVolumeClaim for a named volume (named like the copy's Docker volume), labelled with the first service
    mounting it."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(claim, ns, copy, service),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def config_map_manifest(name: str, ns: str, copy: Copy, service: str, source: Path) -> Manifest:
    """A ConfigMap holding one read-only bind-mounted file of `service`, under the file's name."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name, ns, copy, service),
        "data": {source.name: source.read_text(encoding="utf-8")},
    }


def selector_of(app: str, ns: str) -> dict[str, str]:
    """The labels picking one service's pods of this copy (its Deployment's and its Service's selector)."""
    return {"app.kubernetes.io/name": app, f"{LABEL}/copy": ns}


def deployment_manifest(service: str, ns: str, copy: Copy, container: dict[str, Any], volumes: list[dict[str, Any]]) -> Manifest:
    """A compose service as a Deployment of one pod running `container` with `volumes`; Recreate when it holds a
    PersistentVolumeClaim (the old pod must let go of it first), RollingUpdate otherwise."""
    app = dns_name(service)
    pod: dict[str, Any] = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(app, ns, copy, service),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector_of(app, ns)},
            "strategy": {"type": "Recreate" if any("persistentVolumeClaim" in v for v in volumes) else "RollingUpdate"},
            "template": {"metadata": {"labels": labels_of(copy, service)}, "spec": pod},
        },
    }


def service_manifest(service: str, ns: str, copy: Copy, ports: list[tuple[int, str]]) -> Manifest:
    """A Service with the compose service's name (so the names the services use for each other keep working), one port
    per container port."""
    app = dns_name(service)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(app, ns, copy, service),
        "spec": {
            "selector": selector_of(app, ns),
            "ports": [{"name": f"p{p}-{proto.lower()}", "port": p, "targetPort": p, "protocol": proto} for p, proto in ports],
        },
    }


def ingress_manifest(ns: str, copy: Copy, rules: list[dict[str, Any]]) -> Manifest:
    """The Ingress `named-urls`: one rule per named host of the copy (`ingress_rule`)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta("named-urls", ns, copy), "spec": {"rules": rules}}


def ingress_rule(service: str, ports: list[tuple[int, str]], copy: Copy, stack: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The Ingress rule sending the service's named host (`<service>.<copy>.localhost`) to its first port; None when it
    has no named URL (not an http kind, none set) or no port."""
    url = copy.env.get(f"{var_name(service)}_NAMED_URL") or (
        f"http://{named_host(service, copy.env['COMPOSE_PROJECT_NAME'])}" if stack.get(service, {}).get("kind") == "http" else ""
    )
    if not (url and ports):
        return None
    host = named_host(service, copy.env["COMPOSE_PROJECT_NAME"])
    backend = {"service": {"name": dns_name(service), "port": {"number": ports[0][0]}}}
    return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}


def storage_of(
    service: str,
    svc: Mapping[str, Any],
    ns: str,
    copy: Copy,
    volume_names: Mapping[str, str],
    claimed: set[str],
    warn: Warn,
) -> tuple[list[Manifest], list[dict[str, Any]], list[dict[str, Any]]]:
    """(the objects its mounts need, the pod's volumes, the container's volume mounts) of one compose service: named
    volumes as PersistentVolumeClaims (each once: `claimed` holds those already rendered, and gains the new ones),
    read-only bind-mounted files as ConfigMaps, tmpfs as memory-backed emptyDirs. A bind-mounted directory is left
    out, with a warning."""
    objects: list[Manifest] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, mount in enumerate(svc.get("volumes") or []):
        kind, source, target = mount.get("type"), mount.get("source"), mount["target"]
        if kind == "volume" and source:
            claim = dns_name(volume_names.get(source, source))
            if claim not in claimed:
                claimed.add(claim)
                objects.append(claim_manifest(claim, ns, copy, service))
            volumes.append({"name": f"v{index}", "persistentVolumeClaim": {"claimName": claim}})
            mounts.append({"name": f"v{index}", "mountPath": target})
        elif kind == "bind" and source and Path(source).is_file():
            config_map = dns_name(f"{service}-{Path(source).name}")
            objects.append(config_map_manifest(config_map, ns, copy, service, Path(source)))
            volumes.append({"name": f"v{index}", "configMap": {"name": config_map}})
            mounts.append({"name": f"v{index}", "mountPath": target, "subPath": Path(source).name, "readOnly": True})
        elif kind == "bind":
            warn(f"service {service}: bind mount {source} -> {target} is a directory on this machine; left out (use a volume or an image)")
    for index, path in enumerate(svc.get("tmpfs") or []):
        volumes.append({"name": f"t{index}", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": f"t{index}", "mountPath": str(path).split(":")[0]})
    return objects, volumes, mounts


def env_of(app: str, svc: Mapping[str, Any], secrets: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(the container's environment, sorted by name; what it puts into `copy-secrets`): a value carrying one of
    `secrets` becomes a reference to the Secret's key `<app>.<VARIABLE>`."""
    env: list[dict[str, Any]] = []
    secret_data: dict[str, str] = {}
    for key, value in sorted((svc.get("environment") or {}).items()):
        value = "" if value is None else str(value)
        if any(secret in value for secret in secrets):
            secret_data[f"{app}.{key}"] = unescape(value)
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": "copy-secrets", "key": f"{app}.{key}"}}})
        else:
            env.append({"name": key, "value": value})
    return env, secret_data


def container_of(
    service: str,
    svc: Mapping[str, Any],
    copy: Copy,
    ports: list[tuple[int, str]],
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    warn: Warn,
) -> dict[str, Any]:
    """The pod's container for a compose service: its image (the one compose builds, named like it, with a warning
    when it is built here), entrypoint and command, ports, environment, mounts, healthcheck as readiness probe."""
    image = svc.get("image") or f"{copy.env['COMPOSE_PROJECT_NAME']}-{service}:latest"
    if svc.get("build"):
        warn(f"service {service}: image {image} is built on this machine; push it to a registry the cluster pulls from")
    container: dict[str, Any] = {"name": dns_name(service), "image": image}
    if svc.get("entrypoint"):
        container["command"] = list(svc["entrypoint"])
    if svc.get("command"):
        container["args"] = list(svc["command"])
    if ports:
        container["ports"] = [{"containerPort": p, "protocol": proto} for p, proto in ports]
    if env:
        container["env"] = env
    if mounts:
        container["volumeMounts"] = mounts
    probe = probe_of(svc.get("healthcheck"))
    if probe:
        container["readinessProbe"] = probe
    return container


def render(copy: Copy, config: Mapping[str, Any], warn: Any = None) -> list[dict[str, Any]]:
    """The manifests of one copy, as a list of objects: its Namespace, the Secret (when a value carries a secret), per
    compose service the PersistentVolumeClaims and ConfigMaps its mounts need, its Deployment and Service (when it has
    ports), and last the Ingress of its named hosts."""
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    root = Path(copy.env["STACK_WORKTREE"])
    ns = dns_name(copy.env["COMPOSE_PROJECT_NAME"])
    secrets = secret_values(copy)
    stack = derive.services(root)
    volume_names = {key: config_vol.get("name", key) for key, config_vol in (config.get("volumes") or {}).items()}
    docs: list[dict[str, Any]] = [namespace_manifest(ns, copy)]
    secret_data: dict[str, str] = {}
    claimed: set[str] = set()
    rules: list[dict[str, Any]] = []
    for name, svc in (config.get("services") or {}).items():
        objects, volumes, mounts = storage_of(name, svc, ns, copy, volume_names, claimed, warn)
        docs += objects
        env, carried = env_of(dns_name(name), svc, secrets)
        secret_data.update(carried)
        ports = ports_of(svc)
        docs.append(deployment_manifest(name, ns, copy, container_of(name, svc, copy, ports, env, mounts, warn), volumes))
        if ports:
            docs.append(service_manifest(name, ns, copy, ports))
        rule = ingress_rule(name, ports, copy, stack)
        if rule:
            rules.append(rule)
    if secret_data:
        docs.insert(1, secret_manifest(ns, copy, secret_data))
    if rules:
        docs.append(ingress_manifest(ns, copy, rules))
    return docs


def dump(docs: list[dict[str, Any]]) -> str:
    """The manifests as one YAML stream with a header saying where they came from."""
    import yaml

    header = "# Rendered by `make k8s` (parallel-stacks) from stack.yml and the compose files; apply with `kubectl apply -f -`.\n"
    return header + "---\n".join(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False) for doc in docs)


def main(argv: list[str] | None = None) -> int:
    """`make k8s`: this copy as Kubernetes manifests on stdout."""
    settings = Settings.read()
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks k8s", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        from ..composecli import compose_command, compose_config

        copy, env = derive.compose_environment(None, settings)
        missing = [k for k in derive.secret_keys(derive.services(copy.worktree)) if not copy.env.get(k)]
        if missing:
            raise StackError(f"{', '.join(missing)} not set for this worktree (env/local.env); `make up` once writes them")
        config = compose_config(settings, compose_command(settings), copy, env)
        sys.stdout.write(dump(render(copy, config)))
        return 0

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
