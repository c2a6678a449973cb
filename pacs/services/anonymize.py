"""Anonymised copies of a study or of all of a patient's studies, as new studies in the
archive, following PS3.15 Annex E's Basic Application Level Confidentiality Profile.

Which attribute gets which action (X remove, Z empty, D dummy, U new UID, and the combined
ones) is the profile's Table E.1-1 as the ``dicom-anonymizer`` package (Kitware) ships it,
read from the standard's own tables. The package's engine is not used: it acts on top-level
attributes only, so a name or a UID inside a sequence (a referenced image, a request
attributes item) would survive, and its new UIDs come from one process-wide dictionary. Here
every nesting level is processed, and a new UID is derived from the old one with a key of
the job's own (HMAC), so that each old UID gets the same new one everywhere in the copy
(references between instances of the study stay intact) and a retried job makes the same copy.

Options (PS3.15 E.3): retain full dates (E.3.6), device identity (E.3.8), institution
identity (E.3.9), patient characteristics (E.3.5), and descriptions kept (E.3.11's Clean
Descriptors Option without the cleaning: whoever ticks it vouches that the descriptions name
nobody). Private attributes are removed (no Retain Safe Private Option). The copy says what
was done: Patient Identity Removed YES, De-identification Method and its code sequence
(PS3.16 CID 7050).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from io import BytesIO

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
from django.conf import settings
from django.db import transaction
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from core import audit
from core.errors import NotFound, ServiceError
from dicomnet import scu
from pacs.dicomfile import is_multi_value
from pacs.models import Instance, Job, Patient, Study
from pacs.storage import get_storage

log = logging.getLogger(__name__)

# The profile's actions, one letter each after the combined ones are resolved as the
# profile allows: X/Z -> Z, X/D, Z/D, X/Z/D -> D (always a value: no IOD is broken by a
# missing Type 1 or Type 2 attribute), X/Z/U* -> U for UIDs and sequences, Z otherwise.
REMOVE, EMPTY, DUMMY, UID = "X", "Z", "D", "U"


def _actions() -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    plain: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for name, action in (("X_TAGS", REMOVE), ("Z_TAGS", EMPTY), ("D_TAGS", DUMMY),
                         ("U_TAGS", UID), ("X_Z_TAGS", EMPTY), ("X_D_TAGS", DUMMY),
                         ("Z_D_TAGS", DUMMY), ("X_Z_D_TAGS", DUMMY), ("X_Z_U_STAR_TAGS", UID)):
        for entry in getattr(table, name):
            if len(entry) == 2:
                plain[Tag(entry)] = action
            else:  # a repeating group (curves 50xx, overlays 60xx): group, element, masks
                masked.append((*entry, action))
    return plain, masked


PROFILE, PROFILE_MASKED = _actions()


def profile_action(tag: BaseTag) -> str | None:
    """The Basic Profile's action for an attribute (None: kept)."""
    action = PROFILE.get(tag)
    if action is not None:
        return action
    for group, element, group_mask, element_mask, masked in PROFILE_MASKED:
        if tag.group & group_mask == group & group_mask and \
                tag.element & element_mask == element & element_mask:
            return masked
    return None


# What each option keeps (PS3.15 Table E.1-1's option columns, the attributes users meet)
DEVICE = frozenset(Tag(k) for k in (
    "StationName", "DeviceSerialNumber", "DeviceUID", "DeviceID", "PlateID", "GeneratorID",
    "CassetteID", "GantryID", "DetectorID", "SourceSerialNumber", "DeviceDescription",
    "DeviceLabel", "PerformedStationName", "PerformedStationAETitle",
    "ScheduledStationName", "ScheduledStationAETitle", "ModifyingDeviceID"))
INSTITUTION = frozenset(Tag(k) for k in (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "InstitutionalDepartmentTypeCodeSequence"))
PATIENT_CHARACTERISTICS = frozenset(Tag(k) for k in (
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup",
    "SmokingStatus", "PregnancyStatus", "PatientSexNeutered", "AdditionalPatientHistory",
    "PatientSpeciesDescription", "PatientBreedDescription"))
