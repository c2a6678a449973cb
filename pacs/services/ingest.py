"""The one store path for every face (DIMSE C-STORE, import, later STOW-RS).

Order of work (see ARCHITECTURE.md, "the hot path"):
1. parse the header strictly from the received bytes (a malformed file is refused here);
2. write the bytes durably under a temporary name;
3. index in one short transaction and make the file visible by rename inside it;
   a failure at any step removes the temporary file, so nothing is half-indexed.
A re-sent SOP Instance UID follows settings.DUPLICATE_POLICY: "keep" (default, like Orthanc
and dcm4chee) leaves the stored instance untouched; "replace" swaps in the new file. Either way
a re-sent instance whose stored file is missing (lost with a power failure before its rename
reached the disk, or deleted by hand) takes its place.
"""

from __future__ import annotations

import enum
import logging
import mmap
import time
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

import orjson
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from pacs.dicomfile import ParsedHeader, integer, read_header, text
from pacs.errors import SopClassMismatch
from pacs.models import Instance, Patient, Series, Study
from pacs.services import forwarding
from pacs.storage import LocalStorage, PendingFile, get_storage
from portal import lean

log = logging.getLogger(__name__)

INDEX_ATTEMPTS = 5


class Outcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"


@dataclass(frozen=True)
class StoreResult:
    outcome: Outcome
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str


def store_instance(
    *,
    data: bytes | None = None,
    received_from: str,
    expected_sop_class_uid: str | None = None,
    expected_sop_instance_uid: str | None = None,
    storage: LocalStorage | None = None,
    written: PendingFile | None = None,
) -> StoreResult:
    """Store Part 10 ``data``, or the Part 10 file already ``written`` under a temporary name
    (storage.write_from: a data set too large to hold in memory, read here through a memory
    map). Raises a PacsError subclass for bad input; nothing is kept then."""
    storage = storage or get_storage()
    if written is not None:
        with open(written.temp_path, "rb") as file, \
                mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            done: Future[PendingFile] = Future()
            done.set_result(written)
            return _store(mapped, done, storage, received_from, expected_sop_class_uid,
                          expected_sop_instance_uid)
    assert data is not None, "data or written"
    writing = storage.write_soon(data)  # the bytes go to disk while the header is parsed
    return _store(data, writing, storage, received_from, expected_sop_class_uid,
                  expected_sop_instance_uid)


def _store(data, writing: Future[PendingFile], storage: LocalStorage, received_from: str,
           expected_sop_class_uid: str | None, expected_sop_instance_uid: str | None
           ) -> StoreResult:
    try:
        header = read_header(data)
        sop_uid = header.require_uid("SOPInstanceUID")
        sop_class = header.require_uid("SOPClassUID")
        study_uid = header.require_uid("StudyInstanceUID")
        series_uid = header.require_uid("SeriesInstanceUID")
        if expected_sop_instance_uid and expected_sop_instance_uid != sop_uid:
            raise SopClassMismatch("SOP Instance UID differs from the request's")
        if expected_sop_class_uid and expected_sop_class_uid != sop_class:
            raise SopClassMismatch("SOP Class UID differs from the request's")
        fields = _instance_fields(header, sop_class)
    except BaseException:
        _discard_when_written(storage, writing)
        raise
    pending = writing.result()  # StorageFull if the write failed
    key = f"{study_uid}/{series_uid}/{sop_uid}.dcm"
    try:
        outcome = _index_with_retry(header, sop_uid, series_uid, fields, storage, pending, key,
                                    received_from)
    except BaseException:
        storage.discard(pending)
        raise
    return StoreResult(outcome, sop_uid, sop_class, study_uid, series_uid)


def _discard_when_written(storage: LocalStorage, writing: Future[PendingFile]) -> None:
    try:
        pending = writing.result()
    except Exception:  # nothing was kept
        return
    storage.discard(pending)


