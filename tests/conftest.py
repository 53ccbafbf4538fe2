"""Shared fixtures."""

from __future__ import annotations

import sys

import pytest

from helpers import DATA


@pytest.fixture(scope="session")
def recipe():
    sys.path.insert(0, str(DATA / "golden"))
    try:
        import recipe as module
    finally:
        sys.path.pop(0)
    return module