DESCRIPTIONS = frozenset(Tag(k) for k in (
    "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments",
    "RequestedProcedureDescription", "PerformedProcedureStepDescription",
    "ScheduledProcedureStepDescription", "AcquisitionDeviceProcessingDescription",
    "DerivationDescription", "BodyPartExamined", "ReasonForStudy",
    "RequestedContrastAgent", "ContrastBolusAgent"))
# never kept by the dates option: they date the patient, not the study
BIRTH = frozenset(Tag(k) for k in ("PatientBirthDate", "PatientBirthTime"))
DATE_VRS = frozenset({"DA", "DT", "TM"})
DUMMIES = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y",
           "DS": "0", "IS": "0", "UR": "http://anonymized.invalid"}
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})
MAX_TEXT = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240,
            "UT": 10240, "UC": 10240}


@dataclass(frozen=True)
class Options:
    retain_dates: bool = False
    retain_device: bool = False
    retain_institution: bool = False
    retain_patient_characteristics: bool = False
    keep_descriptions: bool = False
    patient_id: str = ""  # the copy's Patient ID; made up (ANON-...) when empty
    patient_name: str = "ANONYMOUS"

    def kept(self) -> frozenset:
        kept: set = set()
        if self.retain_device:
            kept |= DEVICE
        if self.retain_institution:
            kept |= INSTITUTION
        if self.retain_patient_characteristics:
            kept |= PATIENT_CHARACTERISTICS
        if self.keep_descriptions:
            kept |= DESCRIPTIONS
        return frozenset(kept)

    def method_codes(self) -> list[tuple[str, str]]:
        """PS3.16 CID 7050 De-identification Method codes of the profile and its options."""
        codes = [("113100", "Basic Application Confidentiality Profile")]
        for on, code in ((self.retain_patient_characteristics,
                          ("113108", "Retain Patient Characteristics Option")),
                         (self.retain_dates, ("113106", "Retain Longitudinal Temporal "
                                                        "Information Full Dates Option")),
                         (self.retain_device, ("113109", "Retain Device Identity Option")),
                         (self.retain_institution,
                          ("113112", "Retain Institution Identity Option")),
                         (self.keep_descriptions, ("113105", "Clean Descriptors Option"))):
            if on:
                codes.append(code)
        return codes


class Anonymizer:
    """One copy's anonymisation: the same new UID for the same old one, throughout."""

    def __init__(self, key: bytes, options: Options) -> None:
        self.key = key
        self.options = options
        self.kept = options.kept()

    def new_uid(self, old: str) -> str:
        digest = hmac.new(self.key, old.strip().encode(), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def dataset(self, ds: Dataset) -> None:
        """Anonymise ``ds`` in place, every nesting level, and say so in it."""
        self._clean(ds)
        ds.remove_private_tags()
        ds.PatientName = self.options.patient_name
        ds.PatientID = self.options.patient_id
        ds.PatientIdentityRemoved = "YES"
        codes = self.options.method_codes()
        ds.DeidentificationMethod = "; ".join(meaning for _, meaning in codes)[:64]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
                value, "DCM", meaning)
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)

    def _clean(self, ds: Dataset) -> None:
        for element in list(ds):
            tag = element.tag
            if tag.is_private:
                continue  # removed as a whole afterwards
            action = profile_action(tag)
            if element.VR == "SQ":
                if action == REMOVE and tag not in self.kept:
                    del ds[tag]
                    continue
                if action == EMPTY and tag not in self.kept:
                    element.value = Sequence([])
                    continue
                for item in element.value:  # kept, dummy or UIDs: clean what is inside
                    self._clean(item)
                continue
            if action is None or tag in self.kept:
                continue
            if self.options.retain_dates and element.VR in DATE_VRS and tag not in BIRTH:
                continue
            self._act(ds, element, action)

    def _act(self, ds: Dataset, element: DataElement, action: str) -> None:
        vr = element.VR
        if action == REMOVE:
            del ds[element.tag]
        elif vr == "UI" and action in (UID, DUMMY):
            values = list(element.value) if is_multi_value(element.value) else [element.value]
            new = [self.new_uid(str(v)) for v in values if str(v or "").strip()]
            element.value = new if len(new) > 1 else (new[0] if new else "")
        elif action in (EMPTY, UID):  # U of a non-UID attribute (X/Z/U*): emptied
            element.value = b"" if vr in BINARY_VRS else (None if vr in NUMBER_VRS else "")
        else:  # DUMMY
            if vr in DUMMIES:
                element.value = DUMMIES[vr]
            elif vr in MAX_TEXT:
                element.value = "ANONYMIZED"[:MAX_TEXT[vr]]
            elif vr in NUMBER_VRS:
                element.value = 0
            else:
                element.value = b""


