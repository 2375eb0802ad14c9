"""`python scripts/adopt TARGET`: the package run as a directory (scripts/ onto the path first)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adopt.cli import main  # noqa: E402

sys.exit(main())
