"""The one patient registry (Patient: PatientID + IssuerOfPatientID) that images, orders and
HL7 share: found, or created on first sight, the same way for every caller."""

from __future__ import annotations

from core import statements
from pacs.identity import PatientKey
from pacs.models import Patient, PatientChange


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


def change_source(source: str) -> str:
    """Where a registry change came from (PatientChange.Source), from the free-text source
    the services pass along: an HL7 message, an import, or the scheduler's pages."""
    text = (source or "").lower()
    if text.startswith("hl7"):
        return PatientChange.Source.HL7
    if text.startswith("import"):
        return PatientChange.Source.IMPORT
    if text.startswith("merge"):
        return PatientChange.Source.MERGE
    if text.startswith("page"):
        return PatientChange.Source.PAGE
    return PatientChange.Source.SCHEDULER


def record_change(patient: Patient, *, action: str, source: str, actor: str,
                  detail: str = "") -> None:
    """A line of the patient's history (the patient page); ``source`` as the services pass
    it (change_source), or a PatientChange.Source value."""
    kind = source if source in PatientChange.Source.values else change_source(source)
    statements.insert_row(PatientChange, patient_id=patient.pk, source=kind,
                          actor=actor[:150], action=action[:64], detail=detail)