def start(*, level: str, uid_or_patient: str | int, options: Options, actor: str,
          source: str = "", run_now: bool = False) -> Job:
    """A job making the anonymised copy: of a study (level STUDY, its Study Instance UID) or
    of all of a patient's studies (level PATIENT, the registry's patient pk). Queued, or with
    ``run_now`` run here to its end (the command line)."""
    if level == "STUDY":
        study = Study.objects.filter(study_instance_uid=uid_or_patient).first()
        if study is None:
            raise NotFound(f"no study {uid_or_patient}")
        keys, label = {"StudyInstanceUID": study.study_instance_uid}, f"study {uid_or_patient}"
    elif level == "PATIENT":
        patient = Patient.objects.filter(pk=uid_or_patient).first()
        if patient is None:
            raise NotFound("no such patient")
        keys, label = {"patient": patient.pk}, f"patient {patient.patient_id}"
    else:
        raise ServiceError("anonymise a STUDY or a PATIENT")
    if not options.patient_id:
        options = Options(**{**asdict(options), "patient_id": f"ANON-{secrets.token_hex(4)}"})
    if len(options.patient_id) > 64 or len(options.patient_name) > 64:
        raise ServiceError("the new Patient ID and name are 64 characters at most")
    from pacs.services.jobs import enqueue

    with transaction.atomic():
        job = Job.objects.create(kind=Job.Kind.ANONYMIZE, level=level, keys=keys,
                                 changes=asdict(options), created_by=actor[:150],
                                 description=f"anonymised copy of {label}")
        audit.record(category="admin", action="anonymise", actor=actor, source=source[:128],
                     detail=f"{label} -> patient {options.patient_id} (job {job.pk})")
        if not run_now:
            transaction.on_commit(lambda: enqueue(job.pk))
    if run_now:
        from pacs.services.jobs import run_job

        job = run_job(job.pk) or job
    return job


def _key(job: Job) -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), f"anonymize:{job.pk}".encode(),
                    hashlib.sha256).digest()


def _instances(job: Job) -> Iterable[tuple[int, str, str]]:
    rows = Instance.objects.order_by("series__study_id", "series_id", "pk")
    if job.level == "STUDY":
        rows = rows.filter(series__study__study_instance_uid=job.keys["StudyInstanceUID"])
    else:
        rows = rows.filter(series__study__patient_id=job.keys["patient"])
    return list(rows.values_list("pk", "sop_instance_uid", "file_key"))


def run(job: Job, reporter) -> None:
    """Make the copy: each instance read, anonymised and stored through the one ingest path."""
    from pacs.services.ingest import store_instance

    options = Options(**job.changes)
    anonymizer = Anonymizer(_key(job), options)
    storage = get_storage()
    items = _instances(job)
    if not items:
        raise ServiceError("nothing in the archive to anonymise")
    progress = scu.Progress(remaining=len(items))
    studies: set[str] = set()
    for _, sop_uid, key in items:
        if not reporter.update(progress):
            break
        try:
            with storage.open(key) as file:
                ds = dcmread(BytesIO(file.read()))
            anonymizer.dataset(ds)
            data = _part10(ds)
            store_instance(data=data, received_from=f"anonymize:{job.created_by}"[:128])
        except Exception as exc:  # one unreadable file does not stop the copy
            log.warning("anonymising an instance of job %s failed: %s", job.pk,
                        type(exc).__name__)
            progress.record(sop_uid, 0xC000)
            continue
        studies.add(str(ds.StudyInstanceUID))
        progress.record(sop_uid, 0x0000)
    job.result = (next(iter(studies)) if job.level == "STUDY" and len(studies) == 1
                  else f"patient {options.patient_id}")[:255]
    Job.objects.filter(pk=job.pk).update(result=job.result)
    reporter.update(progress, force=True)


def _part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    ds.file_meta = meta
    out = DicomBytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
