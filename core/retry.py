"""One backoff schedule for deliveries to peers that may be down (HL7 status messages, UPS
event reports): try again after 1, 2, 5, 10, 30, 60, 120 s, then every 5 minutes, up to
MAX_ATTEMPTS attempts in all."""

from __future__ import annotations

RETRY_DELAYS = (1, 2, 5, 10, 30, 60, 120, 300)  # seconds
MAX_ATTEMPTS = 20


def retry_delay(attempts: int) -> float | None:
    """Seconds to wait after `attempts` failed attempts, or None once there were enough."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return RETRY_DELAYS[min(max(attempts, 1) - 1, len(RETRY_DELAYS) - 1)]
