"""C-FIND SCP (Patient Root / Study Root) against DCMTK findscu and pynetdicom."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyFind

from pacs.models import ApplicationEntity
from pacs.services.ingest import store_instance
from tests.samples import encoded, sample

pytestmark = pytest.mark.interop


@pytest.fixture
def archive(dimse_listener, known_aes):
    ApplicationEntity.objects.create(ae_title="FINDSCU", host="127.0.0.1", port=104,
                                     may_query=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "emri_small.dcm"):
        store_instance(data=sample(name).read_bytes(), received_from="test")
    ds = dcmread(sample("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = "Müller^Jürgen", "LAT1"
    ds.StudyInstanceUID = ds.StudyInstanceUID + ".77"
    ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".77"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".77"
    ds.StudyDate = "20240315"
    store_instance(data=encoded(ds), received_from="test")
    return dimse_listener


def findscu(listener, tmp_path: Path, *keys: str | bytes, model: str = "-S") -> list[Dataset]:
    host, port = listener.address
    out = tmp_path / "rsp"
    out.mkdir(exist_ok=True)
    for old in out.glob("*"):
        old.unlink()
    args = ["/usr/bin/findscu", model, "-aet", "FINDSCU", "-aec", "PORTAL", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    proc = subprocess.run([*args, host, str(port)], capture_output=True, timeout=60,
                          encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("E:")], proc.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_study_level_wildcard_name_is_case_insensitive(archive, tmp_path):
    found = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=compressed*",
                    "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
                    "PatientID")
    assert sorted(str(d.PatientName) for d in found) == [
        "CompressedSamples^CT1", "CompressedSamples^MR1"]
    ct = next(d for d in found if d.PatientID == "1CT1")
    assert ct.ModalitiesInStudy == "CT" and ct.NumberOfStudyRelatedInstances == 1
    assert ct.QueryRetrieveLevel == "STUDY"


def test_date_range_and_universal_keys(archive, tmp_path):
    found = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=20240101-",
                    "PatientName", "StudyDescription")
    assert len(found) == 1 and found[0].PatientName == "Müller^Jürgen"
    assert "StudyDescription" in found[0]  # requested key returned (possibly empty)
    assert len(findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate")) == 5


def test_modality_in_study_and_uid_list(archive, tmp_path):
    found = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR",
                    "StudyInstanceUID")
    uids = [d.StudyInstanceUID for d in found]
    assert len(uids) == 2  # MR_small and emri_small
    both = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY",
                   f"StudyInstanceUID={uids[0]}\\{uids[1]}")
    assert sorted(d.StudyInstanceUID for d in both) == sorted(uids)


def test_series_and_image_levels(archive, tmp_path):
    study = dcmread(sample("emri_small.dcm"), stop_before_pixels=True)
    series = findscu(archive, tmp_path, "QueryRetrieveLevel=SERIES",
                     f"StudyInstanceUID={study.StudyInstanceUID}", "SeriesInstanceUID",
                     "Modality", "NumberOfSeriesRelatedInstances")
    assert len(series) == 1 and series[0].Modality == "MR"
    assert series[0].NumberOfSeriesRelatedInstances == 1
    images = findscu(archive, tmp_path, "QueryRetrieveLevel=IMAGE",
                     f"StudyInstanceUID={study.StudyInstanceUID}",
                     f"SeriesInstanceUID={study.SeriesInstanceUID}", "SOPInstanceUID",
                     "NumberOfFrames", "SOPClassUID")
    assert [d.SOPInstanceUID for d in images] == [study.SOPInstanceUID]
    assert images[0].NumberOfFrames == 10


def test_patient_root_patient_level_counts(archive, tmp_path):
    found = findscu(archive, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=1CT1",
                    "PatientName", "NumberOfPatientRelatedStudies",
                    "NumberOfPatientRelatedInstances", model="-P")
    assert len(found) == 1 and found[0].NumberOfPatientRelatedStudies == 1
    assert found[0].NumberOfPatientRelatedInstances == 1


def test_latin1_request_gets_latin1_answer(archive, tmp_path):
    # findscu puts the argument's bytes on the wire as they are: give it Latin-1 bytes.
    found = findscu(archive, tmp_path, "SpecificCharacterSet=ISO_IR 100",
                    "QueryRetrieveLevel=STUDY", "PatientName=MÜLLER*".encode("latin-1"),
                    "PatientID")
    assert len(found) == 1
    assert found[0].SpecificCharacterSet == "ISO_IR 100"
    assert found[0].PatientName == "Müller^Jürgen" and found[0].PatientID == "LAT1"


def _pynetdicom_find(listener, identifier: Dataset, calling: str = "FINDSCU"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyFind)
    host, port = listener.address
    assoc = ae.associate(host, port, ae_title="PORTAL")
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(identifier, StudyFind))
    finally:
        assoc.release()


def test_unsupported_level_is_a900_and_association_survives(archive):
    ds = Dataset()
    ds.QueryRetrieveLevel = "FRAME"
    responses = _pynetdicom_find(archive, ds)
    status, _ = responses[-1]
    assert status.Status == 0xA900 and "QueryRetrieveLevel" in status.ErrorComment


def test_ae_without_query_permission_is_refused(archive):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = ""
    status, _ = _pynetdicom_find(archive, ds, calling="STORESCU")[-1]
    assert status.Status == 0x0124


def test_latin1_request_gets_utf8_answer_when_latin1_cannot_hold_it(archive, tmp_path):
    ds = dcmread(sample("MR_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = "Ŝtefano^Ŭrsula", "UTF8"  # not in Latin-1
    ds.StudyInstanceUID = ds.StudyInstanceUID + ".88"
    ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".88"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".88"
    store_instance(data=encoded(ds), received_from="test")
    found = findscu(archive, tmp_path, "SpecificCharacterSet=ISO_IR 100",
                    "QueryRetrieveLevel=STUDY", "PatientID=UTF8", "PatientName")
    assert len(found) == 1
    assert found[0].SpecificCharacterSet == "ISO_IR 192"
    assert found[0].PatientName == "Ŝtefano^Ŭrsula"


def _store_study(suffix: str, date: str, time: str, **attrs) -> None:
    ds = dcmread(sample("CT_small.dcm"))
    ds.StudyInstanceUID = f"{ds.StudyInstanceUID}.9{suffix}"
    ds.SeriesInstanceUID = f"{ds.SeriesInstanceUID}.9{suffix}"
    ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.9{suffix}"
    ds.PatientID, ds.StudyDate, ds.StudyTime = f"DT{suffix}", date, time
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    store_instance(data=encoded(ds), received_from="test")


def _find_with_extended(listener, identifier: Dataset, combined: bool = False,
                        fuzzy: bool = False) -> list[Dataset]:
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyFind)
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = StudyFind
    item.service_class_application_information = bytes([0, int(combined), int(fuzzy)])
    assoc = ae.associate(*listener.address, ae_title="PORTAL", ext_neg=[item])
    assert assoc.is_established
    (reply,) = [i for i in assoc.acceptor.user_information
                if isinstance(i, SOPClassExtendedNegotiation)]
    accepted = reply.service_class_application_information
    assert (accepted[1], accepted[2]) == (int(combined), int(fuzzy))  # what we asked is taken
    try:
        return [answer for status, answer in assoc.send_c_find(identifier, StudyFind)
                if status and status.Status == 0xFF00]
    finally:
        assoc.release()


def test_combined_date_time_matching_only_when_negotiated(archive):
    _store_study("1", "20240101", "070000")
    _store_study("2", "20240102", "120000")
    _store_study("3", "20240103", "230000")
    _store_study("4", "20240102", "050000")  # inside the combined range, outside 10-20h
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyDate, ds.StudyTime, ds.PatientID = "20240101-20240103", "100000-200000", ""
    separate = _find_with_extended(archive, ds, combined=False)
    combined = _find_with_extended(archive, ds, combined=True)
    assert sorted(d.PatientID for d in separate) == ["DT2"]
    assert sorted(d.PatientID for d in combined) == ["DT2", "DT4"]


def test_fuzzy_person_name_matching_only_when_negotiated(archive):
    """PS3.4 C.2.2.2.1.3: each word starts a name component, any order, any case."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = ""
    ds.PatientName = "ct1 compressed"
    assert _find_with_extended(archive, ds) == []
    assert [d.PatientID for d in _find_with_extended(archive, ds, fuzzy=True)] == ["1CT1"]
    ds.PatientName = "jürg"
    assert [d.PatientID for d in _find_with_extended(archive, ds, fuzzy=True)] == ["LAT1"]


