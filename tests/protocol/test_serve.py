"""The embedded run command for real: `manage.py serve` in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.portal_process import ROOT, start_portal
from tests.samples import sample

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
    # The AE table is re-read within seconds by every SCP process.
    time.sleep(2.5)
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


def test_the_least_busy_scp_process_takes_each_new_association(portal):
    import socket

    from tests.portal_process import connections_by_process, process_tree

    pids = process_tree(portal.proc.pid)
    assert len(pids) == 2  # serve and one more SCP process

    def spread(total: int) -> list[int]:
        deadline = time.monotonic() + 10
        while sum((counts := connections_by_process(pids, portal.dimse_port)).values()) != total:
            assert time.monotonic() < deadline, counts
            time.sleep(0.05)
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
