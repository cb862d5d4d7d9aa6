"""Where things are, for tests in any folder: the repository, the tests, their data."""

from pathlib import Path

__all__ = ["CONFIGS", "FIXTURES", "REPO", "TESTS"]

TESTS = Path(__file__).resolve().parents[1]
"""``tests/``."""
REPO = TESTS.parent
"""The repository's root (``routing.yaml``, ``deploy/``, ``.venv``)."""
CONFIGS = TESTS / "configs"
"""The corpus of broken routing files."""
FIXTURES = TESTS / "fixtures"
"""Upstream fixtures (WSDLs, generic services)."""
