"""Our SCU side (send, query, retrieve jobs) against real peers on loopback: a second portal
process and Orthanc (Debian package)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from pydicom import dcmread

from pacs.models import ApplicationEntity, Instance, Job, Study
from pacs.services import jobs, remote
from pacs.services.ingest import store_instance
from tests.peers import Orthanc
from tests.portal_process import start_portal
from tests.samples import encoded, free_port, sample
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


def _write_series(folder: Path, count: int, tag: str) -> tuple[str, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    base = dcmread(sample("CT_small.dcm"))
    study = f"{base.StudyInstanceUID}.{tag}"
    paths = []
    for i in range(count):
        ds = dcmread(sample("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, f"{base.SeriesInstanceUID}.{tag}"
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{tag}.{i + 1}"
        ds.PatientID, ds.InstanceNumber = f"P{tag}", i + 1
        path = folder / f"{i}.dcm"
        path.write_bytes(encoded(ds))
        paths.append(path)
    return study, paths


def _storescu(port: int, called: str, paths: list[Path]) -> None:
    proc = subprocess.run(["/usr/bin/storescu", "-aet", "LOADER", "-aec", called,
                           "127.0.0.1", str(port), *map(str, paths)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "E:" not in proc.stderr, proc.stderr


def _wait(job: Job, timeout: float = 60) -> Job:
    def final() -> bool:
        job.refresh_from_db()
        return job.is_final

    wait_until(final, timeout, what=lambda: f"job {job.pk}, still {job.state}")
    return job


@pytest.fixture
def peer_portal(tmp_path):
    """A second portal (`manage.py serve`) that accepts any AE title."""
    portal = start_portal(tmp_path / "peer", PORTAL_DIMSE_AET="PEER",
                          PORTAL_DIMSE_ALLOW_UNKNOWN_AE="1")
    yield portal
    portal.stop()


@pytest.fixture
def orthanc(tmp_path, dimse_listener):
    """Orthanc that knows our AE (for C-MOVE to us) and accepts stores from anyone."""
    peer = Orthanc(tmp_path, modalities={
        "portal": ["PORTAL", "127.0.0.1", dimse_listener.address[1]]})
    yield ApplicationEntity.objects.create(ae_title="ORTHANC", host="127.0.0.1",
                                           port=peer.port, kind="pacs", may_store=True)
    peer.stop()


def test_send_study_to_a_second_portal_then_find_it_there(dimse_listener, peer_portal,
                                                          tmp_path):
    study, paths = _write_series(tmp_path / "src", 3, "71")
    for path in paths:
        store_instance(data=path.read_bytes(), received_from="test")
    peer = ApplicationEntity.objects.create(ae_title="PEER", host="127.0.0.1",
                                            port=peer_portal.dimse_port, kind="pacs")
    job = _wait(jobs.create_job(kind=Job.Kind.SEND, remote=peer, level="STUDY",
                                keys={"StudyInstanceUID": study}, actor="test"))
    assert (job.state, job.total, job.completed, job.failed) == ("done", 3, 3, 0)
    found = remote.find_studies(peer, patient_id="P71")
    assert [(r["StudyInstanceUID"], r["NumberOfStudyRelatedInstances"]) for r in found] == [
        (study, "3")]
    assert remote.find_series(peer, study)[0]["Modality"] == "CT"


def test_send_job_goes_on_past_an_instance_whose_file_is_gone(dimse_listener, peer_portal,
                                                              tmp_path):
    """The file of one instance was lost from the disk: the job sends the others and lists
    it as failed (before, the job failed at that instance and sent nothing more)."""
    from pacs.storage import get_storage

    study, paths = _write_series(tmp_path / "src", 3, "73")
    for path in paths:
        store_instance(data=path.read_bytes(), received_from="test")
    lost = Instance.objects.get(sop_instance_uid__endswith=".73.1")
    get_storage().delete(lost.file_key)
    peer = ApplicationEntity.objects.create(ae_title="PEER", host="127.0.0.1",
                                            port=peer_portal.dimse_port, kind="pacs")
    job = _wait(jobs.create_job(kind=Job.Kind.SEND, remote=peer, level="STUDY",
                                keys={"StudyInstanceUID": study}, actor="test"))
    assert (job.state, job.total, job.completed, job.failed) == ("partial", 3, 2, 1)
    assert lost.sop_instance_uid in json.dumps(job.failed_instances)
    found = remote.find_studies(peer, patient_id="P73")
    assert [r["NumberOfStudyRelatedInstances"] for r in found] == ["2"]


def test_get_from_a_second_portal(dimse_listener, peer_portal, tmp_path):
    study, paths = _write_series(tmp_path / "src", 4, "72")
    _storescu(peer_portal.dimse_port, "PEER", paths)
    peer = ApplicationEntity.objects.create(ae_title="PEER", host="127.0.0.1",
                                            port=peer_portal.dimse_port, kind="pacs")
    job = _wait(jobs.create_job(kind=Job.Kind.GET, remote=peer, level="STUDY",
                                keys={"StudyInstanceUID": study}, actor="test"))
    assert (job.state, job.completed, job.failed) == ("done", 4, 0)
    assert Instance.objects.filter(series__study__study_instance_uid=study).count() == 4


def test_move_from_orthanc_into_our_archive(orthanc, tmp_path):
    study, paths = _write_series(tmp_path / "src", 3, "73")
    _storescu(orthanc.port, "ORTHANC", paths)
    assert [r["StudyInstanceUID"] for r in remote.find_studies(orthanc, patient_id="P73")] == [
        study]
    job = _wait(jobs.create_job(kind=Job.Kind.MOVE, remote=orthanc, level="STUDY",
                                keys={"StudyInstanceUID": study}, actor="test"))
    assert (job.state, job.total, job.completed, job.failed) == ("done", 3, 3, 0), job.error
    assert Study.objects.get(study_instance_uid=study).number_of_instances == 3


def test_send_series_to_orthanc_from_the_command_line(orthanc, tmp_path):
    study, paths = _write_series(tmp_path / "src", 2, "74")
    for path in paths:
        store_instance(data=path.read_bytes(), received_from="test")
    series = dcmread(paths[0]).SeriesInstanceUID
    call_command("dicom_send", "--ae", "ORTHANC", "--study", study, "--series", series,
                 "--no-progress")
    job = Job.objects.get()
    assert (job.kind, job.state, job.completed) == ("send", "done", 2)
    found = remote.find_series(orthanc, study)
    assert [r["NumberOfSeriesRelatedInstances"] for r in found] == ["2"]


def test_unreachable_peer_fails_the_job_with_a_reason(transactional_db, storage_dir, tmp_path):
    study, paths = _write_series(tmp_path / "src", 1, "75")
    store_instance(data=paths[0].read_bytes(), received_from="test")
    nobody = ApplicationEntity.objects.create(ae_title="NOBODY", host="127.0.0.1",
                                              port=free_port())
    job = _wait(jobs.create_job(kind=Job.Kind.SEND, remote=nobody, level="STUDY",
                                keys={"StudyInstanceUID": study}, actor="test"))
    assert job.state == "failed" and "no association with NOBODY" in job.error
    jobs.retry_job(job=job, actor="test")  # retry runs it again (and fails again)
    job = _wait(job)
    assert job.attempts == 2 and job.state == "failed"


def test_cancelled_queued_job_never_runs(transactional_db):
    ae = ApplicationEntity.objects.create(ae_title="X", host="127.0.0.1", port=1)
    job = Job.objects.create(kind=Job.Kind.SEND, remote=ae, level="STUDY",
                             keys={"StudyInstanceUID": "1.2"})
    jobs.cancel_job(job=job, actor="test")
    assert jobs.run_job(job.pk) is None
    job.refresh_from_db()
    assert job.state == "canceled" and job.attempts == 0


def test_get_from_orthanc_receives_each_object_as_stored(orthanc, tmp_path):
    """Our C-GET SCU proposes each stored transfer syntax in a presentation context of its
    own (as DCMTK getscu does), for the SOP classes a C-FIND says are there, so Orthanc can
    send JPEG 2000 and JPEG-LS as stored; with one context listing every syntax, Orthanc
    picks one (Explicit VR Little Endian) and fails to send a JPEG 2000 image."""
    study, paths = _write_series(tmp_path / "src", 1, "75")
    ct = dcmread(paths[0])
    for index, name in enumerate(("MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm")):
        ds = dcmread(sample(name))
        ds.StudyInstanceUID, ds.PatientID, ds.PatientName = study, ct.PatientID, ct.PatientName
        ds.SeriesInstanceUID = f"{ct.SeriesInstanceUID}.{index + 2}"
        path = tmp_path / "src" / name
        path.write_bytes(encoded(ds))
        paths.append(path)
    for option, path in zip(("-x=", "-xv", "-xt"), paths, strict=True):  # each as it is
        subprocess.run(["/usr/bin/storescu", option, "-aet", "LOADER", "-aec", "ORTHANC",
                        "127.0.0.1", str(orthanc.port), str(path)],
                       capture_output=True, check=True, timeout=60)
    job = _wait(jobs.create_job(kind=Job.Kind.GET, remote=orthanc, level="STUDY",
                                keys={"StudyInstanceUID": study}, actor="test"))
    assert (job.state, job.completed, job.failed) == ("done", 3, 0), job.error
    stored = dict(Instance.objects.filter(series__study__study_instance_uid=study)
                  .values_list("sop_instance_uid", "transfer_syntax_uid"))
    assert stored == {dcmread(p).SOPInstanceUID: dcmread(p).file_meta.TransferSyntaxUID
                      for p in paths}


def test_a_failed_association_says_why(transactional_db):
    """Remote search and jobs tell apart a peer that cannot be reached, one that rejects us
    (with the A-ASSOCIATE-RJ reason of PS3.8 Table 9-21), and one that offers no C-FIND."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

    from dicomnet import scu

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"

    def why(port: int, ae_title: str = "PEER") -> str:
        with pytest.raises(scu.PeerUnavailable) as failed:
            scu.find(scu.Peer(ae_title, "127.0.0.1", port), query, calling_aet="PORTAL",
                     timeout=5)
        return str(failed.value)

    assert "peer unreachable" in why(free_port())
    echo_only = AE(ae_title="PEER")
    echo_only.add_supported_context(Verification)
    strict = AE(ae_title="PEER")
    strict.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    strict.require_called_aet = True
    servers = [ae.start_server(("127.0.0.1", 0), block=False) for ae in (echo_only, strict)]
    try:
        assert "offers none of: Study Root Query/Retrieve Information Model - FIND" in why(
            servers[0].server_address[1])
        assert "rejected permanently: the called AE title is not recognized" in why(
            servers[1].server_address[1], ae_title="WRONG")
    finally:
        for server in servers:
            server.shutdown()
