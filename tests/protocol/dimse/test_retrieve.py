"""C-MOVE and C-GET SCP against DCMTK movescu/getscu (storescp as the third-party destination)
and pynetdicom (exact statuses, sub-operation counts, cancel)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, evt
from pynetdicom.presentation import build_role
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from pacs.models import ApplicationEntity
from pacs.services.ingest import store_instance
from tests.samples import encoded, free_port, sample, synthetic_image
from tests.waiting import wait_for_port

pytestmark = pytest.mark.interop

MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet


def _ct_series(count: int) -> tuple[str, str]:
    """``count`` CT instances (Explicit VR LE) in one new study/series."""
    base = dcmread(sample("CT_small.dcm"))
    study, series = base.StudyInstanceUID + ".5", base.SeriesInstanceUID + ".5"
    for i in range(count):
        ds = dcmread(sample("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.5.{i + 1}"
        ds.InstanceNumber = i + 1
        store_instance(data=encoded(ds), received_from="test")
    return study, series


@pytest.fixture
def archive(dimse_listener, known_aes):
    for title in ("MOVESCU", "GETSCU"):
        ApplicationEntity.objects.create(ae_title=title, host="127.0.0.1", port=104,
                                         may_query=True, may_retrieve=True)
    return dimse_listener


@pytest.fixture
def storescp(tmp_path):
    """DCMTK storescp as a third-party C-MOVE destination (accepts uncompressed only)."""
    port, out = free_port(), tmp_path / "dest"
    out.mkdir()
    proc = subprocess.Popen(["/usr/bin/storescp", "-aet", "DEST", "-od", str(out), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_port(port, 10, alive=proc)
    ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port=port,
                                     is_move_destination=True)
    yield out
    proc.terminate()
    proc.wait(timeout=10)


def _dcmtk(tool: str, listener, *args: str) -> subprocess.CompletedProcess:
    host, port = listener.address
    proc = subprocess.run([f"/usr/bin/{tool}", "-S", "-aec", "PORTAL", *args, host, str(port)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("E:")], proc.stderr
    return proc


def test_movescu_study_to_third_party_storescp(archive, storescp):
    study, _series = _ct_series(5)
    _dcmtk("movescu", archive, "-aet", "MOVESCU", "-aem", "DEST",
           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}")
    received = sorted(dcmread(p).InstanceNumber for p in storescp.iterdir())
    assert received == [1, 2, 3, 4, 5]


def test_getscu_series_on_the_same_association(archive, tmp_path):
    study, series = _ct_series(3)
    out = tmp_path / "got"
    out.mkdir()
    _dcmtk("getscu", archive, "-aet", "GETSCU", "-od", str(out),
           "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study}",
           "-k", f"SeriesInstanceUID={series}")
    got = [dcmread(p) for p in out.iterdir()]
    assert sorted(d.InstanceNumber for d in got) == [1, 2, 3]
    assert all(d.SeriesInstanceUID == series for d in got)


def _move(listener, identifier: Dataset, destination: str, calling: str = "MOVESCU"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(MOVE)
    host, port = listener.address
    assoc = ae.associate(host, port, ae_title="PORTAL")
    assert assoc.is_established
    try:
        return list(assoc.send_c_move(identifier, destination, MOVE))
    finally:
        assoc.release()


def _study_identifier(study: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    return ds


def test_move_counts_pending_and_final(archive, storescp):
    study, _ = _ct_series(3)
    responses = _move(archive, _study_identifier(study), "DEST")
    statuses = [(s.Status, s.get("NumberOfRemainingSuboperations"),
                 s.get("NumberOfCompletedSuboperations")) for s, _ in responses]
    assert statuses == [(0xFF00, 2, 1), (0xFF00, 1, 2), (0x0000, None, 3)]


def test_move_unknown_destination_is_a801(archive):
    study, _ = _ct_series(1)
    (status, _), = _move(archive, _study_identifier(study), "NOWHERE")
    assert status.Status == 0xA801 and "NOWHERE" in status.ErrorComment


def test_move_without_retrieve_permission_is_0124(archive, storescp):
    study, _ = _ct_series(1)
    (status, _), = _move(archive, _study_identifier(study), "DEST", calling="STORESCU")
    assert status.Status == 0x0124


def _compressed_into(study: str) -> dict[str, object]:
    """A JPEG 2000 lossless MR and a JPEG baseline colour image stored into ``study``: what a
    destination that takes uncompressed data only gets decoded. By SOP Instance UID."""
    originals = {}
    for name in ("MR2_J2KR.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        ds = dcmread(sample(name))
        ds.StudyInstanceUID = study
        _same_patient(ds)
        store_instance(data=encoded(ds), received_from="test")
        originals[ds.SOPInstanceUID] = ds
    return originals


def _damaged_jpeg_into(study: str) -> str:
    """A JPEG baseline instance whose pixel data no decoder can read."""
    ds = dcmread(sample("SC_rgb_jpeg_dcmtk.dcm"))
    ds.StudyInstanceUID, ds.SOPInstanceUID = study, ds.SOPInstanceUID + ".9"
    _same_patient(ds)
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
    store_instance(data=encoded(ds), received_from="test")
    return ds.SOPInstanceUID


def _same_patient(ds) -> None:
    """A study holds one patient's images (the archive refuses others): the CT's patient."""
    ct = dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    ds.PatientID, ds.PatientName = ct.PatientID, ct.PatientName


def _same_images(received: list, originals: dict) -> None:
    """Each received object is its original (SOP Instance UID kept), with native pixel data
    equal to the original's decoded pixels."""
    for got in received:
        original = originals[got.SOPInstanceUID]
        assert not got.file_meta.TransferSyntaxUID.is_compressed
        assert np.array_equal(got.pixel_array, original.pixel_array)


