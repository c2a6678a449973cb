from __future__ import annotations

import shutil

import pytest
from django.core.management import call_command
from pydicom import dcmread

from core.models import AuditEvent
from pacs.models import Instance, Study
from tests import stored
from tests.samples import dicomdir_tests, sample

pytestmark = pytest.mark.django_db


def test_import_folder_with_dicomdir_and_junk(storage_dir, tmp_path, capsys):
    src = tmp_path / "media"
    shutil.copytree(dicomdir_tests(), src)
    (src / "notes.txt").write_text("not dicom")
    shutil.copy(sample("CT_small.dcm"), src / "ct.dcm")
    truncated = sample("CT_small.dcm").read_bytes()[:-3000]
    (src / "broken.dcm").write_bytes(truncated)
    call_command("import", str(src), "--no-progress")
    out = capsys.readouterr().out
    assert "rejected" in out and "truncated" in out and "notes.txt" in out
    assert "DICOMDIR (directory, not an instance)" in out
    assert Instance.objects.filter(
        sop_instance_uid=dcmread(sample("CT_small.dcm")).SOPInstanceUID
    ).exists()
    assert Instance.objects.count() >= 30  # the DICOMDIR test set holds 31 images
    assert AuditEvent.objects.filter(category="import").exists()
    # Importing again stores nothing new.
    before = Instance.objects.count()
    call_command("import", str(src), "--no-progress")
    assert "0 stored" in capsys.readouterr().out
    assert Instance.objects.count() == before


def test_import_dicomdir_file_follows_its_references(storage_dir, tmp_path, capsys):
    src = tmp_path / "media"
    shutil.copytree(dicomdir_tests(), src)
    call_command("import", str(src / "DICOMDIR"), "--no-progress")
    out = capsys.readouterr().out
    assert Instance.objects.count() > 0 and "rejected" in out


def test_import_missing_path_is_an_error(storage_dir):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no such file"):
        call_command("import", "/nonexistent/path", "--no-progress")


def test_export_one_study_and_all(storage_dir, tmp_path, capsys):
    call_command("import", str(dicomdir_tests()), "--no-progress")
    study = Study.objects.order_by("id").first()
    out = tmp_path / "out"
    call_command("export", str(out), "--study", study.study_instance_uid, "--no-progress")
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == study.number_of_instances
    for f in files:
        assert dcmread(f, stop_before_pixels=True).StudyInstanceUID == study.study_instance_uid
    everything = tmp_path / "all"
    call_command("export", str(everything), "--all", "--no-progress")
    assert len(list(everything.rglob("*.dcm"))) == Instance.objects.count()


def test_export_patient_and_nothing_matching(storage_dir, tmp_path):
    from django.core.management.base import CommandError

    call_command("import", str(sample("CT_small.dcm")), "--no-progress")
    call_command("export", str(tmp_path / "p"), "--patient", "1CT1", "--no-progress")
    assert len(list((tmp_path / "p" / "1CT1").rglob("*.dcm"))) == 1
    with pytest.raises(CommandError, match="nothing to export"):
        call_command("export", str(tmp_path / "x"), "--series", "9.9.9", "--no-progress")


@stored.local_files_only
def test_importing_the_storage_folder_rebuilds_a_lost_index(storage_dir, capsys):
    """Recovery after a power failure lost the embedded index's last commits: the files are on
    disk, and `import` of the storage folder indexes them in place again."""
    from pacs.models import Patient, Series
    from pacs.services.ingest import store_instance

    names = ("CT_small.dcm", "MR_small.dcm")
    for name in names:
        store_instance(data=sample(name).read_bytes(), received_from="modality")
    files = sorted(p for p in storage_dir.rglob("*.dcm"))
    for model in (Instance, Series, Study, Patient):  # the rows are gone, the files are not
        model.objects.all().delete()
    assert Instance.objects.count() == 0
    call_command("import", str(storage_dir), "--no-progress")
    assert "2 stored" in capsys.readouterr().out
    assert sorted(Instance.objects.values_list("file_key", flat=True)) == [
        str(p.relative_to(storage_dir)) for p in files]
    assert sorted(p for p in storage_dir.rglob("*.dcm")) == files
    for name in names:
        uid = dcmread(sample(name)).SOPInstanceUID
        (path,) = [p for p in files if p.name == f"{uid}.dcm"]
        assert path.read_bytes() == sample(name).read_bytes()
    assert Study.objects.get(patient__patient_id="1CT1").number_of_instances == 1


def test_export_never_writes_outside_its_folder(storage_dir, tmp_path):
    """A stored PatientID of '..' (or '.', or '/etc') names a folder inside the export."""
    from django.core.management import call_command
    from pydicom import dcmread

    from pacs.services.importer import path_component
    from pacs.services.ingest import store_instance
    from tests.samples import encoded, sample

    for n, patient_id in enumerate(("..", ".", "../../etc", "/abs")):
        ds = dcmread(sample("CT_small.dcm"))
        ds.PatientID = patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"1.2.3.{n}", f"1.2.3.{n}.1"
        ds.SOPInstanceUID = f"1.2.3.{n}.1.1"
        store_instance(data=encoded(ds), received_from="test")
    out = tmp_path / "box" / "out"
    out.mkdir(parents=True)
    call_command("export", str(out), "--patient", "..", "--no-progress")
    call_command("export", str(out), "--all", "--no-progress")
    written = sorted(p.relative_to(out) for p in out.rglob("*.dcm"))
    assert len(written) == 4
    assert not [p for p in (tmp_path / "box").iterdir() if p.name != "out"]
    assert {p.parts[0] for p in written} == {"__", "_", "_._.._etc", "_abs"}
    assert path_component("", "NO_ID") == "NO_ID"
