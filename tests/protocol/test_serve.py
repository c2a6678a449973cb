"""The embedded run command for real: `manage.py serve` in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.portal_process import ROOT, start_portal
from tests.samples import sample
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


@pytest.fixture
def portal(tmp_path):
    p = start_portal(tmp_path / "var", PORTAL_DIMSE_PROCESSES="2")
    yield p
    p.stop()


def manage(portal, *args: str) -> str:
    cmd = ["env", f"PORTAL_DATA_DIR={portal.data_dir}", sys.executable, str(ROOT / "manage.py")]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout


def test_banner_login_and_web(portal):
    out = portal.output()
    assert f"Web UI:     http://127.0.0.1:{portal.http_port}/" in out
    assert f"AE title PORTAL, port {portal.dimse_port} (2 process(es))" in out
    assert f"HL7 MLLP:   port {portal.hl7_port}" in out
    assert re.search(r"log in as admin / \S+", out), out
    assert (portal.data_dir / "portal.sqlite3").exists()
    with urllib.request.urlopen(f"{portal.url}/login/") as response:
        assert response.status == 200 and b"Log in" in response.read()
    with urllib.request.urlopen(f"{portal.url}/static/portal/portal.css") as response:
        assert response.status == 200


def test_unknown_ae_refused_then_known_ae_stores_over_two_processes(portal):
    echo = subprocess.run(["/usr/bin/echoscu", "-aet", "STORESCU", "-aec", "PORTAL",
                           "127.0.0.1", str(portal.dimse_port)], capture_output=True, text=True)
    assert echo.returncode != 0 and "Association Rejected" in echo.stderr
    manage(portal, "shell", "-c",
           "from pacs.models import ApplicationEntity as A;"
           "A.objects.create(ae_title='STORESCU', host='127.0.0.1', port=104)")
    # every SCP process reads the AE table again (at once: PORTAL_CONFIG_CACHE_SECONDS=0)
    files = [str(sample(n)) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm",
                                      "reportsi.dcm")]

    def send(path: str) -> subprocess.CompletedProcess:
        return subprocess.run(["/usr/bin/storescu", "-aet", "STORESCU", "-aec", "PORTAL",
                               "127.0.0.1", str(portal.dimse_port), path],
                              capture_output=True, text=True)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, files * 2))
    for r in results:
        assert r.returncode == 0 and "E:" not in r.stderr, r.stderr
    count = manage(portal, "shell", "-c",
                   "from pacs.models import Instance; print(Instance.objects.count())")
    assert count.strip().splitlines()[-1] == "4"


def test_sigterm_stops_everything(tmp_path):
    p = start_portal(tmp_path / "var2", PORTAL_DIMSE_PROCESSES="2")
    assert p.stop() == 0
    assert "portal stopped" in p.output()
    # The port is free again: nothing (no child SCP process) still listens on it.
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", p.dimse_port)) != 0


def test_sigterm_lets_a_running_association_finish(tmp_path):
    """A restart does not abort a modality in the middle of a study: after SIGTERM no new
    association is taken, and the one already open stores its image and is released
    normally; then serve exits."""
    import signal

    from pydicom import dcmread
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    p = start_portal(tmp_path / "var3", PORTAL_DIMSE_ALLOW_UNKNOWN_AE="1",
                     PORTAL_SHUTDOWN_GRACE_SECONDS="20")
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", p.dimse_port, ae_title="PORTAL")
    assert assoc.is_established
    p.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        late = AE(ae_title="LATE")
        late.add_requested_context(CTImageStorage)
        other = late.associate("127.0.0.1", p.dimse_port, ae_title="PORTAL")
        if other.is_established:
            other.release()
            return False
        return True

    wait_until(refused, 10, what="new associations refused after SIGTERM")
    assert p.proc.poll() is None  # still serving the open association
    status = assoc.send_c_store(dcmread(sample("CT_small.dcm")))
    assert status.Status == 0x0000
    assoc.release()
    assert p.proc.wait(timeout=15) == 0
    stored = p.shell("from pacs.models import Instance\nprint(Instance.objects.count())")
    assert stored.split()[-1] == "1"


def test_the_least_busy_scp_process_takes_each_new_association(portal):
    import socket

    from tests.portal_process import connections_by_process, process_tree

    pids = process_tree(portal.proc.pid)
    assert len(pids) == 2  # serve and one more SCP process

    def spread(total: int) -> list[int]:
        def spread_over_all() -> dict | None:
            counts = connections_by_process(pids, portal.dimse_port)
            return counts if sum(counts.values()) == total else None

        counts = wait_until(spread_over_all, 10, 0.05,
                            lambda: connections_by_process(pids, portal.dimse_port))
        return sorted(counts.values())

    # Four modalities connect at once, as the ingest benchmark's storescu processes do.
    clients = [socket.create_connection(("127.0.0.1", portal.dimse_port)) for _ in range(4)]
    try:
        assert spread(4) == [2, 2]
        clients.pop(0).close()  # one process now serves one: it takes the next
        assert spread(3) == [1, 2]
        clients.append(socket.create_connection(("127.0.0.1", portal.dimse_port)))
        assert spread(4) == [2, 2]
    finally:
        for client in clients:
            client.close()


def test_deliveries_pending_at_the_last_stop_go_out_when_serve_starts(tmp_path):
    """An HL7 status message, a UPS event report, a forwarded instance and a Storage
    Commitment report that were still pending when the portal stopped (their receivers were
    down) are sent once `serve` runs again."""
    import os

    from pydicom import dcmread

    from tests.peers import Hl7Server, Storescp, start_commitment_listener, start_event_scp
    from tests.samples import free_port, sample

    data_dir = tmp_path / "var3"
    hl7_port, ups_port, dest_port, modality_port = (free_port() for _ in range(4))
    ct = dcmread(sample("CT_small.dcm"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PORTAL_", "DATABASE_URL", "REDIS_URL"))}
    env["PORTAL_DATA_DIR"] = str(data_dir)
    run = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*run, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
    subprocess.run([*run, "import", str(sample("CT_small.dcm"))], env=env, check=True, cwd=ROOT,
                   capture_output=True)
    subprocess.run([*run, "shell", "-c", f"""
