"""The SCP against DCMTK clients (echoscu, storescu, dcmsend) on loopback."""

from __future__ import annotations

import subprocess

import pytest
from pydicom import dcmread

from core.models import AuditEvent
from pacs.models import Instance
from tests.samples import COMPRESSED, UNCOMPRESSED, sample
from tests.stored import dataset

pytestmark = pytest.mark.interop


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("E:")]


def test_echoscu_from_known_ae(dimse_listener, known_aes):
    host, port = dimse_listener.address
    proc = run("/usr/bin/echoscu", "-aet", "ECHOSCU", "-aec", "PORTAL", host, str(port))
    assert proc.returncode == 0 and not errors(proc), proc.stderr


def test_unknown_calling_ae_is_refused_and_audited(dimse_listener, known_aes):
    host, port = dimse_listener.address
    proc = run("/usr/bin/echoscu", "-aet", "STRANGER", "-aec", "PORTAL", host, str(port))
    assert proc.returncode != 0
    assert "Association Rejected" in proc.stderr
    assert "Calling AE Title Not Recognized" in proc.stderr
    event = AuditEvent.objects.get(category="association", outcome="refused")
    assert event.actor == "STRANGER"


def test_unknown_ae_allowed_when_configured(dimse_listener, settings):
    settings.DIMSE_ALLOW_UNKNOWN_AE = True
    host, port = dimse_listener.address
    proc = run("/usr/bin/echoscu", "-aet", "ANYBODY", "-aec", "PORTAL", host, str(port))
    assert proc.returncode == 0, proc.stderr


def test_storescu_uncompressed_files(dimse_listener, known_aes, storage_dir):
    host, port = dimse_listener.address
    files = [str(sample(n)) for n in UNCOMPRESSED]
    # -R: propose only what the files need, so each is sent in its own transfer syntax.
    proc = run("/usr/bin/storescu", "-R", "-aet", "STORESCU", "-aec", "PORTAL",
               host, str(port), *files)
    assert proc.returncode == 0 and not errors(proc), proc.stdout + proc.stderr
    uids = {str(dcmread(sample(n), stop_before_pixels=True).SOPInstanceUID)
            for n in UNCOMPRESSED}  # two samples share a SOP Instance UID: one row
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == uids
    for inst in Instance.objects.all():
        assert inst.received_from.startswith("dimse:STORESCU@127.0.0.1")


@pytest.mark.parametrize("name", sorted(COMPRESSED))
def test_dcmsend_compressed_stored_as_received(dimse_listener, known_aes, storage_dir, name):
    host, port = dimse_listener.address
    path = sample(name)
    proc = run("/usr/bin/dcmsend", "-aet", "DCMSEND", "-aec", "PORTAL", host, str(port),
               str(path))
    assert proc.returncode == 0 and not errors(proc), proc.stdout + proc.stderr
    inst = Instance.objects.get()
    assert inst.transfer_syntax_uid == COMPRESSED[name]
    # No transcoding: the compressed pixel data is byte for byte the source's.
    stored = dataset(inst.file_key)
    assert stored.file_meta.TransferSyntaxUID == COMPRESSED[name]
    assert stored.PixelData == dcmread(path).PixelData


def test_storescu_resend_is_a_duplicate_not_a_new_row(dimse_listener, known_aes):
    host, port = dimse_listener.address
    path = str(sample("CT_small.dcm"))
    for _ in range(2):
        proc = run("/usr/bin/storescu", "-aet", "STORESCU", "-aec", "PORTAL", host, str(port),
                   path)
        assert proc.returncode == 0 and not errors(proc)
    assert Instance.objects.count() == 1