def _index_with_retry(
    header: ParsedHeader, sop_uid: str, series_uid: str, fields: dict, storage: LocalStorage,
    pending: PendingFile, key: str, origin: str,
) -> Outcome:
    """Index and publish the file, in a group commit with the process's other stores
    (``lean.write_together``: concurrent associations do not queue in SQLite's busy handler).
    Concurrent processes storing the same study race on the unique constraints; the loser
    retries and then finds the winner's rows."""
    for attempt in range(1, INDEX_ATTEMPTS + 1):
        published: list[str] = []
        job = partial(_index_and_publish, header, sop_uid, series_uid, fields, storage, pending,
                      key, origin, published)
        try:
            outcome = lean.write_together(job)
        except BaseException as exc:
            if published:
                storage.uncommit(pending, published[0])
            if isinstance(exc, (IntegrityError, OperationalError)) and attempt < INDEX_ATTEMPTS:
                time.sleep(0.01 * attempt)
                continue
            raise
        if outcome is Outcome.DUPLICATE:
            storage.discard(pending)
        return outcome
    raise AssertionError("unreachable")


def _index_and_publish(
    header: ParsedHeader, sop_uid: str, series_uid: str, fields: dict, storage: LocalStorage,
    pending: PendingFile, key: str, origin: str, published: list[str],
) -> Outcome:
    outcome, final_key, old_key = _index(header, sop_uid, series_uid, fields, pending, key,
                                         origin, storage)
    if outcome is not Outcome.DUPLICATE:
        # The file becomes visible as the last step before COMMIT: a crash in between
        # leaves an orphan file (harmless), never a row without a file.
        storage.commit(pending, final_key)
        published.append(final_key)
    if old_key:
        transaction.on_commit(partial(storage.delete, old_key))
    return outcome


def _index(
    header: ParsedHeader, sop_uid: str, series_uid: str, fields: dict, pending: PendingFile,
    key: str, origin: str, storage: LocalStorage,
) -> tuple[Outcome, str, str | None]:
    """Write the index rows; return the outcome, the file key to publish, the key to delete.

    The per-instance statements are plain SQL on the driver's cursor (``lean.execute``):
    through the ORM each costs ~0.6 ms of Python, through Django's cursor wrapper ~0.03 ms
    more than on the driver's (bench/ingest.py). Patients, studies and series are created
    once per study/series through the ORM.
    """
    existing = lean.execute(_SQL["existing"], [sop_uid]).fetchone()
    missing = bool(existing) and not storage.exists(existing[1])
    if missing:
        log.warning("the stored file of an instance was missing: the re-sent copy replaces it")
    elif existing and settings.DUPLICATE_POLICY != "replace":
        return Outcome.DUPLICATE, existing[1], None
    series_id, study_id = _series_for(header, series_uid)
    if existing:
        # A new key for the new version: the old file stays valid until this commits.
        new_key = key.replace(".dcm", f".{time.time_ns()}.dcm")
        Instance.objects.filter(pk=existing[0]).update(
            series_id=series_id, file_key=new_key, file_size=pending.size,
            received_from=origin[:128], **fields,
        )
        forwarding.queue(origin, header, sop_uid)
        return Outcome.REPLACED, new_key, None if missing else existing[1]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    values = {**fields, "metadata": orjson.dumps(fields["metadata"]).decode(),
              "sop_instance_uid": sop_uid, "series_id": series_id, "file_key": key,
              "file_size": pending.size, "received_from": origin[:128], "received_at": now}
    lean.execute(_SQL["insert"], [values[name] for name in _INSERT_FIELDS])
    lean.execute(_SQL["count_series"], [series_id])
    lean.execute(_SQL["count_study"], [now, study_id])
    forwarding.queue(origin, header, sop_uid)
    return Outcome.STORED, key, None


_INSERT_FIELDS = [
    "sop_instance_uid", "sop_class_uid", "series_id", "instance_number", "transfer_syntax_uid",
    "rows", "columns", "number_of_frames", "has_pixel_data", "file_key", "file_size",
    "metadata", "received_from", "received_at",
]


