"""`make worktree` / `make worktree-remove` and scripts/worktree.sh on a real git repository and a real engine.

`make soak` runs 20 create/up/remove cycles; here two, and every refusal.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import Project, bake, one_error_line
from test_e2e import health, inspect_project, volume_exists

pytestmark = pytest.mark.docker
GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
MAIN_OFFSET = "7500"


def git(path, *args) -> str:
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True, env={**os.environ, **GIT_ID}).stdout


@pytest.fixture
def repo(tmp_path, image_env):
    """A baked project as a git repository (one commit); every worktree it made, and its copy, removed afterwards."""
    project = Project(bake(tmp_path / "src"), {**image_env, **GIT_ID, "PARALLEL_STACKS_STATE_DIR": str(tmp_path / "state")})
    git(project.path, "init", "-q")
    git(project.path, "add", "-A")
    git(project.path, "commit", "-qm", "baked")
    yield project
    for line in git(project.path, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree ") and line[9:] != str(project.path):
            project.make("worktree-remove", check=False, NAME=line[9:], FORCE="1")
    project.make("nuke", check=False, PORT_OFFSET=MAIN_OFFSET, FORCE="1")


def labelled(project_name: str) -> list[str]:
    found = []
    for args in (["ps", "-aq"], ["volume", "ls", "-q"], ["network", "ls", "-q"]):
        out = subprocess.run(["docker", *args, "--filter", f"label=com.docker.compose.project={project_name}"],
                             capture_output=True, text=True, check=True).stdout
        found += out.split()
    return found


def test_worktree_up_and_remove_twice_leaves_nothing(repo, tmp_path):
    (repo.path / "env" / "local.env").write_text("MY_SETTING=kept\nPOSTGRES_PASSWORD=main-secret\nPORT_OFFSET=7500\n")
    for n in range(2):
        name = f"t{n}"
        out = repo.make("worktree", NAME=name, UP="1")
        path = repo.path.parent / f"{repo.path.name}.{name}"
        assert f"worktree {path} (branch {name}), copy demo-stack-" in out.stdout, out.stdout + out.stderr
        local = (path / "env" / "local.env").read_text()
        assert "MY_SETTING=kept" in local and "main-secret" not in local and "PORT_OFFSET=" not in local
        tree = Project(path, repo.base_env)
        values = tree.values()
        assert values["PORT_OFFSET_SOURCE"] == ".env.dynamic" and values["PORT_OFFSET"] != MAIN_OFFSET
        assert health(values)["status"] == "ok"
        name_of_copy = values["COMPOSE_PROJECT_NAME"]
        assert inspect_project(name_of_copy)
        removed = repo.make("worktree-remove", NAME=name)
        assert f"removed worktree {path}" in removed.stdout
        assert not path.exists() and name not in git(repo.path, "worktree", "list")
        assert labelled(name_of_copy) == [] and not volume_exists(values["DB_DATA_VOLUME"])
        claims = json.loads((tmp_path / "state" / "registry.json").read_text())["claims"]
        assert not [c for c in claims.values() if c["worktree"] == str(path)], claims
        assert name in git(repo.path, "branch"), "the branch is the user's: kept"


def test_worktree_refusals_are_one_line_and_change_nothing(repo):
    repo.make("worktree", NAME="w1")
    (repo.path.parent / f"{repo.path.name}.taken").mkdir()
    git(repo.path, "branch", "existing")
    before = git(repo.path, "worktree", "list")
    cases = {
        "a/b": "is not a worktree name", "a b": "is not a worktree name", "..": "is not a worktree name",
        "../evil": "is not a worktree name", "existing": "branch 'existing' exists already", "taken": "exists already",
    }
    for name, message in cases.items():
        out = repo.make("worktree", check=False, NAME=name)
        assert out.returncode != 0 and message in one_error_line(out.stderr), (name, out.stderr)
    missing = repo.make("worktree", check=False)
    assert "which worktree?" in one_error_line(missing.stderr)
    # removing: a dirty worktree, the one we are in, one that does not exist
    w1 = repo.path.parent / f"{repo.path.name}.w1"
    (w1 / "notes.txt").write_text("unsaved work")
    here = git(repo.path, "branch", "--show-current").strip()
    for name, message in (("w1", "has uncommitted changes"), ("nope", "no worktree of this repository"), (here, "the worktree you are in")):
        out = repo.make("worktree-remove", check=False, NAME=name)
        assert out.returncode != 0 and message in one_error_line(out.stderr), (name, out.stderr)
    assert (w1 / "notes.txt").exists() and git(repo.path, "worktree", "list") == before


def test_removing_a_worktree_that_holds_another_worktrees_copy_is_refused(repo):
    """w2 is pointed at the main worktree's running copy: its removal must not nuke that copy."""
    repo.make("up", PORT_OFFSET=MAIN_OFFSET)
    main_copy = f"demo-stack-{MAIN_OFFSET}"
    running = sorted(r["Id"] for r in inspect_project(main_copy))
    repo.make("worktree", NAME="w2")
    w2 = repo.path.parent / f"{repo.path.name}.w2"
    with open(w2 / "env" / "local.env", "a") as local:
        local.write(f"PORT_OFFSET={MAIN_OFFSET}\n")
    out = repo.make("worktree-remove", check=False, NAME="w2")
    assert out.returncode != 0, out.stdout
    assert f"compose project {main_copy} belongs to another worktree ({repo.path})" in one_error_line(out.stderr), out.stderr
    assert w2.exists() and sorted(r["Id"] for r in inspect_project(main_copy)) == running
    assert health(repo.values(PORT_OFFSET=MAIN_OFFSET))["status"] == "ok"


def test_the_executable_speaks_claude_codes_hook_contract(repo):
    script = repo.path / "scripts" / "worktree.sh"
    env = repo.environment()
    created = subprocess.run([str(script), "claude-create"], input=json.dumps({"name": "agent-7", "cwd": str(repo.path)}),
                             cwd=repo.path, env=env, capture_output=True, text=True)
    path = repo.path.parent / f"{repo.path.name}.agent-7"
    assert created.returncode == 0, created.stderr
    assert created.stdout == f"{path}\n", "stdout must hold the path and nothing else"
    assert (path / ".env.dynamic").exists()
    bad = subprocess.run([str(script), "claude-create"], input="not json", cwd=repo.path, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and one_error_line(bad.stderr) == "error: the hook's stdin is not JSON" and bad.stdout == ""
    removed = subprocess.run([str(script), "claude-remove"], input=json.dumps({"worktree_path": str(path)}), cwd=repo.path, env=env,
                             capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    assert not path.exists()