from hl7gw.models import Outbound, Receiver
from pacs.models import ApplicationEntity
from worklist.models import UpsEvent
receiver = Receiver.objects.create(name="RIS", host="127.0.0.1", port={hl7_port})
Outbound.objects.create(receiver=receiver, step_id=1, order_status="IP", control_id="LEFT1",
    attempts=3, last_error="refused",
    text="MSH|^~\\\\&|PORTAL|PORTAL|RIS|H|20261123||ORM^O01|LEFT1|P|2.5\\rORC|SC|X1||||IP\\r")
ApplicationEntity.objects.create(ae_title="AINODE", host="127.0.0.1", port={ups_port})
UpsEvent.objects.create(ae_title="AINODE", delivery="dimse", workitem_uid="1.2.3.4",
    event_type=1, attempts=2, payload={{"00741000": {{"vr": "CS", "Value": ["SCHEDULED"]}},
                                       "00404041": {{"vr": "CS", "Value": ["READY"]}}}})
from pacs.models import CommitmentRequest, ForwardItem
dest = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port={dest_port})
ForwardItem.objects.create(destination=dest, sop_instance_uid="{ct.SOPInstanceUID}", attempts=4)
ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port={modality_port})
CommitmentRequest.objects.create(ae_title="MODALITY", transaction_uid="1.2.3.9", attempts=1,
    references=[["{ct.SOPClassUID}", "{ct.SOPInstanceUID}"]])
"""], env=env, check=True, cwd=ROOT, capture_output=True)
    hl7_server = Hl7Server(hl7_port).start()
    event_scp, events = start_event_scp(ups_port)
    storescp = Storescp(dest_port, tmp_path / "dest")
    modality, reports = start_commitment_listener(modality_port)
    portal = start_portal(data_dir)
    try:
        assert [d.SOPInstanceUID for d in storescp.received(1, timeout=30)] == [
            ct.SOPInstanceUID]
        _calling, event_type, report = reports.get(timeout=30)
        assert (event_type, report.TransactionUID) == (1, "1.2.3.9")
        uid, kind, info = events.get(timeout=30)
        assert (uid, kind, info.ProcedureStepState) == ("1.2.3.4", 1, "SCHEDULED")
        wait_until(lambda: hl7_server.received, 30, what="the HL7 status message")
        assert str(hl7_server.received[0].segment("MSH")[10]) == "LEFT1"
    finally:
        portal.stop()
        event_scp.shutdown()
        hl7_server.stop()
        storescp.stop()
        modality.shutdown()
