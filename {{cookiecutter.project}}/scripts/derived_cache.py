#!/usr/bin/env python3
"""`make env` / `make ports` at interpreter speed: a cache keyed by every input's exact bytes.

What stack_config derives depends only on stack.yml, the env files,
.env.dynamic, the code that derives (stack_config.py, registry.py), the worktree's path and a few
environment variables (ENV_INPUTS). The key is all of those, verbatim (no
hash, no mtime: a same-size rewrite within one clock tick still misses),
so a hit is exactly what a fresh computation would print. A miss, any
PORT_OFFSET=auto (the registry must be asked), or any error goes to
stack_config, and only successful output is stored. The cache lives in
scripts/__pycache__/ (gitignored with the bytecode).

Imports nothing beyond os, sys and marshal on a hit: yaml, dotenv, re,
pathlib and argparse cost several times the interpreter's own start-up.
"""
import marshal
import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.join(HERE, "__pycache__", "derived.marshal")
FORMAT = 1
KEEP = 16  # entries: a few offsets and ENVs per worktree
COMMANDS = ("env", "ports")  # and "values", for check-ports
ENV_INPUTS = (
    "STACK_ENV", "ENV", "PORT_OFFSET", "BIND_ADDRESS", "TASK_ID", "ZENFLOW_TASK_ID",
    "CI_BUILD_NUMBER", "BUILD_NUMBER", "CI_JOB_ID", "GITHUB_RUN_ID",
    "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "SHOW_SECRETS",
    "DEFAULT_PORT_OFFSET", "PARALLEL_STACKS_STATE_DIR", "XDG_STATE_HOME",
)
# Offsets these name go through the slot registry, which a cache cannot see.
REGISTRY_INPUTS = (b"TASK_ID", b"CI_BUILD_NUMBER", b"BUILD_NUMBER", b"CI_JOB_ID", b"GITHUB_RUN_ID")


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def inputs_key(command, environ=None):
    """The exact inputs of `stack_config.py <command>`, as bytes; None when they must not be cached."""
    environ = os.environ if environ is None else environ
    env_dir = os.path.join(ROOT, "env")
    try:
        env_files = sorted(n for n in os.listdir(env_dir) if n.endswith(".env"))
    except OSError:
        env_files = []
    files = [("stack.yml", _read(os.path.join(ROOT, "stack.yml"))),
             (".env.dynamic", _read(os.path.join(ROOT, ".env.dynamic"))),
             ("stack_config.py", _read(os.path.join(HERE, "stack_config.py"))),
             ("registry.py", _read(os.path.join(HERE, "registry.py")))]
    files += [("env/" + n, _read(os.path.join(env_dir, n))) for n in env_files]
    variables = tuple((k, environ.get(k)) for k in ENV_INPUTS)
    if b"auto" in (environ.get("PORT_OFFSET") or "").lower().encode() or any(
        content is not None and b"auto" in content.lower() for name, content in files if not name.endswith(".py")
    ):
        return None  # PORT_OFFSET=auto asks the registry, which a cache cannot see
    if any(environ.get(k.decode()) is not None for k in REGISTRY_INPUTS + (b"ZENFLOW_TASK_ID",)) or any(
        content is not None and any(k in content for k in REGISTRY_INPUTS) for name, content in files if name.startswith("env/")
    ):
        return None  # so do task ids and build numbers
    return marshal.dumps((FORMAT, ROOT, command, variables, tuple(files)))


def _load():
    data = _read(CACHE)
    if data is None:
        return []
    try:
        entries = marshal.loads(data)
        return entries if isinstance(entries, list) else []
    except (EOFError, ValueError, TypeError):
        return []


def lookup(key):
    for entry_key, payload in _load():
        if entry_key == key:
            return payload
    return None


def store(key, payload):
    entries = [e for e in _load() if e[0] != key][: KEEP - 1]
    entries.insert(0, (key, payload))
    tmp = f"{CACHE}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(CACHE), exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(marshal.dumps(entries))
        os.replace(tmp, CACHE)  # atomic: concurrent readers see the old or the new file
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # a read-only checkout just runs uncached


def cached(key, compute):
    """The stored payload for `key`; else compute() -> (payload, ok), stored when ok and key is not None."""
    if key is not None:
        hit = lookup(key)
        if hit is not None:
            return hit
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    payload, ok = compute()
    if ok and key is not None:
        store(key, payload)
    return payload


def values(environ=None):
    """(values, services) as stack_config.load() and .services() give them, cached like `make env`."""

    def compute():
        import stack_config

        return (stack_config.load(environ=environ), stack_config.services()), True

    return cached(inputs_key("values", environ), compute)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    code = 0

    def compute():
        nonlocal code
        import io
        from contextlib import redirect_stdout

        import stack_config

        buffer = io.StringIO()
        with redirect_stdout(buffer):
            code = stack_config.main(argv)
        return buffer.getvalue(), code == 0

    sys.stdout.write(cached(inputs_key(argv[0]) if len(argv) == 1 and argv[0] in COMMANDS else None, compute))
    return code

if __name__ == "__main__":
    sys.exit(main())
