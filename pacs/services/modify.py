"""Changing what is stored, in place: the attributes of a study or a series (admins), and the
patient attributes of every stored header after the registry changed (a demographics edit, a
merge or unmerge, an ID change).

The registry and the index change at once; the stored files follow in a job (Job.Kind.MODIFY)
that rewrites each instance's Part 10 file and its DICOM JSON header, so that what WADO-RS,
C-MOVE/C-GET, sends and downloads give out says the same as the index. Headers are rewritten,
not patched on the way out: a retrieve stays a plain copy of stored bytes (no re-encoding per
request), and a file taken from the disk or the bucket says what the archive says.

Each rewrite writes a new file under a new key, swaps the index row to it in one transaction
and deletes the old file after the commit, as a replacing re-send does (pacs.services.ingest):
a failure leaves the old file and row as they were. UIDs never change here (an anonymised copy
is a new study: pacs.services.anonymize).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from io import BytesIO

from django.db import transaction
from django.db.models import QuerySet
from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite

from core import audit
from core.errors import NotFound, ServiceError
from dicomnet import scu
from pacs import identity
from pacs.dicomfile import read_header
from pacs.models import Instance, Job, Patient, Series, Study
from pacs.storage import Storage, get_storage

log = logging.getLogger(__name__)

# What an admin may change on a study or a series page: the attribute, the index column it
# is kept in (None: the header only), and its maximum length (the VR's).
STUDY_ATTRIBUTES: dict[str, tuple[str | None, int]] = {
    "StudyDescription": ("study_description", 64),
    "AccessionNumber": ("accession_number", 16),
    "StudyID": ("study_id", 16),
    "StudyDate": ("study_date", 8),
    "StudyTime": ("study_time", 16),
    "ReferringPhysicianName": ("referring_physician_name", 324),
}
SERIES_ATTRIBUTES: dict[str, tuple[str | None, int]] = {
    "SeriesDescription": ("series_description", 64),
    "SeriesNumber": ("series_number", 12),
    "BodyPartExamined": ("body_part_examined", 16),
    "StationName": ("station_name", 16),
    "Modality": ("modality", 16),
}


def modify_study(study_uid: str, changes: dict[str, str], *, actor: str, source: str = ""
                 ) -> Job | None:
    """Set study attributes (keywords of STUDY_ATTRIBUTES) in the index now and in every
    stored header by a job; the job, or None when nothing changes."""
    study = Study.objects.filter(study_instance_uid=study_uid).first()
    if study is None:
        raise NotFound(f"no study {study_uid}")
    return _modify(study, "STUDY", {"StudyInstanceUID": study_uid}, STUDY_ATTRIBUTES, changes,
                   actor=actor, source=source, label=f"study {study_uid}")


def modify_series(series_uid: str, changes: dict[str, str], *, actor: str, source: str = ""
                  ) -> Job | None:
    series = Series.objects.filter(series_instance_uid=series_uid).select_related(
        "study").first()
    if series is None:
        raise NotFound(f"no series {series_uid}")
    job = _modify(series, "SERIES", {"StudyInstanceUID": series.study.study_instance_uid,
                                     "SeriesInstanceUID": series_uid}, SERIES_ATTRIBUTES,
                  changes, actor=actor, source=source, label=f"series {series_uid}")
    if job and "Modality" in job.changes:
        _recount_modalities(series.study_id)
    return job


def _modify(row, level: str, keys: dict[str, str], allowed: dict, changes: dict[str, str],
            *, actor: str, source: str, label: str) -> Job | None:
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise ServiceError(f"these attributes are not changed here: {', '.join(unknown)}")
    changed = {}
    for keyword, value in changes.items():
        column, limit = allowed[keyword]
        value = (value or "").strip()
        if len(value) > limit:
            raise ServiceError(f"{keyword} is {limit} characters at most")
        current = getattr(row, column)
        if str("" if current is None else current) != value:
            changed[keyword] = value
    if not changed:
        return None
    with transaction.atomic():
        for keyword, value in changed.items():
            column = allowed[keyword][0]
            field = row._meta.get_field(column)
            setattr(row, column, (int(value) if value else None)
                    if field.get_internal_type().endswith("IntegerField") else value)
        row.save(update_fields=[allowed[k][0] for k in changed])
        job = create_job(level=level, keys=keys, changes=changed, actor=actor,
                         description=f"set {', '.join(sorted(changed))} of {label}")
        audit.record(category="admin", action=f"{level.lower()} modified", actor=actor,
                     source=source[:128], detail=f"{label}: " + "; ".join(
                         f"{k} set to {v!r}" for k, v in sorted(changed.items()))
                     + f" (headers rewritten by job {job.pk})")
    return job


def _recount_modalities(study_id: int) -> None:
    modalities = sorted({m for m in Series.objects.filter(study_id=study_id).values_list(
        "modality", flat=True) if m})
    Study.objects.filter(pk=study_id).update(modalities_in_study="\\".join(modalities))


def rewrite_patient_headers(patient: Patient, *, actor: str, why: str) -> Job | None:
    """A job bringing the stored headers of the patient's studies in line with the registry
    (read when the job runs, so that jobs for the same patient never undo each other)."""
    if not Instance.objects.filter(series__study__patient=patient).exists():
        return None
    return create_job(level="PATIENT", keys={"patient": patient.pk}, changes={"registry": True},
                      actor=actor, description=f"patient attributes after {why}")


def create_job(*, level: str, keys: dict, changes: dict, actor: str, description: str) -> Job:
    from pacs.services.jobs import enqueue

    job = Job.objects.create(kind=Job.Kind.MODIFY, level=level, keys=keys, changes=changes,
                             description=description[:255], created_by=actor[:150])
    transaction.on_commit(lambda: enqueue(job.pk))
    return job


def instances_of(job: Job) -> QuerySet:
    if job.level == "PATIENT":
        return Instance.objects.filter(series__study__patient_id=job.keys["patient"])
    if job.level == "STUDY":
        return Instance.objects.filter(
            series__study__study_instance_uid=job.keys["StudyInstanceUID"])
    return Instance.objects.filter(series__series_instance_uid=job.keys["SeriesInstanceUID"])


def run(job: Job, reporter) -> None:
    """Rewrite the headers a MODIFY job names; ``reporter``: the job's progress writer."""
    storage = get_storage()
    ids = list(instances_of(job).order_by("pk").values_list("pk", "sop_instance_uid"))
    progress = scu.Progress(remaining=len(ids))
    changes = _values(job)
    for pk, sop_uid in ids:
        if not reporter.update(progress):
            break
        try:
            rewrite(pk, lambda ds: set_attributes(ds, changes), storage)
        except Exception as exc:  # one unreadable file does not stop the others
            log.warning("rewriting the header of instance %s failed: %s", pk,
                        type(exc).__name__)
            progress.record(sop_uid, 0xC000)
        else:
            progress.record(sop_uid, 0x0000)
    reporter.update(progress, force=True)


