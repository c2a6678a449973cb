"""Signals of the portal's processes, so that the apps never import the commands or each
other for them."""

from __future__ import annotations

from django.dispatch import Signal

# Deliveries (HL7 status messages, UPS event reports, forwarded instances, Storage Commitment
# reports) may be pending with no sender on them:
# those of before a restart, and in scale mode those whose Celery task was lost with the
# broker. The receivers start a sender for each such peer (core.delivery: one per peer, so
# a peer that has one is left alone). Sent by `manage.py serve` in embedded mode once its
# listeners run, and in scale mode by the core.sweep_deliveries task, which each Celery worker
# queues when it starts and Celery beat runs every PORTAL_DELIVERY_SWEEP_SECONDS.
deliveries_due = Signal()
