"""`python -m adopt TARGET` with scripts/ on PYTHONPATH (`make adopt` sets it, as pytest.ini's pythonpath does for the tests)."""

import sys

from .cli import main

sys.exit(main())
