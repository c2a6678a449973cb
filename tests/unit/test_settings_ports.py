"""Each listener needs a port of its own: settings refuse two on one port."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.portal_process import ROOT


def _check(tmp_path, **ports: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL") and not k.endswith("_PORT")}
    env.update(PORTAL_DATA_DIR=str(tmp_path), **ports)
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "check"], env=env,
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize(("ports", "named"), [
    # the DIMSE and HL7 listeners both bind with SO_REUSEPORT: both would have succeeded
    ({"PORTAL_DIMSE_PORT": "12104", "PORTAL_HL7_PORT": "12104"},
     "PORTAL_DIMSE_PORT and PORTAL_HL7_PORT are both 12104"),
    ({"PORTAL_HL7_PORT": "8000"}, "PORTAL_HTTP_PORT and PORTAL_HL7_PORT are both 8000"),
    ({"PORTAL_DIMSE_PORT": "8001"}, "PORTAL_WS_PORT and PORTAL_DIMSE_PORT are both 8001"),
])
def test_two_listeners_on_one_port_are_refused(tmp_path, ports, named):
    result = _check(tmp_path, **ports)
    assert result.returncode != 0
    assert named + ": each listener needs a port of its own" in result.stderr


@pytest.mark.parametrize("ports", [
    {},  # the defaults: 8000, 8001, 11112, 2575
    {"PORTAL_DIMSE_PORT": "0", "PORTAL_HL7_PORT": "0"},  # any free port, each its own
])
def test_distinct_free_or_no_ports_are_accepted(tmp_path, ports):
    result = _check(tmp_path, **ports)
    assert result.returncode == 0, result.stderr