def test_sequence_matching_on_request_attributes(archive, tmp_path):
    item = Dataset()
    item.RequestedProcedureID, item.ScheduledProcedureStepID = "RP77", "SPS77"
    _store_study("5", "20240105", "080000", RequestAttributesSequence=[item])
    found = findscu(archive, tmp_path, "QueryRetrieveLevel=SERIES", "SeriesInstanceUID",
                    "PatientID", "RequestAttributesSequence[0].RequestedProcedureID=RP77",
                    "RequestAttributesSequence[0].ScheduledProcedureStepID")
    assert [d.PatientID for d in found] == ["DT5"]
    (returned,) = found[0].RequestAttributesSequence
    assert (returned.RequestedProcedureID, returned.ScheduledProcedureStepID) == ("RP77",
                                                                                  "SPS77")
    assert findscu(archive, tmp_path, "QueryRetrieveLevel=SERIES", "SeriesInstanceUID",
                   "RequestAttributesSequence[0].RequestedProcedureID=RP99") == []
    universal = findscu(archive, tmp_path, "QueryRetrieveLevel=SERIES", "SeriesInstanceUID",
                        "RequestAttributesSequence")
    assert len(universal) == 6  # every series; the empty sequence asks for nothing inside


def test_a_key_with_several_values_matches_any_of_them(archive, tmp_path, web, auth):
    """PS3.4 C.2.2.2.8 (multiple value matching): a key of several values matches an entity
    holding any of them; QIDO-RS writes the values separated by commas (PS3.18 8.3.4.1)."""
    import requests

    series = findscu(archive, tmp_path, "QueryRetrieveLevel=SERIES", "Modality=CT\\MR",
                     "SeriesInstanceUID")
    assert len(series) == 4  # two CT, two MR; not the RT plan
    studies = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY",
                      "ModalitiesInStudy=CT\\MR", "StudyInstanceUID")
    assert len(studies) == 4
    answer = requests.get(f"{web}/dicomweb/series?Modality=CT,MR", headers=auth, timeout=10)
    assert answer.status_code == 200 and len(answer.json()) == 4


