"""Validate answers before anything is written; one line and exit 1 on error."""
import json
import re
import sys

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

SLUG = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
PG_USER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    project = ANSWERS["project"]
    if not SLUG.match(project):
        fail(
            f"project {project!r} is not a valid slug: use 1-40 lowercase letters, digits, "
            "'-' or '_', starting with a letter"
        )
    if not PG_USER.match(ANSWERS["postgres_user"]):
        fail(
            f"postgres_user {ANSWERS['postgres_user']!r} is not valid: use lowercase letters, "
            "digits or '_', starting with a letter or '_'"
        )
    for key in ("with_redis", "with_mqtt", "with_ui"):
        if not isinstance(ANSWERS[key], bool):
            fail(f"{key} must be true or false, got {ANSWERS[key]!r}")
    for key in ("project_name", "description"):
        if any(ord(c) < 32 for c in ANSWERS[key]):
            fail(f"{key} must not contain control characters (newlines, tabs)")


main()
