"""Anonymised copies (PS3.15 Annex E, Basic Application Level Confidentiality Profile),
checked against the profile's own attribute table: a data set holding every attribute the
table names, each with a value of its own, at the top and inside a sequence, comes out with
none of the values marked X, Z, D or U anywhere in the written file."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from pacs.models import Instance, Job, Study
from pacs.services import anonymize, jobs
from pacs.services.ingest import store_instance
from pacs.storage import get_storage
from tests.samples import encoded, sample

ROOT = "1.2.826.0.1.3680043.8.498.3015"
MARKED = {anonymize.REMOVE, anonymize.EMPTY, anonymize.DUMMY, anonymize.UID}


def _value(tag: int, vr: str):
    """A value of its own for an attribute, findable in the written bytes."""
    mark = f"{tag:08X}"
    return {
        "DA": "20200102", "TM": "101112", "DT": "20200102101112", "AS": "042Y",
        "UI": f"1.2.999.{int(mark, 16)}", "DS": "7.5", "IS": "77", "UR": f"http://x/{mark}",
        "US": 7, "SS": 7, "UL": 7, "SL": 7, "FL": 7.0, "FD": 7.0, "AT": 0x00100010,
        "OB": b"OB" + mark.encode(), "OW": b"OW" + mark.encode(), "UN": b"UN" + mark.encode(),
        "AE": f"A{mark}"[:16], "CS": f"C{mark}"[:16], "SH": f"S{mark}",
    }.get(vr, f"ORIG{mark}")


def _full_dataset() -> tuple[Dataset, dict[int, object]]:
    """A CT image plus every attribute of Table E.1-1 that pydicom's dictionary types."""
    ds = dcmread(sample("CT_small.dcm"))
    originals: dict[int, object] = {}
    for tag, action in anonymize.PROFILE.items():
        if tag.group in (0x0000, 0x0002, 0x7FE0) or keyword_for_tag(tag) in (
                "SOPClassUID", "TransferSyntaxUID", "SpecificCharacterSet"):
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        vr = vr.split(" or ")[0]
        if vr == "SQ":
            item = Dataset()
            item.PatientName = f"NESTED^{tag:08X}"
            item.ReferencedSOPInstanceUID = f"1.2.998.{int(tag)}"
            ds.add_new(tag, vr, Sequence([item]))
            originals[tag] = item.PatientName
            continue
        value = _value(tag, vr)
        ds.add_new(tag, vr, value)
        if action in MARKED:
            originals[tag] = value
    ds.SOPInstanceUID = f"{ROOT}.1.1.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{ROOT}.1", f"{ROOT}.1.1"
    originals.update({Tag("SOPInstanceUID"): ds.SOPInstanceUID,
                      Tag("StudyInstanceUID"): ds.StudyInstanceUID})
    block = ds.private_block(0x0019, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "PRIVATE-SECRET")
    return ds, originals


def test_no_attribute_the_profile_marks_keeps_its_value():
    ds, originals = _full_dataset()
    assert len(originals) > 300  # the table's attributes, not a handful
    anonymizer = anonymize.Anonymizer(b"k" * 32, anonymize.Options(patient_id="ANON-1"))
    anonymizer.dataset(ds)
    written = anonymize._part10(ds)
    out = dcmread(io.BytesIO(written))
    survivors = []
    for tag, original in originals.items():
        if tag not in out:
            continue
        value = out[tag].value
        if isinstance(original, bytes | str) and original and str(value) == str(original):
            survivors.append(keyword_for_tag(tag) or str(tag))
        # text values must not be anywhere in the file, not even inside a sequence
        if isinstance(original, str) and len(original) > 6 and original.encode() in written:
            survivors.append(f"{keyword_for_tag(tag)} (in the bytes)")
    assert survivors == []
    assert b"PRIVATE-SECRET" not in written and b"NESTED^" not in written
    assert out.PatientIdentityRemoved == "YES" and out.PatientID == "ANON-1"
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    # a new UID is the same new UID wherever the old one was
    assert out.SOPInstanceUID == anonymizer.new_uid(f"{ROOT}.1.1.1")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_options_keep_what_they_name():
    ds, _ = _full_dataset()
    ds.StudyDate, ds.InstitutionName, ds.StationName = "20210315", "ST ELSEWHERE", "CT01"
    ds.StudyDescription, ds.PatientBirthDate = "CT HEAD", "19500101"
    anonymize.Anonymizer(b"k" * 32, anonymize.Options(
        retain_dates=True, retain_device=True, retain_institution=True,
        keep_descriptions=True)).dataset(ds)
    assert (ds.StudyDate, ds.InstitutionName, ds.StationName, ds.StudyDescription) == (
        "20210315", "ST ELSEWHERE", "CT01", "CT HEAD")
    assert ds.get("PatientBirthDate", "") in ("", None)  # never kept by the dates option
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113106", "113109", "113112", "113105"}


@pytest.mark.django_db(transaction=True)
def test_a_study_copy_keeps_its_references_and_the_original(storage_dir, monkeypatch):
    monkeypatch.setattr(jobs, "enqueue", jobs.run_job)
    uids = []
    for n in (1, 2):
        ds = dcmread(sample("CT_small.dcm"))
        ds.PatientID, ds.PatientName, ds.StudyDate = "REAL-1", "REAL^PERSON", "20240101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{ROOT}.9", f"{ROOT}.9.1"
        ds.SOPInstanceUID = f"{ROOT}.9.1.{n}"
        if n == 2:  # the second image names the first
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = (
                ds.SOPClassUID, f"{ROOT}.9.1.1")
            ds.ReferencedImageSequence = Sequence([ref])
        store_instance(data=encoded(ds), received_from="test")
        uids.append(ds.SOPInstanceUID)
    job = anonymize.start(level="STUDY", uid_or_patient=f"{ROOT}.9",
                          options=anonymize.Options(patient_id="ANON-9"), actor="boss")
    job.refresh_from_db()
    assert (job.state, job.completed, job.failed) == ("done", 2, 0)
    copy = Study.objects.get(study_instance_uid=job.result)
    assert copy.patient.patient_id == "ANON-9" and copy.number_of_instances == 2
    assert copy.study_date == ""  # Z without the dates option
    stored = {}
    for inst in Instance.objects.filter(series__study=copy):
        with get_storage().open(inst.file_key) as file:  # not seekable on an object store
            ds = dcmread(io.BytesIO(file.read()))
        stored[ds.SOPInstanceUID] = ds
        assert str(ds.PatientName) == "ANONYMOUS" and ds.PatientIdentityRemoved == "YES"
    assert not set(stored) & set(uids)
    second = next(ds for ds in stored.values() if "ReferencedImageSequence" in ds)
    first_uid = second.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert first_uid in stored and first_uid != uids[0]  # the reference follows the copy
    assert Study.objects.filter(study_instance_uid=f"{ROOT}.9").exists()  # original stays
    assert Job.objects.get(pk=job.pk).kind == "anonymize"


@pytest.mark.django_db(transaction=True)
def test_the_command(storage_dir, capsys):
    ds = dcmread(sample("CT_small.dcm"))
    ds.PatientID, ds.StudyInstanceUID = "CMD-1", f"{ROOT}.10"
    store_instance(data=encoded(ds), received_from="test")
    call_command("anonymize", "--patient", "CMD-1", "--new-patient-id", "ANON-CMD",
                 "--retain-dates")
    assert capsys.readouterr().out.strip() == "ANON-CMD"
    copy = Study.objects.get(patient__patient_id="ANON-CMD")
    assert copy.study_date == Study.objects.get(study_instance_uid=f"{ROOT}.10").study_date