def _build_sql() -> dict[str, str]:
    inst, series, study = Instance._meta, Series._meta, Study._meta
    qn = connection.ops.quote_name
    columns = ", ".join(qn(inst.get_field(name).column) for name in _INSERT_FIELDS)
    return {
        # FOR UPDATE: a concurrent store of the same instance (PostgreSQL; SQLite has one
        # writer) waits until this one commits, then decides on what it did, so two re-sends
        # never both replace the file and leave one of their files without a row.
        "existing": f"SELECT id, file_key FROM {qn(inst.db_table)} WHERE sop_instance_uid = %s"
                    + (" FOR UPDATE" if connection.features.has_select_for_update else ""),
        "insert": f"INSERT INTO {qn(inst.db_table)} ({columns}) "
                  f"VALUES ({', '.join(['%s'] * len(_INSERT_FIELDS))})",
        "series": f"SELECT id, study_id FROM {qn(series.db_table)} "
                  "WHERE series_instance_uid = %s",
        "count_series": f"UPDATE {qn(series.db_table)} "
                        "SET number_of_instances = number_of_instances + 1 WHERE id = %s",
        "count_study": f"UPDATE {qn(study.db_table)} SET number_of_instances = "
                       "number_of_instances + 1, updated_at = %s WHERE id = %s",
    }


_SQL = _build_sql()


def _instance_fields(header: ParsedHeader, sop_class_uid: str) -> dict:
    return {
        "sop_class_uid": sop_class_uid,
        "instance_number": header.integer("InstanceNumber"),
        "transfer_syntax_uid": header.transfer_syntax_uid,
        "rows": header.integer("Rows"),
        "columns": header.integer("Columns"),
        "number_of_frames": header.integer("NumberOfFrames"),
        "has_pixel_data": header.has_pixel_data,
        "metadata": header.metadata,
    }


def _patient_for(ds) -> Patient:
    patient, created = Patient.objects.get_or_create(
        patient_id=text(ds, "PatientID", 64),
        issuer_of_patient_id=text(ds, "IssuerOfPatientID", 64),
        defaults=_patient_fields(ds),
    )
    if not created:
        changed = {k: v for k, v in _patient_fields(ds).items() if v and getattr(patient, k) != v}
        if changed:
            Patient.objects.filter(pk=patient.pk).update(**changed)
    return patient


def _patient_fields(ds) -> dict:
    name = text(ds, "PatientName", 324)
    return {
        "patient_name": name,
        "patient_name_norm": name.upper(),
        "patient_birth_date": text(ds, "PatientBirthDate", 8),
        "patient_sex": text(ds, "PatientSex", 16),
    }


def _study_for(ds) -> Study:
    study_uid = str(ds.StudyInstanceUID).strip()
    study = Study.objects.filter(study_instance_uid=study_uid).first()
    if study:
        return study
    return Study.objects.create(
        study_instance_uid=study_uid,
        patient=_patient_for(ds),
        study_date=text(ds, "StudyDate", 8),
        study_time=text(ds, "StudyTime", 16),
        accession_number=text(ds, "AccessionNumber", 16),
        study_id=text(ds, "StudyID", 16),
        study_description=text(ds, "StudyDescription", 64),
        referring_physician_name=text(ds, "ReferringPhysicianName", 324),
    )


def _request_attributes(ds) -> dict[str, str]:
    items = ds.get("RequestAttributesSequence") or []
    if not items:
        return {}
    return {"requested_procedure_id": text(items[0], "RequestedProcedureID", 16),
            "scheduled_procedure_step_id": text(items[0], "ScheduledProcedureStepID", 16)}


def _series_for(header: ParsedHeader, series_uid: str) -> tuple[int, int]:
    """(series id, study id), creating patient/study/series on first sight."""
    row = lean.execute(_SQL["series"], [series_uid]).fetchone()
    if row:
        return row[0], row[1]
    ds = header.dataset
    study = _study_for(ds)
    modality = text(ds, "Modality", 16)
    series = Series.objects.create(
        series_instance_uid=series_uid,
        study=study,
        modality=modality,
        series_number=integer(ds, "SeriesNumber"),
        series_description=text(ds, "SeriesDescription", 64),
        body_part_examined=text(ds, "BodyPartExamined", 16),
        series_date=text(ds, "SeriesDate", 8),
        series_time=text(ds, "SeriesTime", 16),
        station_name=text(ds, "StationName", 16),
        **_request_attributes(ds),
    )
    modalities = study.modalities
    if modality and modality not in modalities:
        modalities = sorted([*modalities, modality])
    Study.objects.filter(pk=study.pk).update(
        number_of_series=F("number_of_series") + 1, modalities_in_study="\\".join(modalities)
    )
    return series.pk, study.pk
