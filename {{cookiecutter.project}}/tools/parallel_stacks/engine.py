"""Layer 3: questions to the Docker engine (the CLI, or its unix socket for speed).

Read-only except `docker()` itself, which commands use to remove what they
have checked is theirs (parallel_stacks.ownership decides that).
"""

from __future__ import annotations

import os

from . import labels
from .basics import StackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .settings import Settings

__all__ = [
    "PROJECT_LABEL",
    "WORKDIR_LABEL",
    "WORKTREE_LABEL",
    "api_version",
    "container",
    "containers",
    "docker",
    "engine_get",
    "engine_request",
    "host_bindings",
    "image_id",
    "images",
    "json_list",
    "labelled_containers",
    "labelled_volumes",
    "location",
    "missing_images",
    "networks",
    "project_containers",
    "published_ports",
    "pull",
    "running_containers",
    "volume",
    "volumes",
]

# the labels, spelled in one place (labels.py); these names stay for their many readers
PROJECT_LABEL = labels.PROJECT
WORKDIR_LABEL = labels.WORKDIR
WORKTREE_LABEL = labels.WORKTREE
# containers and networks a test starts for itself (pytest_plugin/containers.py), outside compose
TEST_COPY_LABEL = labels.TEST_COPY
TEST_RUN_LABEL = labels.TEST_RUN
TEST_WORKER_LABEL = labels.TEST_WORKER


DOCKER_TIMEOUT = 60  # seconds: one for every docker CLI call the package makes


