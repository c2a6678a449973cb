"""Waiting in tests for something another thread or process does."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 20, interval: float = 0.1,
               what: str | Callable[[], object] = "the condition") -> None:
    """Call ``predicate`` every ``interval`` seconds until it is true; fail the test once
    ``timeout`` seconds have passed. ``what`` (or what it returns) names it in the failure."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, \
            f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(interval)