def test_answers_name_the_retrieve_ae_and_leave_file_meta_keys_out(archive):
    """PS3.4 C.4.1.1.3.2: each answer carries Retrieve AE Title (0008,0054), asked for or
    not. Group 0002 is the file meta information of a Part 10 file, never part of a data set
    (PS3.10 7.1): a query built from a file that carries it gets answers without it."""
    query = Dataset()
    query.add_new(0x00020010, "UI", "1.2.840.10008.1.2.1")  # as a query saved from a file
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "1CT1"
    query.StudyInstanceUID = ""
    answers = [ds for status, ds in _pynetdicom_find(archive, query)
               if status.Status == 0xFF00]
    (answer,) = answers
    assert answer.RetrieveAETitle == "PORTAL"
    tags = [element.tag for element in answer]
    assert tags == sorted(tags) and not [t for t in tags if t.group == 0x0002]


def _with_extras(suffix: str, **attrs) -> Dataset:
    """A copy of the CT in a study of its own, with more attributes than the index keeps."""
    ds = dcmread(sample("CT_small.dcm"))
    ds.StudyInstanceUID += f".{suffix}"
    ds.SeriesInstanceUID += f".{suffix}"
    ds.SOPInstanceUID += f".{suffix}"
    ds.PatientID = f"X{suffix}"
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    store_instance(data=encoded(ds), received_from="test")
    return ds