def test_move_decompresses_for_a_destination_that_takes_uncompressed_only(archive, storescp):
    """DCMTK storescp accepts uncompressed syntaxes only: the compressed instances arrive
    decoded, as Orthanc and dcm4chee send them (before, they failed)."""
    study, _ = _ct_series(1)
    originals = _compressed_into(study)
    status, _ = _move(archive, _study_identifier(study), "DEST")[-1]
    assert status.Status == 0x0000 and status.NumberOfCompletedSuboperations == 3
    received = [dcmread(p) for p in storescp.iterdir()]
    assert len(received) == 3
    _same_images([d for d in received if d.SOPInstanceUID in originals], originals)
    (jpeg,) = [d for d in received if d.SOPInstanceUID in originals
               and originals[d.SOPInstanceUID].file_meta.TransferSyntaxUID == JPEGBaseline8Bit]
    assert jpeg.LossyImageCompression == "01" and jpeg.PhotometricInterpretation == "RGB"


def test_move_decodes_jpeg_extended_12_bit_for_an_uncompressed_destination(
        archive, storescp, tmp_path):
    """A 12-bit JPEG Extended (process 2+4) CT, compressed by DCMTK, reaches storescp
    decoded: as DCMTK's own dcmdjpeg decodes it, within two IDCTs' rounding."""
    study, _ = _ct_series(1)
    ds = synthetic_image("grey12")
    ds.StudyInstanceUID = study
    _same_patient(ds)
    ds.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
    subprocess.run(["dcmcjpeg", "+ee", "+un", str(tmp_path / "plain.dcm"),
                    str(tmp_path / "jpeg12.dcm")], check=True, timeout=60)
    subprocess.run(["dcmdjpeg", str(tmp_path / "jpeg12.dcm"), str(tmp_path / "ref.dcm")],
                   check=True, timeout=60)
    store_instance(data=(tmp_path / "jpeg12.dcm").read_bytes(), received_from="test")
    status, _ = _move(archive, _study_identifier(study), "DEST")[-1]
    assert status.Status == 0x0000 and status.NumberOfCompletedSuboperations == 2
    (got,) = [d for p in storescp.iterdir() if (d := dcmread(p)).SOPInstanceUID
              == ds.SOPInstanceUID]
    assert not got.file_meta.TransferSyntaxUID.is_compressed and got.BitsStored == 12
    reference = dcmread(tmp_path / "ref.dcm").pixel_array.astype(np.int32)
    assert np.abs(got.pixel_array.astype(np.int32) - reference).mean() <= 1.0


