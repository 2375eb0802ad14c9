"""`make up` on a copy that is already up: answered without compose when nothing changed.

`compose up --wait` on an up copy costs ~2 s (compose's own round of
checks), and the `compose build` before it another ~0.3 s, to conclude that
nothing changes. After every successful `up` a stamp records what the copy
was started from: a digest of the resolved compose model (`compose config`:
every variable, env file and image name), of every build context's files
(bytes, not mtimes) and the ids of the images it names, with the ids of the
containers that came up. The next `up` computes the same digest; when it
matches, the copy has exactly those containers, every one running and
healthy, and every service's image name still points at the image its
container runs, there is nothing compose would change, and `up` says so
without calling it. Anything else (an edit anywhere, a container stopped,
unhealthy, replaced or added, an image rebuilt or pulled, extra compose
arguments) takes the full path. The stamp lives in the user's cache
directory, never in the worktree; a stale or missing one only costs the
full path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["context_digest", "inputs_digest", "record", "stamp_path", "unchanged"]

FORMAT = 1
SKIP_DIRS = {".git", "__pycache__", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}


def stamp_path(values: Mapping[str, str], environ: Mapping[str, str] | None = None) -> str:
    """$XDG_CACHE_HOME/parallel-stacks/up/<worktree, flattened>%<compose project>.json"""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    flat = values["STACK_WORKTREE"].strip(os.sep).replace(os.sep, "%")
    return os.path.join(base, "parallel-stacks", "up", f"{flat}%{values['COMPOSE_PROJECT_NAME']}.json")


def context_digest(directory: str, dockerfile: str | None = None) -> str:
    """Every file of a build context (path, mode, bytes) and its Dockerfile: an edit anywhere changes it."""
    digest = hashlib.sha256()
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = os.path.join(current, name)
            try:
                st = os.stat(path)
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                data, st = b"", None
            digest.update(os.path.relpath(path, directory).encode() + b"\0")
            digest.update(f"{st.st_mode if st else 0}\0{len(data)}\0".encode() + data)
    if dockerfile and not os.path.isabs(dockerfile):
        dockerfile = os.path.join(directory, dockerfile)
    if dockerfile and not os.path.realpath(dockerfile).startswith(os.path.realpath(directory) + os.sep):
        try:
            with open(dockerfile, "rb") as handle:
                digest.update(b"dockerfile\0" + handle.read())
        except OSError:
            digest.update(b"dockerfile missing\0")
    return digest.hexdigest()


def service_images(config: Mapping[str, Any], project: str) -> dict[str, str]:
    """{service: the image name its container runs}: `image:`, or what compose names a build (<project>-<service>)."""
    return {
        name: str(svc.get("image") or f"{project}-{name}") for name, svc in (config.get("services") or {}).items() if isinstance(svc, dict)
    }


def inputs_digest(cmd: list[str], config_text: str, config: Mapping[str, Any], named_images: list[str]) -> str | None:
    """What the copy is started from, as one digest; None when an image it names is missing (the full path pulls it)."""
    from .. import engine

    digest = hashlib.sha256(json.dumps([FORMAT, cmd]).encode())
    digest.update(config_text.encode())
    for name, svc in sorted((config.get("services") or {}).items()):
        build = svc.get("build") if isinstance(svc, dict) else None
        if isinstance(build, dict) and build.get("context") and os.path.isdir(str(build["context"])):
            digest.update(f"\0build {name}\0".encode() + context_digest(str(build["context"]), build.get("dockerfile")).encode())
        elif build:
            return None  # a remote context (git URL): only compose can tell
    for image in sorted(set(named_images)):
        found = engine.image_id(image)
        if found is None:
            return None
        digest.update(f"\0image {image} {found}".encode())
    return digest.hexdigest()


def _healthy(entry: Mapping[str, Any]) -> bool:
    """A list entry of a running container whose health check (if any) says healthy."""
    status = str(entry.get("Status") or "")
    return entry.get("State") == "running" and ("(" not in status or "(healthy)" in status)


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def unchanged(values: Mapping[str, str], digest: str | None, config: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """True when the copy runs exactly what the last successful `up` started from `digest`, all of it healthy."""
    from .. import engine

    if digest is None:
        return False
    stamp = _load(stamp_path(values, environ))
    if stamp.get("digest") != digest:
        return False
    project = values["COMPOSE_PROJECT_NAME"]
    entries = engine.project_containers(project)
    if not entries or sorted(str(e.get("Id")) for e in entries) != sorted(stamp.get("containers") or []):
        return False
    if not all(_healthy(e) for e in entries):
        return False
    wanted = service_images(config, project)
    services = [str((e.get("Labels") or {}).get("com.docker.compose.service", "")) for e in entries]
    if sorted(services) != sorted(wanted):
        return False  # a service without its container, or one twice: compose's business
    return all(engine.image_id(wanted[svc]) == e.get("ImageID") for svc, e in zip(services, entries))


def record(values: Mapping[str, str], digest: str | None, environ: Mapping[str, str]) -> None:
    """After a successful `up`: the copy's containers were started from `digest` (no stamp if there is none)."""
    from .. import engine

    path = stamp_path(values, environ)
    entries = engine.project_containers(values["COMPOSE_PROJECT_NAME"]) if digest is not None else None
    if digest is None or not entries:
        forget(values, environ)
        return
    data = {"format": FORMAT, "digest": digest, "containers": sorted(str(e.get("Id")) for e in entries)}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # no cache directory: every `up` takes the full path


def forget(values: Mapping[str, str], environ: Mapping[str, str]) -> None:
    try:
        os.unlink(stamp_path(values, environ))
    except OSError:
        pass
