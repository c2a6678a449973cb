"""Who a patient is, one rule for every face: the registry's key is (PatientID, Issuer of
Patient ID), and an absent issuer is the site's own (PORTAL_LOCAL_ISSUER), whether the
identifier comes from the scheduler's form, a modality's images or an HL7 sender that names
none. Images without a PatientID get an identity of their own per study, never a shared empty
one. And what each source may change: the registry (HL7 ADT, the scheduler) owns names, birth
dates and sex; images never change them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings

# The issuer of the identities the portal makes up for images without a PatientID.
GENERATED_ISSUER = "PORTAL:NO-ID"


@dataclass(frozen=True)
class PatientKey:
    patient_id: str
    issuer: str

    @classmethod
    def of(cls, patient) -> PatientKey:
        """The registry key of a stored patient (pacs.models.Patient)."""
        return cls(patient.patient_id, patient.issuer_of_patient_id)

    def label(self) -> str:
        """How messages and the audit trail name a patient: ID^^^issuer (CX)."""
        return self.patient_id + (f"^^^{self.issuer}" if self.issuer else "")


def issuer_or_local(issuer: str) -> str:
    """An identifier's issuer, the site's own when it names none."""
    return (issuer or "").strip() or settings.LOCAL_ISSUER


def key(patient_id: str, issuer: str = "") -> PatientKey:
    return PatientKey(patient_id.strip(), issuer_or_local(issuer))


def generated_id(study_uid: str) -> str:
    """The PatientID of a study whose images have none: one per study, stable (the same
    study always gets the same one), findable as such."""
    return "NOID-" + hashlib.sha1(study_uid.encode()).hexdigest()[:16].upper()


def image_key(patient_id: str, issuer: str, study_uid: str) -> PatientKey:
    """The registry key of an image's patient (PatientID and IssuerOfPatientID from its
    header), a generated one when the image has no PatientID."""
    patient_id = (patient_id or "").strip()
    if not patient_id:
        return PatientKey(generated_id(study_uid), GENERATED_ISSUER)
    return key(patient_id, issuer)


def person_name(value: Any) -> str:
    """A DICOM JSON person name (or a string) as the index keeps it: the component groups
    joined with '='."""
    if isinstance(value, dict):
        groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    return "" if value is None else str(value)


def same_value(a: str, b: str) -> bool:
    """Do two demographic values say the same (case, trailing separators and spaces aside)?"""
    def norm(text: str) -> str:
        return "=".join(group.rstrip("^ ").strip() for group in (text or "").upper().split("="))
    return norm(a) == norm(b)


# Letters that Unicode's decomposition does not split into a base letter and a mark
_FOLDED = str.maketrans({"ß": "SS", "Æ": "AE", "Œ": "OE", "Ø": "O", "Ł": "L", "Đ": "D",
                         "Þ": "TH", "Ð": "D", "Ħ": "H", "Ŧ": "T", "Ŋ": "N", "ı": "I"})


def fold(text: str) -> str:
    """Upper case without accents: what the pages' name search compares ('Müller' and
    'MULLER' are the same to it; C-FIND and QIDO-RS keep the standard's matching)."""
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", (text or "").upper().translate(_FOLDED))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def name_words(name: str) -> str:
    """A person name's words, folded, space-separated with a space at each end, for a search
    that matches any component: 'Müller^Hans Peter' -> ' MULLER HANS PETER '."""
    words = fold(name).replace("^", " ").replace("=", " ").replace(",", " ").split()
    return f" {' '.join(words)} " if words else ""


def name_columns(name: str) -> dict[str, str]:
    """The Patient columns that hold a name: as given, upper-cased (the matching engine's),
    and its folded words (the pages' search)."""
    return {"patient_name": name, "patient_name_norm": name.upper(),
            "patient_name_words": name_words(name)[:400]}