def test_keys_without_an_index_column_are_matched_not_ignored(archive, tmp_path):
    """PS3.4 C.2.2.2: every key with a value constrains the matches. Keys the index has no
    column for are matched against the stored header (the instance's own, or the first
    instance's of a series or study), with the same matching rules; before, they were
    ignored and every entity matched."""
    series = findscu(archive, tmp_path, "QueryRetrieveLevel=SERIES",
                     "PatientName=CompressedSamples^CT1", "SeriesInstanceUID")
    assert len(series) == 1  # not all five series
    images = findscu(archive, tmp_path, "QueryRetrieveLevel=IMAGE", "PatientName=compressed*",
                     "SOPInstanceUID")
    assert len(images) == 2  # case-insensitive wildcard on a person name, as indexed ones
    dated = findscu(archive, tmp_path, "QueryRetrieveLevel=IMAGE",
                    "ContentDate=19970101-19971231", "SOPInstanceUID")
    assert len(dated) == 2  # the CT and its copy; the MR and plan have no ContentDate
    later = findscu(archive, tmp_path, "QueryRetrieveLevel=IMAGE", "ContentDate=19980101-",
                    "SOPInstanceUID")
    assert [d.ContentDate for d in later] == ["20000101"]  # the multi-frame MR
    thick = findscu(archive, tmp_path, "QueryRetrieveLevel=IMAGE", "SliceThickness=5",
                    "SOPInstanceUID")  # DS matched as a number: 5 is 5.000000
    assert len(thick) == 2
    institutions = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY",
                           "InstitutionName=TOSHIBA\\Here", "StudyInstanceUID")
    assert len(institutions) == 2  # multiple value matching on a header attribute


def test_sequence_keys_match_the_stored_items(archive, tmp_path):
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "ALT9", "OTHER"
    _with_extras("91", OtherPatientIDsSequence=[other])
    found = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY",
                    "(0010,1002)[0].(0010,0020)=ALT9", "PatientID")
    assert [d.PatientID for d in found] == ["X91"]
    assert findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY",
                   "(0010,1002)[0].(0010,0020)=NOPE", "PatientID") == []


def test_a_binary_key_with_a_value_is_refused_not_ignored(archive):
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.add_new(0x00880200, "SQ", [])  # fine: universal
    query.add_new(0x00281201, "OW", b"\x01\x02")  # a palette: binary, cannot be matched
    status, _ = _pynetdicom_find(archive, query)[-1]
    assert status.Status == 0xA900
    assert "RedPaletteColorLookupTableData" in status.ErrorComment


def test_return_keys_without_a_column_come_from_the_stored_header(archive, tmp_path):
    """PS3.4 C.4.1.1.3.2: the answer holds a value for each key asked for; keys the index
    has no column for come from the stored header (QIDO-RS returns the same). SOP Classes
    in Study (C.6.1.1.3) is computed from the study's instances."""
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "ALT7", "OTHER"
    _with_extras("92", OtherPatientIDsSequence=[other], PatientWeight="71.5")
    (found,) = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=X92",
                       "InstitutionName", "PatientAge", "PatientWeight", "SOPClassesInStudy",
                       "(0010,1002)")
    assert found.InstitutionName == "JFK IMAGING CENTER" and found.PatientAge == "000Y"
    assert float(found.PatientWeight) == 71.5
    assert found.SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.2"
    assert found.OtherPatientIDsSequence[0].PatientID == "ALT7"
    assert found.OtherPatientIDsSequence[0].IssuerOfPatientID == "OTHER"
    series = findscu(archive, tmp_path, "QueryRetrieveLevel=SERIES", "PatientID=X92",
                     "StudyInstanceUID=" + found.StudyInstanceUID if "StudyInstanceUID" in found
                     else "StudyInstanceUID", "Manufacturer", "SliceThickness")
    assert series and series[0].Manufacturer == "GE MEDICAL SYSTEMS"
    assert float(series[0].SliceThickness) == 5.0


def test_values_the_index_cannot_hold_come_back_whole(archive, tmp_path):
    """A body part longer than CS allows (real files have them) comes back whole, and an
    old ACR-NEMA date (YYYY.MM.DD) matches and comes back as the date it is, in the DA form
    of PS3.5 6.2, not cut to '1997.04.'."""
    _with_extras("93", BodyPartExamined="CHEST_ABDOMEN_PELVIS", StudyDate="1997.04.24")
    (study,) = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=19970424",
                       "PatientID")
    assert study.StudyDate == "19970424" and study.PatientID == "X93"
    assert len(findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY",
                       "StudyDate=19970401-19970430", "PatientID")) == 1
    (series,) = findscu(archive, tmp_path, "QueryRetrieveLevel=SERIES", "PatientID=X93",
                        "BodyPartExamined")
    assert series.BodyPartExamined == "CHEST_ABDOMEN_PELVIS"
