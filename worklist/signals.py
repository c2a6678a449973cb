"""Signals other apps listen to (the HL7 gateway sends status messages), so that worklist never
imports them.

They are sent inside the transaction of the change they report: a listener writes its outbox
rows (an HL7 status message, a UPS event report) in that transaction, so they commit with the
change or not at all (a transactional outbox), and wakes its courier on commit. A listener
that fails makes the change fail: no change goes out unreported."""

from __future__ import annotations

from django.dispatch import Signal

# A step's status changed. kwargs: step (ScheduledProcedureStep), previous (str), source (str)
step_status_changed = Signal()

# A step was created. kwargs: step
step_created = Signal()

# A step moved to another station (an assignment change). kwargs: step
step_assigned = Signal()
