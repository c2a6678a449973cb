"""The SCP against pynetdicom as SCU: statuses for good and bad input, concurrency."""

from __future__ import annotations

import subprocess
import threading

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification

from pacs.models import ApplicationEntity, Instance, Series, Study
from tests import stored
from tests.samples import COMPRESSED, UNCOMPRESSED, sample, synthetic_image

pytestmark = pytest.mark.interop


def associate(listener, calling="PYNETDICOM"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    host, port = listener.address
    assoc = ae.associate(host, port, ae_title="PORTAL")
    assert assoc.is_established
    return assoc


def assert_store_refused(listener, path, status_code: int, comment: str,
                         calling: str = "PYNETDICOM") -> None:
    """One C-STORE that must fail with ``status_code`` and ``comment``, storing nothing."""
    assoc = associate(listener, calling=calling)
    try:
        status = assoc.send_c_store(path)
        assert status.Status == status_code
        assert comment in status.ErrorComment
    finally:
        assoc.release()
    assert not Instance.objects.exists()


def _stored_files(root):
    return stored.left_behind(root)


def test_store_all_samples(dimse_listener, known_aes):
    names = list(COMPRESSED) + UNCOMPRESSED
    ae = AE(ae_title="PYNETDICOM")
    for name in names:
        ds = dcmread(sample(name), stop_before_pixels=True)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    host, port = dimse_listener.address
    assoc = ae.associate(host, port, ae_title="PORTAL")
    assert assoc.is_established
    try:
        for name in names:
            status = assoc.send_c_store(sample(name))  # sent as encoded, not re-encoded
            assert status.Status == 0x0000, name
    finally:
        assoc.release()
    uids = {str(dcmread(sample(n), stop_before_pixels=True).SOPInstanceUID) for n in names}
    assert Instance.objects.count() == len(uids)


@pytest.fixture
def send_raw_files(monkeypatch):
    """Make pynetdicom send a file's bytes as they are instead of decoding and re-encoding."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_truncated_dataset_gets_failure_and_leaves_nothing(dimse_listener, known_aes,
                                                           storage_dir, tmp_path,
                                                           send_raw_files):
    data = sample("CT_small.dcm").read_bytes()
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(data[:-3000])
    assoc = associate(dimse_listener)
    try:
        status = assoc.send_c_store(bad)
        assert status.Status == 0xC000
        assert "truncated" in status.ErrorComment
        # The association and the listener keep serving.
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(sample("CT_small.dcm")).Status == 0x0000
    finally:
        assoc.release()
    assert Instance.objects.count() == 1
    assert len(_stored_files(storage_dir)) == 1


def test_request_and_dataset_uid_mismatch_is_a900(dimse_listener, known_aes, tmp_path,
                                                   send_raw_files):
    # Sent raw, the request's Affected SOP Instance UID comes from the file meta, which here
    # disagrees with the dataset's SOP Instance UID.
    ds = dcmread(sample("CT_small.dcm"))
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    path = tmp_path / "mismatch.dcm"
    ds.save_as(path, enforce_file_format=False)
    assert_store_refused(dimse_listener, path, 0xA900, "SOP Instance UID differs")


def test_ae_without_store_permission_is_refused_0124(dimse_listener, known_aes):
    ApplicationEntity.objects.create(ae_title="VIEWONLY", host="127.0.0.1", port=104,
                                     may_store=False)
    assert_store_refused(dimse_listener, sample("CT_small.dcm"), 0x0124, "may not store",
                         calling="VIEWONLY")


def test_concurrent_associations_storing_one_study(dimse_listener, known_aes):
    base = dcmread(sample("CT_small.dcm"))
    study_uid, series_uid = base.StudyInstanceUID, base.SeriesInstanceUID
    errors: list[str] = []

    def sender(worker: int) -> None:
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(CTImageStorage)
        host, port = dimse_listener.address
        assoc = ae.associate(host, port, ae_title="PORTAL")
        try:
            for i in range(10):
                ds = dcmread(sample("CT_small.dcm"))
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid if i % 2 else f"{series_uid}.{worker}"
                ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{worker}.{i}"
                status = assoc.send_c_store(ds)
                if status.Status != 0:
                    errors.append(f"{worker}/{i}: 0x{status.Status:04X}")
                # every worker also re-sends one shared instance
                ds.SOPInstanceUID = base.SOPInstanceUID
                ds.SeriesInstanceUID = series_uid
                assoc.send_c_store(ds)
        finally:
            assoc.release()

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Instance.objects.count() == 41
    assert Study.objects.count() == 1 and Series.objects.count() == 5
    study = Study.objects.get()
    assert study.number_of_instances == 41 and study.number_of_series == 5


def test_conflicting_images_get_a_warning_or_a_failure_with_the_reason(dimse_listener,
                                                                       known_aes, settings,
                                                                       caplog):
    """A re-sent SOP Instance of another patient: 0xB000, the stored one kept; with
    PORTAL_DUPLICATE_CONFLICT=refuse, 0xC000. A new image of another patient for a stored
    study: 0xC000. Nothing moves (PS3.4 B.2.3 statuses, the reason in the Error Comment)."""
    original = dcmread(sample("CT_small.dcm"))
    other = dcmread(sample("CT_small.dcm"))
    other.PatientID, other.PatientName = "B-2", "OTHER^PATIENT"
    new_image = dcmread(sample("CT_small.dcm"))
    new_image.PatientID, new_image.SOPInstanceUID = "B-2", original.SOPInstanceUID + ".7"
    assoc = associate(dimse_listener)
    try:
        assert assoc.send_c_store(original).Status == 0x0000
        status = assoc.send_c_store(other)
        assert status.Status == 0xB000 and "another patient" in status.ErrorComment
        settings.DUPLICATE_CONFLICT = "refuse"
        status = assoc.send_c_store(other)
        assert status.Status == 0xC000 and "sent again as patient B-2" in status.ErrorComment
        status = assoc.send_c_store(new_image)
        assert status.Status == 0xC000 and "names patient B-2, but study" in status.ErrorComment
    finally:
        assoc.release()
    assert Instance.objects.count() == 1
    assert Study.objects.get().patient.patient_id == original.PatientID
    # the plain log says a conflict was refused, not whose: patient IDs stay out of it
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2 and all("conflict for SOP Instance" in r for r in refusals)
    assert not any(original.PatientID in r or "B-2" in r for r in caplog.messages)


def _with_sop_class(uid: str) -> Dataset:
    ds = synthetic_image("grey8")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid
    ds.Modality = "US"
    return ds


def test_retired_storage_classes_are_accepted(dimse_listener, known_aes, tmp_path):
    """Ultrasound Image Storage (Retired, PS3.6 Annex A) from a 1990s scanner, sent by DCMTK
    storescu -R, which proposes the files' own SOP classes: stored, not refused at association."""
    retired = {"1.2.840.10008.5.1.4.1.1.6": "us.dcm", "1.2.840.10008.5.1.4.1.1.3": "usmf.dcm",
               "1.2.840.10008.5.1.4.1.1.5": "nm.dcm"}
    for uid, name in retired.items():
        _with_sop_class(uid).save_as(tmp_path / name, enforce_file_format=True)
    host, port = dimse_listener.address
    done = subprocess.run(["storescu", "-R", "-aet", "STORESCU", "-aec", "PORTAL", host, str(port),
                           *(str(tmp_path / n) for n in retired.values())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(Instance.objects.values_list("sop_class_uid", flat=True)) == set(retired)


def test_private_storage_classes_only_when_configured(transactional_db, storage_dir,
                                                      known_aes, settings):
    from pacs.dimse.scp import DimseListener

    private = "1.3.6.1.4.1.99999.1.1"

    def store() -> int | None:
        listener = DimseListener(host="127.0.0.1", port=0, ae_title="PORTAL")
        listener.start()
        try:
            ae = AE(ae_title="PYNETDICOM")
            ae.add_requested_context(private, ExplicitVRLittleEndian)
            assoc = ae.associate(*listener.address, ae_title="PORTAL")
            if not assoc.is_established:
                return None
            try:
                if not assoc.accepted_contexts:
                    return None
                return assoc.send_c_store(_with_sop_class(private)).Status
            finally:
                assoc.release()
        finally:
            listener.stop()

    assert store() is None  # the only context proposed is refused
    settings.DIMSE_PRIVATE_STORAGE_CLASSES = [private]
    assert store() == 0x0000
    assert Instance.objects.get().sop_class_uid == private
