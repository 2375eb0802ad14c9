"""`make env` / `make ports` at interpreter speed: a cache keyed by every input's exact bytes.

What derive computes depends only on stack.yml, the env files, .env.dynamic,
this package's code, the project's path and the environment variables the
derivation reads. An entry stores exactly which variables it read (and
their values), the input files' bytes verbatim (no mtime: a same-size
rewrite within one clock tick still misses), the package's modules by size
and mtime, and the output; a hit is what a fresh computation would print. A derivation that asked the slot registry
(PORT_OFFSET=auto, a task id, a build number) or failed is never stored.
One cache file per project, in the user's cache directory
(`~/.cache/parallel-stacks/derived/`), never in the worktree.

Imports nothing beyond os and marshal on a hit: yaml, dotenv, re, pathlib and
argparse cost several times the interpreter's own start-up.
"""

from __future__ import annotations

import marshal
import os

from .settings import SLOT_SOURCES

TYPE_CHECKING = False  # typing costs a fifth of this path's start-up: types for mypy only
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from .settings import Settings

__all__ = ["REGISTRY_SOURCES", "Recorder", "cached", "inputs"]

PACKAGE = os.path.dirname(os.path.realpath(__file__))
FORMAT = 4
KEEP = 16  # entries: a few offsets, ENVs and projects
REGISTRY_SOURCES = ("auto", *SLOT_SOURCES)  # offsets that asked the slot registry: never stored


class Recorder(dict):  # type: ignore[type-arg]
    """The environment, remembering every variable asked for (present or not)."""

    def __init__(self, environ: Mapping[str, str]):
        super().__init__(environ)
        self.asked: dict[str, str | None] = {}

    def __getitem__(self, key: str) -> str:
        self.asked[key] = super().get(key)
        return str(super().__getitem__(key))

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked[key] = super().get(key)
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        """A lookup the derivation made: recorded (the variable and its value key the cache entry), then answered."""
        self.asked[key] = super().get(key)
        return super().get(key, default)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _code() -> list[tuple[str, int, int]]:
    """Every module of this package by size and modification time: an edit to any is a miss.

    Stat, not content: reading ~40 modules on every `make env` cost more than
    the rest of the hit. (The data files above stay keyed by their bytes:
    those are what users rewrite in place within one clock tick.)
    """
    found = []
    for directory, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found.append((os.path.relpath(path, PACKAGE), st.st_size, st.st_mtime_ns))
    return found


def inputs(root: str, command: str, settings: Settings) -> bytes:
    """The files the derivation reads, verbatim, with the command and project path."""
    env_dir = os.path.join(root, "env")
    try:
        env_files = sorted(n for n in os.listdir(env_dir) if n.endswith(".env"))
    except OSError:
        env_files = []
    files = [("stack.yml", _read(os.path.join(root, "stack.yml"))), (".env.dynamic", _read(os.path.join(root, ".env.dynamic")))]
    files += [("env/" + n, _read(os.path.join(env_dir, n))) for n in env_files]
    files.append(("docker context", _docker_context(settings)))
    return marshal.dumps((FORMAT, root, command, tuple(files), tuple(_code())))


def _docker_context(settings: Settings) -> bytes | None:
    """What of the docker CLI's config decides the engine (`docker context use` writes currentContext):
    the part of config.json from that key on, never the whole file (it may hold credentials)."""
    config = settings.docker_config_dir()
    raw = _read(os.path.join(config, "config.json"))
    if raw is None or b'"currentContext"' not in raw:
        return None
    start = raw.index(b'"currentContext"')
    return raw[start : raw.find(b",", start) if b"," in raw[start:] else start + 200]


def cache_file(root: str, settings: Settings) -> str:
    """This project's cache file: $XDG_CACHE_HOME/parallel-stacks/derived/<its path, flattened>.marshal."""
    return os.path.join(settings.cache_dir(), "derived", root.strip(os.sep).replace(os.sep, "%") + ".marshal")


def _load(path: str) -> list[Any]:
    data = _read(path)
    if data is None:
        return []
    try:
        entries = marshal.loads(data)
        return entries if isinstance(entries, list) else []
    except (EOFError, ValueError, TypeError):
        return []


def _store(path: str, entries: list[Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(marshal.dumps(entries[:KEEP]))
        os.replace(tmp, path)  # atomic: concurrent readers see the old or the new file
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # a read-only install just runs uncached


def cached(root: str, key: bytes, settings: Settings, compute: Callable[[Settings], tuple[Any, bool]]) -> Any:
    """The stored payload for `key` and the environment; else compute(recording) -> (payload, storable), where
    `recording` are these settings remembering every variable the computation asks for."""
    path = cache_file(root, settings)
    entries = [e for e in _load(path) if isinstance(e, tuple) and len(e) == 4 and e[0] == FORMAT]  # older formats go
    for _, entry_key, asked, payload in entries:
        if entry_key == key and all(settings.env.get(k) == v for k, v in asked):
            return payload
    recorder = Recorder(settings.env)
    payload, storable = compute(type(settings)(recorder))
    if storable:
        entry = (FORMAT, key, tuple(sorted(recorder.asked.items())), payload)
        _store(path, [entry, *(e for e in entries if e[:3] != entry[:3])])
    return payload
