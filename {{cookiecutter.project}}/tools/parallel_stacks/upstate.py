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
without calling it. Even `compose config` is skipped when what it reads is
unchanged: the compose file's bytes, the project's `.env`, and every
environment variable whose name appears in the compose file or starts with
COMPOSE_ or DOCKER_ (a file that names other files, `env_file:`,
`extends:`, `include:`, always asks compose). Anything else (an edit anywhere, a container stopped,
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

from . import labels
from .model import Copy
from .settings import Settings

__all__ = ["config_key", "context_digest", "inputs_digest", "model_of", "record", "remembered_model", "stamp_path", "unchanged"]

FORMAT = 2
SKIP_DIRS = {".git", "__pycache__", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}


def stamp_path(copy: Copy, settings: Settings) -> str:
    """$XDG_CACHE_HOME/parallel-stacks/up/<worktree, flattened>%<compose project>.json"""
    flat = copy.env["STACK_WORKTREE"].strip(os.sep).replace(os.sep, "%")
    return os.path.join(settings.cache_dir(), "up", f"{flat}%{copy.env['COMPOSE_PROJECT_NAME']}.json")


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


def config_key(cmd: list[str], version: str, compose_files: list[str], env: Mapping[str, str]) -> str | None:
    """What `compose config` reads, as one digest: the compose files, stack.yml (profiles), .env and the variables
    the files name; None when a compose file names other files it would read."""
    import re

    texts = []
    for path in compose_files:
        try:
            with open(path, encoding="utf-8") as handle:
                texts.append(handle.read())
        except OSError:
            return None
    text = "\0".join(texts)
    if re.search(r"^\s*-?\s*(env_file|extends|include|label_file|file)\s*:", text, re.M):
        return None
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    relevant = sorted((k, v) for k, v in env.items() if k in names or k.startswith(("COMPOSE_", "DOCKER_")))
    root = env.get("STACK_WORKTREE", "")
    digest = hashlib.sha256(json.dumps([FORMAT, cmd, version, compose_files, root, relevant]).encode())
    digest.update(b"\0compose\0" + text.encode())
    for name in (".env", "stack.yml"):
        try:
            with open(os.path.join(root, name), "rb") as handle:
                digest.update(f"\0{name}\0".encode() + handle.read())
        except OSError:
            digest.update(f"\0no {name}".encode())
    return digest.hexdigest()


def model_of(config_text: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """What the stamp keeps of `compose config` (no values: they may be secrets): a digest of its text, each
    service's image and build context, and the images it names."""
    from .composecli import required_images

    services = {}
    for name, svc in (config.get("services") or {}).items():
        if not isinstance(svc, dict):
            continue
        build = svc.get("build")
        services[name] = {
            "image": svc.get("image"),
            "build": {"context": build.get("context"), "dockerfile": build.get("dockerfile")} if isinstance(build, dict) else build,
        }
    return {"text": hashlib.sha256(config_text.encode()).hexdigest(), "services": services, "images": sorted(required_images(config))}


def remembered_model(copy: Copy, key: str | None, settings: Settings) -> dict[str, Any] | None:
    """The model the stamp recorded when `compose config` read exactly what `key` describes; None otherwise."""
    if key is None:
        return None
    stamp = _load(stamp_path(copy, settings))
    model = stamp.get("model")
    return model if stamp.get("config_key") == key and isinstance(model, dict) else None


def service_images(config: Mapping[str, Any], project: str, separator: str = "-") -> dict[str, str]:
    """{service: the image name its container runs}: `image:`, or what compose names a build
    (<project>-<service>; Compose v1: <project>_<service>)."""
    return {
        name: str(svc.get("image") or f"{project}{separator}{name}")
        for name, svc in (config.get("services") or {}).items()
        if isinstance(svc, dict)
    }


def inputs_digest(settings: Settings, cmd: list[str], model: Mapping[str, Any]) -> str | None:
    """What the copy is started from (model_of's), as one digest; None when an image it names is missing
    (the full path pulls it) or a build context is not a directory here."""
    from . import engine

    digest = hashlib.sha256(json.dumps([FORMAT, cmd]).encode())
    digest.update(str(model.get("text")).encode())
    for name, svc in sorted((model.get("services") or {}).items()):
        build = svc.get("build")
        if isinstance(build, dict) and build.get("context") and os.path.isdir(str(build["context"])):
            digest.update(f"\0build {name}\0".encode() + context_digest(str(build["context"]), build.get("dockerfile")).encode())
        elif build:
            return None  # a remote context (git URL): only compose can tell
    for image in sorted(set(model.get("images") or [])):
        found = engine.image_id(settings, image)
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


def unchanged(copy: Copy, digest: str | None, model: Mapping[str, Any], settings: Settings, separator: str = "-") -> bool:
    """True when the copy runs exactly what the last successful `up` started from `digest`, all of it healthy
    (`separator`: how this compose names the images it builds, see service_images)."""
    from . import engine

    if digest is None:
        return False
    stamp = _load(stamp_path(copy, settings))
    if stamp.get("digest") != digest:
        return False
    project = copy.env["COMPOSE_PROJECT_NAME"]
    entries = engine.project_containers(settings, project)
    if not entries or sorted(str(e.get("Id")) for e in entries) != sorted(stamp.get("containers") or []):
        return False
    if not all(_healthy(e) for e in entries):
        return False
    wanted = service_images(model, project, separator)
    services = [str((e.get("Labels") or {}).get(labels.SERVICE, "")) for e in entries]
    if sorted(services) != sorted(wanted):
        return False  # a service without its container, or one twice: compose's business
    return all(engine.image_id(settings, wanted[svc]) == e.get("ImageID") for svc, e in zip(services, entries))


def record(
    copy: Copy,
    digest: str | None,
    settings: Settings,
    key: str | None = None,
    model: Mapping[str, Any] | None = None,
) -> None:
    """After a successful `up`: the copy's containers were started from `digest` (no stamp if there is none);
    `key` and `model`: what `compose config` read and what the stamp keeps of its answer."""
    from . import engine

    path = stamp_path(copy, settings)
    entries = engine.project_containers(settings, copy.env["COMPOSE_PROJECT_NAME"]) if digest is not None else None
    if digest is None or not entries:
        forget(copy, settings)
        return
    data = {
        "format": FORMAT,
        "digest": digest,
        "containers": sorted(str(e.get("Id")) for e in entries),
        "config_key": key,
        "model": dict(model) if model is not None else None,
    }
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


def forget(copy: Copy, settings: Settings) -> None:
    """Remove the copy's quick-up stamp (after `make nuke`): the next `make up` takes the full path."""
    try:
        os.unlink(stamp_path(copy, settings))
    except OSError:
        pass