def run_docker(settings: Settings, *args: str, stdin: bytes | None = None, check: bool = True) -> Any:
    """THE way the package runs the docker CLI (no shell, one timeout, one wording of failures): the
    CompletedProcess, stdout and stderr as bytes. StackError when docker is missing, does not answer, the
    engine is unreachable, or (`check`) the command fails; `check=False` leaves other failures to the caller."""
    import subprocess

    try:
        proc = subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=DOCKER_TIMEOUT, env=settings.env)
    except FileNotFoundError:
        raise StackError("docker is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"docker {args[0]} did not answer within {DOCKER_TIMEOUT} s") from None
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace")
        err = stderr.strip().splitlines()
        first = err[-1] if err else f"exit code {proc.returncode}"
        if "Cannot connect to the Docker daemon" in stderr or "daemon running" in stderr:
            raise StackError("the Docker engine is not reachable (is it running?): " + first)
        if check:
            raise StackError(f"docker {' '.join(args[:2])} failed: {first}")
    return proc


def docker(settings: Settings, *args: str) -> str:
    """Run `docker ARGS` and return its stdout as text; StackError on failure (run_docker)."""
    return str(run_docker(settings, *args).stdout.decode(errors="replace"))


def json_list(settings: Settings, *args: str) -> list[Any]:
    """`docker ARGS` whose output is a JSON list (inspect)."""
    import json

    result: list[Any] = json.loads(docker(settings, *args))
    return result


def _ids(settings: Settings, kind: str, project: str) -> list[str]:
    filt = ["--filter", f"label={PROJECT_LABEL}={project}"]
    out = docker(settings, "ps", "-aq", *filt) if kind == "container" else docker(settings, kind, "ls", "--format", "{{.Name}}", *filt)
    return [line for line in out.split() if line]


def containers(settings: Settings, project: str) -> list[dict[str, Any]]:
    """`docker inspect` records of every container (running or not) of the compose project."""
    ids = _ids(settings, "container", project)
    return json_list(settings, "inspect", *ids) if ids else []


def volumes(settings: Settings, project: str) -> list[dict[str, Any]]:
    """Inspect records of compose project `project`'s volumes."""
    names = _ids(settings, "volume", project)
    return json_list(settings, "volume", "inspect", *names) if names else []


def networks(settings: Settings, project: str) -> list[str]:
    """Inspect records of compose project `project`'s networks."""
    return _ids(settings, "network", project)


def test_objects(settings: Settings, project: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(container records, network names) that tests of copy `project` started for themselves."""
    filt = ["--filter", f"label={TEST_COPY_LABEL}={project}"]
    ids = docker(settings, "ps", "-aq", *filt).split()
    return (json_list(settings, "inspect", *ids) if ids else []), docker(settings, "network", "ls", "--format", "{{.Name}}", *filt).split()


def images(settings: Settings, project: str) -> dict[str, str]:
    """{reference to remove: shown name} of the images compose built for the project (they carry its label).

    Tagged images by their tag (removing it leaves other tags of the same
    image alone), untagged leftovers of earlier builds by id.
    """
    out = docker(
        settings,
        "image",
        "ls",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
        "--filter",
        f"label={PROJECT_LABEL}={project}",
    )
    found: dict[str, str] = {}
    for line in out.splitlines():
        image_id, _, name = line.partition(" ")
        if image_id:
            ref = image_id if "<none>" in name else name
            found.setdefault(ref, name if "<none>" not in name else f"untagged {image_id[7:19]}")
    return found


def _inspected(settings: Settings, path: str) -> tuple[bool, dict[str, Any] | None]:
    """(answered, record) of GET `path` on the engine's socket: the record, None for 404, (False, None) to ask the CLI."""
    import json

    answer = engine_request(settings, path)
    if answer is None or answer[0] not in (200, 404):
        return False, None
    if answer[0] == 404:
        return True, None
    try:
        record = json.loads(answer[1])
    except ValueError:
        return False, None
    return (True, record) if isinstance(record, dict) else (False, None)


def volume(settings: Settings, name: str) -> dict[str, Any] | None:
    """The volume's inspect record, or None if it does not exist (the socket's answer, else the CLI's)."""
    from urllib.parse import quote

    answered, found = _inspected(settings, f"/volumes/{quote(name, safe='')}")
    if answered:
        return found
    try:
        record: dict[str, Any] = json_list(settings, "volume", "inspect", name)[0]
        return record
    except StackError as exc:
        if "no such volume" in str(exc).lower():
            return None
        raise


def container(settings: Settings, name: str) -> dict[str, Any] | None:
    """The container's inspect record, or None if it does not exist (the socket's answer, else the CLI's)."""
    from urllib.parse import quote

    answered, found = _inspected(settings, f"/containers/{quote(name, safe='')}/json")
    if answered:
        return found
    try:
        record: dict[str, Any] = json_list(settings, "container", "inspect", name)[0]
        return record
    except StackError as exc:
        if "no such" in str(exc).lower():
            return None
        raise


def image_id(settings: Settings, name: str) -> str | None:
    """The id of the image `name` refers to now, or None if there is none (socket, else CLI)."""
    from urllib.parse import quote

    answered, found = _inspected(settings, f"/images/{quote(name, safe='')}/json")
    if answered:
        return str(found["Id"]) if found and found.get("Id") else None
    try:
        return docker(settings, "image", "inspect", "--format", "{{.Id}}", name).strip() or None
    except StackError as exc:
        if "no such image" in str(exc).lower():
            return None
        raise


def project_containers(settings: Settings, project: str) -> list[dict[str, Any]] | None:
    """The engine's list entries (Id, State, Status, Labels, ImageID, Ports, ...) of every container of the
    compose project, from its socket in one request; None when the socket cannot be asked (callers use the CLI)."""
    return labelled_containers(settings, f"{PROJECT_LABEL}={project}")


def labelled_containers(settings: Settings, label: str) -> list[dict[str, Any]] | None:
    """List entries of every container (running or not) carrying `label` (`key` or `key=value`), in one
    request on the socket; None when the socket cannot be asked."""
    import json
    from urllib.parse import quote

    answer = engine_request(settings, f"/containers/json?all=1&filters={quote(json.dumps({'label': [label]}))}")
    if answer is None or answer[0] != 200:
        return None
    try:
        found = json.loads(answer[1])
    except ValueError:
        return None
    return found if isinstance(found, list) else None


def labelled_volumes(settings: Settings, label: str) -> list[dict[str, Any]] | None:
    """Every volume carrying `label`, with its labels, in one request on the socket; None when it cannot be asked."""
    import json
    from urllib.parse import quote

    answer = engine_request(settings, f"/volumes?filters={quote(json.dumps({'label': [label]}))}")
    if answer is None or answer[0] != 200:
        return None
    try:
        found = json.loads(answer[1]).get("Volumes")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, list) else ([] if found is None else None)


def api_version(settings: Settings) -> tuple[int, int] | None:
    """The engine's API version (1.44 is Docker Engine 25), or None when the engine does not answer."""
    import json

    raw = ""
    body = engine_get(settings, "/version")
    if body is not None:
        try:
            raw = str(json.loads(body).get("ApiVersion") or "")
        except (ValueError, AttributeError):
            raw = ""
    if not raw:
        try:
            raw = docker(settings, "version", "--format", "{{.Server.APIVersion}}").strip()
        except StackError:
            return None
    major, _, minor = raw.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def missing_images(settings: Settings, names: list[str]) -> list[str]:
    """The image references among `names` that are not on this machine."""
    import re

    if not names:
        return []
    proc = run_docker(settings, "image", "inspect", "--format", "{{.Id}}", *names, check=False)
    if proc.returncode == 0:
        return []
    missing = re.findall(r"No such image: (\S+)", proc.stderr.decode(errors="replace"))
    if not missing:
        docker(settings, "image", "inspect", *names)  # not a missing image: let docker() word the error
    return [name for name in names if name in missing]


def pull(settings: Settings, name: str) -> None:
    """`docker pull -q NAME`; StackError with docker's last line if it fails."""
    docker(settings, "pull", "-q", name)


def host_bindings(rec: dict[str, Any]) -> list[tuple[str, int]]:
    """[(host ip, host port)] an inspect record publishes."""
    return [
        (b.get("HostIp", ""), int(b["HostPort"]))
        for bindings in (rec.get("NetworkSettings", {}).get("Ports") or {}).values()
        for b in bindings or []
        if b.get("HostPort")
    ]


def published_ports(records: list[dict[str, Any]]) -> set[int]:
    """Host ports published by running containers among `records`."""
    return {port for rec in records if rec.get("State", {}).get("Running") for _, port in host_bindings(rec)}


# ---------------------------------------------------------------- where the engine is
def location(settings: Settings) -> tuple[str, str | None]:
    """(endpoint, host): the engine the docker CLI talks to (`local`, or its DOCKER_HOST / context endpoint)
    and the host its published ports are on (None: this machine).

    Follows the CLI: DOCKER_HOST, else DOCKER_CONTEXT, else the current context of
    `$DOCKER_CONFIG/config.json` (`docker context use`), read from its files (no CLI call).
    """
    endpoint = settings.get("DOCKER_HOST")
    if not endpoint:
        context = settings.get("DOCKER_CONTEXT") or _current_context(settings)
        if context and context != "default":
            endpoint = _context_endpoint(settings, context)
    host = _remote_host(endpoint)
    return (endpoint if host else "local"), host


def _current_context(settings: Settings) -> str:
    import json  # only parsed when the file names a context

    try:
        with open(os.path.join(settings.docker_config_dir(), "config.json"), "rb") as handle:
            raw = handle.read()
        if b"currentContext" not in raw:  # the common case, without parsing
            return ""
        context = json.loads(raw).get("currentContext") or ""
    except (OSError, ValueError, AttributeError):
        return ""
    return str(context)


def _context_endpoint(settings: Settings, context: str) -> str:
    """The docker endpoint of a CLI context, from its metadata file; StackError if there is no such context."""
    import hashlib
    import json

    meta = os.path.join(settings.docker_config_dir(), "contexts", "meta", hashlib.sha256(context.encode()).hexdigest(), "meta.json")
    try:
        with open(meta, "rb") as handle:
            return str(json.loads(handle.read())["Endpoints"]["docker"]["Host"])
    except (OSError, ValueError, KeyError, TypeError):
        raise StackError(f"docker context {context!r} is not defined (`docker context ls`)") from None


def _remote_host(endpoint: str) -> str | None:
    """The host of a tcp:// or ssh:// endpoint unless it is this machine (loopback, localhost)."""
    import ipaddress
    from urllib.parse import urlsplit

    if not endpoint or not endpoint.startswith(("tcp://", "ssh://", "http://", "https://")):
        return None
    host = urlsplit(endpoint).hostname or ""
    if host in ("", "localhost"):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a name: remote
    return host


# ---------------------------------------------------------------- every running container
def _socket_path(settings: Settings) -> str | None:
    """The engine's unix socket when the CLI would use it too (no remote host or context)."""
    host = settings.get("DOCKER_HOST")
    if settings.get("DOCKER_CONTEXT"):
        return None
    if host.startswith("unix://"):
        return host[len("unix://") :]
    if host or _current_context(settings) not in ("", "default"):
        return None  # another engine (`docker context use`): the CLI knows how to reach it
    return "/var/run/docker.sock"


def engine_get(settings: Settings, path: str) -> bytes | None:
    """GET `path` from the engine's local unix socket: the body, or None when it does not answer 200."""
    answer = engine_request(settings, path)
    return answer[1] if answer is not None and answer[0] == 200 else None


def engine_request(settings: Settings, path: str) -> tuple[int, bytes] | None:
    """GET `path` from the engine's local unix socket: (status, body), or None when the socket cannot be asked.

    Plain HTTP/1.0 on a socket: a few ms, where http.client's imports alone
    (ssl, email) cost more than the request, and the CLI ~50 ms.
    """
    import _socket  # the C module under socket.py, without its enum/selectors imports

    sock_path = _socket_path(settings)
    if not sock_path or not os.path.exists(sock_path):
        return None
    chunks = []
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.connect(sock_path)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None  # permission denied, refused: callers ask the CLI, which words the error
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if head[:7] != b"HTTP/1." or not head[9:12].isdigit():
        return None
    return int(head[9:12]), body


def running_containers(settings: Settings) -> list[dict[str, Any]]:
    """[{name, project, working_dir, ports: [(host_ip, host_port)]}] of every running container."""
    import json

    body = engine_get(settings, "/containers/json")
    if body is not None:
        try:
            return [
                {
                    "name": (rec.get("Names") or ["?"])[0].lstrip("/"),
                    "project": (rec.get("Labels") or {}).get(PROJECT_LABEL),
                    "working_dir": (rec.get("Labels") or {}).get(WORKDIR_LABEL),
                    "ports": [(p.get("IP", ""), int(p["PublicPort"])) for p in rec.get("Ports") or [] if p.get("PublicPort")],
                }
                for rec in json.loads(body)
            ]
        except (ValueError, TypeError, AttributeError):
            pass  # an odd engine: ask the CLI instead
    ids = docker(settings, "ps", "-q").split()
    records = json_list(settings, "inspect", *ids) if ids else []
    out = []
    for rec in records:
        labels = rec.get("Config", {}).get("Labels") or {}
        out.append(
            {
                "name": rec.get("Name", "?").lstrip("/"),
                "project": labels.get(PROJECT_LABEL),
                "working_dir": labels.get(WORKDIR_LABEL),
                "ports": host_bindings(rec),
            }
        )
    return out
