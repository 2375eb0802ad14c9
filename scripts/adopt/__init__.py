"""`make adopt TARGET=path/to/repo`: give an existing compose project parallel copies.

Reads the repository's compose files as compose finds them (composefiles), converts them in place with the
old values as defaults (convert: published ports, named volumes, bind-mounted data, container names), writes
`stack.yml` (stackfile) and installs the helper package with the static `parallel-stacks.mk` (makeinclude).
Run by hand (`docker compose up`), the project behaves as before. Shows a diff of every file it changes; what it
cannot convert is refused in one line and nothing is written. A second run changes nothing.
"""

from .cli import apply, main, plan
from .common import Refused
from .convert import published_port
from .kinds import kind_of

__all__ = ["Refused", "apply", "kind_of", "main", "plan", "published_port"]
