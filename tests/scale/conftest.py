"""Scale slice: runs only when DATABASE_URL (PostgreSQL) and REDIS_URL are set (scripts/test.sh
starts both and runs this folder a second time with them)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DATABASE_URL", "").startswith("postgres") and os.environ.get("REDIS_URL"):
        return
    skip = pytest.mark.skip(reason="scale slice: needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    for item in items:
        if "tests/scale" in str(item.fspath):
            item.add_marker(skip)
