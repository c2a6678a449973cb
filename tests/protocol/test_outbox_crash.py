"""A transactional outbox: the HL7 status message and the UPS event report of a step change are
written in the change's own transaction. A process killed (SIGKILL) right after that
transaction commits, before anything else runs, loses neither: the real `serve` started
afterwards delivers the HL7 message to the receiver (an MLLP server of python-hl7's) and keeps
the UPS event for its subscriber."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.peers import Hl7Server
from tests.portal_process import ROOT, portal_env, start_portal
from tests.samples import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.interop

SETUP = """
import datetime as dt
from hl7gw.models import Receiver
from worklist import services, ups_events
Receiver.objects.create(name="RIS", host="127.0.0.1", port={port})
ups_events.subscribe(ups_events.GLOBAL, "WATCHER")
services.create_order(patient=services.PatientData("KILL1", "KILL^TEST"), procedure=None,
                      step=services.StepData(modality="CT", start=dt.datetime(2026, 12, 7, 9)),
                      actor="test")
"""

KILLED_AFTER_COMMIT = """
import os, signal
from django.db import transaction
from worklist import services
from worklist.models import ScheduledProcedureStep
step = ScheduledProcedureStep.objects.get()
with transaction.atomic():
    # the first thing run once the transaction has committed: the process dies there
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    services.set_step_status(step, "IN PROGRESS", source="portal", actor="test")
"""

STATE = """
from hl7gw.models import Outbound
from worklist.models import ScheduledProcedureStep, UpsEvent
print("STATE", ScheduledProcedureStep.objects.get().status.replace(" ", "_"),
      Outbound.objects.filter(order_status="IP").count(),
      sum(e.payload["00741000"]["Value"] == ["IN PROGRESS"]
          for e in UpsEvent.objects.filter(ae_title="WATCHER")))
"""


def shell(data_dir, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
                          cwd=ROOT, env=portal_env(data_dir), capture_output=True, text=True,
                          timeout=120)


def test_a_kill_right_after_the_commit_loses_no_event(tmp_path):
    data_dir = tmp_path / "var"
    port = free_port()
    migrated = subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"],
                              cwd=ROOT, env=portal_env(data_dir), timeout=300)
    assert migrated.returncode == 0
    assert shell(data_dir, SETUP.format(port=port)).returncode == 0
    killed = shell(data_dir, KILLED_AFTER_COMMIT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = shell(data_dir, STATE).stdout.split("STATE")[-1].split()
    assert state == ["IN_PROGRESS", "1", "1"]  # the change, and both of its events
    ris = Hl7Server(port).start()
    portal = start_portal(data_dir)
    try:
        wait_until(lambda: ris.received, timeout=30, what="the status message")
        (message,) = ris.received
        assert str(message.segment("ORC")[5]) == "IP"
    finally:
        portal.stop()
        ris.stop()
