"""Registers the per-worker isolation plugin (scripts/pytest_isolation.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))

pytest_plugins = ["pytest_isolation"]
