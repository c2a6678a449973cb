"""A value read again from the database at most every few seconds: what every request
consults (the AE table's permissions, the forwarding rules) costs a clock reading, and a change
made elsewhere applies within that time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Reloaded(Generic[T]):
    def __init__(self, load: Callable[[], T], seconds: float) -> None:
        self._load, self._seconds = load, seconds
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._value: T | None = None

    def _stale(self) -> bool:
        return self._loaded_at is None or time.monotonic() - self._loaded_at >= self._seconds

    def get(self) -> T:
        if self._stale():
            with self._lock:
                if self._stale():  # another thread may have loaded it meanwhile
                    self._value = self._load()
                    self._loaded_at = time.monotonic()
        return self._value  # type: ignore[return-value]

    def forget(self) -> None:
        """Load it again at the next get() (this process has just changed it)."""
        self._loaded_at = None
