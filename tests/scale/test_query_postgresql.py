"""The query engine's PostgreSQL-only SQL: SOP Classes in Study (STRING_AGG where SQLite has
GROUP_CONCAT) and keys matched against the stored headers (jsonb read back as text)."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from pacs import query
from pacs.services.ingest import store_instance
from tests.samples import encoded, sample

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True)]


def test_sop_classes_in_study_and_header_keys_on_postgresql(storage_dir):
    ct = dcmread(sample("CT_small.dcm"))
    store_instance(data=encoded(ct), received_from="test")
    second = dcmread(sample("MR_small.dcm"))
    second.StudyInstanceUID = ct.StudyInstanceUID
    second.PatientID, second.PatientName = ct.PatientID, ct.PatientName
    store_instance(data=encoded(second), received_from="test")
    store_instance(data=sample("rtplan.dcm").read_bytes(), received_from="test")

    identifier = Dataset()
    identifier.StudyInstanceUID = ct.StudyInstanceUID
    identifier.SOPClassesInStudy = ""
    identifier.InstitutionName = "JFK*"
    level, qs = query.search("STUDY", identifier)
    rows = list(query.find(level, qs, identifier, ["study_instance_uid", "sop_classes"]))
    assert len(rows) == 1
    assert sorted(rows[0][1].split("\\")) == ["1.2.840.10008.5.1.4.1.1.2",
                                              "1.2.840.10008.5.1.4.1.1.4"]
    identifier.InstitutionName = "NOWHERE"
    level, qs = query.search("STUDY", identifier)
    assert list(query.find(level, qs, identifier, ["study_instance_uid"])) == []