def test_move_partial_failure_lists_failed_instances(archive, storescp):
    """An instance whose pixel data cannot be decoded fails; the CT goes."""
    study, _ = _ct_series(1)
    damaged = _damaged_jpeg_into(study)
    status, identifier = _move(archive, _study_identifier(study), "DEST")[-1]
    assert status.Status == 0xB000
    assert status.NumberOfCompletedSuboperations == 1
    assert status.NumberOfFailedSuboperations == 1
    assert identifier.FailedSOPInstanceUIDList == damaged


def test_getscu_gets_compressed_instances_decoded(archive, tmp_path):
    """getscu proposes uncompressed syntaxes only by default."""
    study, series = _ct_series(1)
    originals = _compressed_into(study)
    out = tmp_path / "got"
    out.mkdir()
    _dcmtk("getscu", archive, "-aet", "GETSCU", "-od", str(out),
           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}")
    got = [dcmread(p) for p in out.iterdir()]
    assert len(got) == 3
    _same_images([d for d in got if d.SOPInstanceUID in originals], originals)


def test_move_goes_on_past_an_instance_whose_file_is_gone(archive, storescp):
    """The file of one instance was lost from the disk: that sub-operation fails and is listed;
    the others go, and the requestor gets its final response, not an A-ABORT."""
    from pacs.models import Instance
    from pacs.storage import get_storage

    study, _ = _ct_series(3)
    lost = Instance.objects.get(sop_instance_uid__endswith=".5.2")
    get_storage().delete(lost.file_key)
    status, identifier = _move(archive, _study_identifier(study), "DEST")[-1]
    assert status.Status == 0xB000
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == (2, 1)
    assert identifier.FailedSOPInstanceUIDList == lost.sop_instance_uid
    assert len(list(storescp.iterdir())) == 2


def test_move_identifier_without_level_key_is_a900(archive, storescp):
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = "1.2.3"
    (status, _), = _move(archive, ds, "DEST")
    assert status.Status == 0xA900 and "SeriesInstanceUID" in status.ErrorComment


def _get_association(listener, syntaxes=(ExplicitVRLittleEndian, ImplicitVRLittleEndian),
                     received: list | None = None, classes=(CTImageStorage, MRImageStorage)):
    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(GET)
    roles = []
    for storage in classes:
        ae.add_requested_context(storage, list(syntaxes))
        roles.append(build_role(storage, scp_role=True))

    def on_store(event):
        if received is not None:
            received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    host, port = listener.address
    assoc = ae.associate(host, port, ae_title="PORTAL", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    return assoc


def test_get_converts_to_the_offered_syntax_and_fails_what_cannot_be_decoded(archive):
    study, _ = _ct_series(2)
    originals = _compressed_into(study)
    damaged = _damaged_jpeg_into(study)
    received: list[str] = []
    assoc = _get_association(archive, syntaxes=(ImplicitVRLittleEndian,), received=received,
                             classes=(CTImageStorage, MRImageStorage,
                                      SecondaryCaptureImageStorage))
    try:
        responses = list(assoc.send_c_get(_study_identifier(study), GET))
    finally:
        assoc.release()
    status, identifier = responses[-1]
    assert len(received) == 4  # two CTs re-encoded, the MR and the colour image decoded
    assert set(originals) <= set(received)
    assert status.Status == 0xB000 and status.NumberOfFailedSuboperations == 1
    assert identifier.FailedSOPInstanceUIDList == damaged


def test_get_cancel_stops_the_sub_operations(archive):
    study, _ = _ct_series(30)
    assoc = _get_association(archive)
    try:
        statuses = []
        for status, _identifier in assoc.send_c_get(_study_identifier(study), GET, msg_id=7):
            statuses.append(status)
            if len(statuses) == 2:
                context = assoc._get_valid_context(GET, "", "scu")
                assoc.send_c_cancel(7, context.context_id)
    finally:
        assoc.release()
    final = statuses[-1]
    assert final.Status == 0xFE00
    assert final.NumberOfCompletedSuboperations < 30
    assert final.NumberOfRemainingSuboperations > 0
