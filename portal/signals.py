"""Signals of the portal's processes, so that the apps never import the commands or each
other for them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by `manage.py serve` in embedded mode once its listeners run: deliveries that were
# still pending when the portal last stopped (HL7 status messages, UPS event reports) are sent
# again. In scale mode Celery keeps its own retries across restarts.
embedded_started = Signal()
