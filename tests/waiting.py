"""Waiting in tests for something another thread or process does."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 20, interval: float = 0.1,
               what: str | Callable[[], object] = "the condition",
               alive: subprocess.Popen | None = None) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a true value, and return
    that; fail the test once ``timeout`` seconds have passed, or at once when the process
    ``alive`` has exited. ``what`` (or what it returns) names it in the failure."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        name = what() if callable(what) else what
        assert alive is None or alive.poll() is None, f"the process exited before {name}"
        assert time.monotonic() < deadline, f"timed out waiting for {name}"
        time.sleep(interval)
    return value


def accepts(host: str, port: int) -> bool:
    """Whether something listens on host:port (a connection is made and closed)."""
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 30, *, host: str = "127.0.0.1",
                  alive: subprocess.Popen | None = None) -> None:
    """Wait until a server started by the test listens on ``port``."""
    wait_until(lambda: accepts(host, port), timeout, 0.05, f"a listener on {host}:{port}",
               alive)
