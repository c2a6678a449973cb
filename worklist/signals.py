"""Signals other apps listen to (the HL7 gateway sends status messages), so that worklist never
imports them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after the transaction that changed a step's status commits.
# kwargs: step (ScheduledProcedureStep), previous (str), source (str)
step_status_changed = Signal()

# Sent after the transaction that created a step commits. kwargs: step
step_created = Signal()

# Sent after a step moved to another station commits (an assignment change). kwargs: step
step_assigned = Signal()
