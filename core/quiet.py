"""Logging what hostile or broken clients do without letting them flood the log: a warning
per key (a source address, say) at most once in a while; the audit trail and the message log
keep every event."""

from __future__ import annotations

import threading
import time

_last: dict[str, float] = {}
_lock = threading.Lock()
_MAX_KEYS = 10_000


def due(key: str, seconds: float = 60.0) -> bool:
    """True at most once per ``seconds`` for ``key``: whether to log this one."""
    now = time.monotonic()
    with _lock:
        if now - _last.get(key, -seconds) < seconds:
            return False
        if len(_last) >= _MAX_KEYS:  # a flood from many addresses: forget the oldest
            for old in sorted(_last, key=_last.get)[:_MAX_KEYS // 2]:
                del _last[old]
        _last[key] = now
        return True
