"""The one patient registry (Patient: PatientID + IssuerOfPatientID) that images, orders and
HL7 share: found, or created on first sight, the same way for every caller."""

from __future__ import annotations

from core import statements
from pacs.identity import PatientKey
from pacs.models import Patient


def find_or_create(key: PatientKey, fields: dict[str, str]) -> tuple[Patient, bool]:
    """The registry's patient of ``key``, or a new one with ``fields`` (demographics); whether
    it was created. A concurrent writer creating the same patient is not an error on either
    database: the insert does nothing (ON CONFLICT DO NOTHING, no savepoint) and the row
    that writer made is read instead."""
    where = {"patient_id": key.patient_id, "issuer_of_patient_id": key.issuer}
    patient = statements.first(Patient, **where)
    if patient is not None:
        return patient, False
    created = statements.insert(Patient(**where, **fields), if_new=True)
    if created is not None:
        return created, True
    patient = statements.first(Patient, **where)
    assert patient is not None, "a conflicting insert leaves the row it conflicted with"
    return patient, False