def _values(job: Job) -> dict[str, str | None]:
    if not job.changes.get("registry"):
        return dict(job.changes)
    patient = Patient.objects.get(pk=job.keys["patient"])
    values: dict[str, str | None] = {
        "PatientName": patient.patient_name, "PatientBirthDate": patient.patient_birth_date,
        "PatientSex": patient.patient_sex}
    if patient.issuer_of_patient_id != identity.GENERATED_ISSUER:
        # a made-up identity (images without a PatientID) stays out of the headers
        values["PatientID"] = patient.patient_id
        values["IssuerOfPatientID"] = patient.issuer_of_patient_id or None
    return values


def set_attributes(ds: Dataset, values: dict[str, str | None]) -> None:
    """Set top-level attributes by keyword (None: remove it; "": empty). Text that the data
    set's character set cannot hold turns the whole data set into UTF-8 (ISO_IR 192)."""
    text = [v for k, v in values.items() if v and dictionary_VR(tag_for_keyword(k)) in _TEXT_VRS]
    if any(not _fits(ds, value) for value in text):
        ds.decode()  # every text value to str with the old character set
        ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in values.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        elif dictionary_VR(tag_for_keyword(keyword)) == "IS":
            setattr(ds, keyword, int(value) if value else "")
        else:
            setattr(ds, keyword, value)


_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})


def _fits(ds: Dataset, value: str) -> bool:
    if value.isascii():
        return True
    charsets = ds.get("SpecificCharacterSet") or ""
    terms = list(charsets) if not isinstance(charsets, str) else [charsets]
    if len(terms) != 1:  # ISO 2022 code extensions: not worth re-deriving, go to UTF-8
        return False
    codec = python_encoding.get(terms[0].strip())
    try:
        return codec is not None and bool(value.encode(codec))
    except (UnicodeEncodeError, LookupError):
        return False


def rewrite(instance_id: int, change: Callable[[Dataset], None],
            storage: Storage | None = None) -> None:
    """Read the instance's stored file, apply ``change`` to its data set, and store the result
    under a new key with its index row (header JSON, size) in one transaction."""
    from pacs.services.ingest import instance_fields

    storage = storage or get_storage()
    inst = Instance.objects.select_related("series__study").get(pk=instance_id)
    with storage.open(inst.file_key) as file:
        ds = dcmread(BytesIO(file.read()))
    change(ds)
    out = DicomBytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    data = out.getvalue()
    header = read_header(data)  # what ingest would index of it: the same checks
    if header.require_uid("SOPInstanceUID") != inst.sop_instance_uid:
        raise ServiceError("a rewrite may not change the SOP Instance UID")
    pending = storage.write_soon(data).result()
    base = (f"{inst.series.study.study_instance_uid}/{inst.series.series_instance_uid}/"
            f"{inst.sop_instance_uid}.dcm")
    key = base if storage.unique_keys else base.replace(".dcm", f".{time.time_ns()}.dcm")
    committed = False
    try:
        key = storage.place(pending, key)
        with transaction.atomic():
            # the row moves only from the file that was read: a concurrent rewrite or
            # replacing re-send wins, and this one fails (its new file goes)
            swapped = Instance.objects.filter(pk=inst.pk, file_key=inst.file_key).update(
                    file_key=key, file_size=pending.size,
                    **instance_fields(header, inst.sop_class_uid))
            if not swapped:
                raise ServiceError("the instance changed while it was rewritten")
            storage.commit(pending, key)
            committed = True
            old = inst.file_key
            transaction.on_commit(lambda: storage.delete(old))
    except BaseException:
        if committed:  # published, but the transaction did not commit
            storage.uncommit(pending, key)
        storage.discard(pending)
        raise
