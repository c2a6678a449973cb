"""The one store path for every face (DIMSE C-STORE, import, later STOW-RS).

Order of work (docs/architecture.md, "The store path"):
1. parse the header strictly from the received bytes (a malformed file is refused here);
2. write the bytes durably under a temporary name;
3. index in one short transaction and make the file visible by rename inside it;
   a failure at any step removes the temporary file, so nothing is half-indexed. On
   PostgreSQL a new instance of a series seen before is one statement instead
   (``_store_into_known_series``), and anything else goes through that transaction.
A re-sent SOP Instance UID follows settings.DUPLICATE_POLICY: "keep" (default, like Orthanc
and dcm4chee) leaves the stored instance untouched; "replace" swaps in the new file. Either way
a re-sent instance whose stored file is missing (lost with a power failure before its rename
reached the disk, or deleted by hand) takes its place.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import mmap
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

import orjson
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from core import group_commit, statements
from core.errors import IdentityConflict, SopClassMismatch
from pacs import identity
from pacs.dicomfile import ParsedHeader, as_date, date_text, integer, read_header, text
from pacs.models import Discrepancy, Instance, Patient, Series, Study
from pacs.services import deletion, forwarding, patients, reconciliation
from pacs.storage import PendingFile, Storage, get_storage

log = logging.getLogger(__name__)

INDEX_ATTEMPTS = 5
# how closely a study's updated_at follows its last received instance (see _build_sql)
RECEIVED_RESOLUTION = dt.timedelta(seconds=1)


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
    warning: str = ""  # stored (or kept) with a warning, e.g. a conflicting duplicate


def store_instance(
    *,
    data: bytes | None = None,
    received_from: str,
    expected_sop_class_uid: str | None = None,
    expected_sop_instance_uid: str | None = None,
    storage: Storage | None = None,
    written: PendingFile | None = None,
) -> StoreResult:
    """Store Part 10 ``data``, or the Part 10 file already ``written`` under a temporary name
    (storage.write_from: a data set too large to hold in memory, read here through a memory
    map). Raises a ServiceError subclass for bad input; nothing is kept then (not ``written``
    either)."""
    storage = storage or get_storage()
    if written is not None:
        try:
            with open(written.temp_path, "rb") as file, \
                    mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                done: Future[PendingFile] = Future()
                done.set_result(written)
                return _store(mapped, done, storage, received_from, expected_sop_class_uid,
                              expected_sop_instance_uid)
        except BaseException:  # an empty or unreadable file too: nothing of it is kept
            storage.discard(written)
            raise
    assert data is not None, "data or written"
    writing = storage.write_soon(data)  # the bytes go to disk while the header is parsed
    return _store(data, writing, storage, received_from, expected_sop_class_uid,
                  expected_sop_instance_uid)


def _store(data, writing: Future[PendingFile], storage: Storage, received_from: str,
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
        fields = instance_fields(header, sop_class)
    except BaseException:
        _discard_when_written(storage, writing)
        raise
    pending = writing.result()  # StorageFull if the write failed
    try:
        # an object store uploads here, outside the index transaction, under a key of its own
        key = storage.place(pending, f"{study_uid}/{series_uid}/{sop_uid}.dcm")
    except BaseException:
        storage.discard(pending)
        raise
    place = _Place(header, sop_uid, study_uid, series_uid, received_from,
                   identity.image_key(header.text("PatientID"),
                                      header.text("IssuerOfPatientID"), study_uid))
    try:
        if _store_into_known_series(place, fields, storage, pending, key):
            outcome = Outcome.STORED
        else:
            outcome = _index_with_retry(place, fields, storage, pending, key)
    except IdentityConflict as exc:
        storage.discard(pending)
        # kept apart from the refused store's transaction, which rolled back
        reconciliation.record(kind=exc.kind, study_uid=exc.study_uid, sop_uid=exc.sop_uid,
                              patient=exc.patient, detail=str(exc), origin=received_from)
        raise
    except BaseException:
        storage.discard(pending)
        raise
    return StoreResult(outcome, sop_uid, sop_class, study_uid, series_uid, place.warning)


@dataclass
class _Place:
    """Where an instance goes, and who its header says it belongs to."""

    header: ParsedHeader
    sop_uid: str
    study_uid: str
    series_uid: str
    origin: str
    patient: identity.PatientKey
    warning: str = ""


def _discard_when_written(storage: Storage, writing: Future[PendingFile]) -> None:
    try:
        pending = writing.result()
    except Exception:  # nothing was kept
        return
    storage.discard(pending)


def _index_with_retry(place: _Place, fields: dict, storage: Storage, pending: PendingFile,
                      key: str) -> Outcome:
    """Index and publish the file, in a group commit with the process's other stores
    (``group_commit.write_together``: concurrent associations do not queue in SQLite's busy
    handler).
    Concurrent processes storing the same study race on the unique constraints; the loser
    retries and then finds the winner's rows."""
    for attempt in range(1, INDEX_ATTEMPTS + 1):
        published: list[str] = []
        place.warning = ""
        job = partial(_index_and_publish, place, fields, storage, pending, key, published)
        try:
            outcome = group_commit.write_together(job)
        except BaseException as exc:
            if published:
                if _outcome_unknown(exc):
                    storage.keep(pending)  # the row may be in: the file stays (orphan at worst)
                    raise
                storage.uncommit(pending, published[0])
            if isinstance(exc, (IntegrityError, OperationalError)) and attempt < INDEX_ATTEMPTS:
                time.sleep(0.01 * attempt)
                continue
            raise
        if outcome is Outcome.DUPLICATE:
            storage.discard(pending)
        return outcome
    raise AssertionError("unreachable")


def _outcome_unknown(exc: BaseException) -> bool:
    """Whether ``exc`` came with the database connection lost (PostgreSQL), so that what was
    sent may or may not have been committed: the server may have committed a COMMIT whose
    answer never arrived. Then the published file is kept: a file without a row is an orphan
    that check_storage indexes, a row without its file would be a lost image. SQLite commits
    in the process, so an error there always means not committed."""
    if not isinstance(exc, OperationalError):
        return False
    return connection.connection is None or not connection.is_usable()


def _index_and_publish(place: _Place, fields: dict, storage: Storage, pending: PendingFile,
                       key: str, published: list[str]) -> Outcome:
    outcome, final_key, old_key = _index(place, fields, pending, key, storage)
    if outcome is not Outcome.DUPLICATE:
        # The file becomes visible as the last step before COMMIT: a crash in between
        # leaves an orphan file (harmless), never a row without a file.
        storage.commit(pending, final_key)
        published.append(final_key)
    if old_key:
        transaction.on_commit(partial(storage.delete, old_key))
    return outcome


def _index(place: _Place, fields: dict, pending: PendingFile, key: str,
           storage: Storage) -> tuple[Outcome, str, str | None]:
    """Write the index rows; return the outcome, the file key to publish, the key to delete.

    The per-instance statements are plain SQL on the driver's cursor (``statements.execute``):
    through the ORM each costs ~0.6 ms of Python, through Django's cursor wrapper ~0.03 ms
    more than on the driver's (bench/ingest.py). Studies and series are created once each
    through the ORM, a patient on first sight through pacs.services.patients.

    A re-sent SOP Instance UID (PORTAL_DUPLICATE_POLICY) stays where it is stored unless the
    policy is replace; one re-sent with another patient, study or series is a conflict:
    never moved silently (PORTAL_DUPLICATE_CONFLICT, PORTAL_DUPLICATE_REPLACE_ACROSS).
    """
    # both lookups at once (one round trip on PostgreSQL); the series is what a new
    # instance, by far the most frequent case, needs next
    batch = [(_SQL["existing"], [place.sop_uid]), (_SQL["series"], [place.series_uid])]
    # the store's own transaction (not a caller's): its commit as PORTAL_STORAGE_FSYNC says
    commit_as = (_synchronous_commit() if connection.vendor == "postgresql"
                 and len(connection.atomic_blocks) == 1 else None)
    if commit_as:
        batch.append((_SQL["synchronous_commit"], [commit_as]))
    existing, series = (cursor.fetchone() for cursor in statements.execute_all(batch)[:2])
    if existing:
        return _resent(place, existing, series, fields, pending, key, storage)
    series_id, study_id = _series_for(place, series)
    if series and connection.vendor == "postgresql" and _agrees(place, series):
        _known_series.remember(place.series_uid, series)  # the one-statement path's hint
    now = timezone.now()
    values = _instance_values(place, fields, pending, key, series_id, now)
    statements.execute_all([(_SQL["insert"], [values[name] for name in _INSERT_FIELDS]),
                            (_SQL["count_series"], [series_id]),
                            (_SQL["count_study"], [*_received(now), study_id])])
    forwarding.queue(place.origin, place.header, place.sop_uid)
    return Outcome.STORED, key, None


def _synchronous_commit() -> str | None:
    """What a store's transaction sets PostgreSQL's ``synchronous_commit`` to; None: the
    database's own setting (durable unless a site turned it off).

    PORTAL_STORAGE_FSYNC on (the default) syncs a received file's bytes before the answer but
    not its name in the series folder, and SQLite's commits are not synced either
    (synchronous=NORMAL): a power failure may lose the last stores, and whatever of them is on
    disk is an orphan file that check_storage indexes again. A store on PostgreSQL makes the
    same promise, so it does not wait for its own commit's flush (which is what made one
    association into scale mode slower than into embedded SQLite, bench/scale.py): the
    setting is local to the store's transaction, and what else the portal commits (an HL7
    order, a storage commitment request, a user) commits durably, flushing every store
    committed before it. With ``full`` every commit is synced, on both databases."""
    return None if settings.STORAGE_SYNC == "full" else "off"


def _received(now: dt.datetime) -> tuple:
    """The parameters of the study's ``received`` assignment (``_build_sql``)."""
    adapt = connection.ops.adapt_datetimefield_value
    return adapt(now - RECEIVED_RESOLUTION), adapt(now)


def _instance_values(place: _Place, fields: dict, pending: PendingFile, key: str,
                     series_id: int, now: dt.datetime) -> dict:
    """The instance row's columns by field name, in database form."""
    return {**fields, "metadata": orjson.dumps(fields["metadata"]).decode(),
            "sop_instance_uid": place.sop_uid, "series_id": series_id, "file_key": key,
            "file_size": pending.size, "received_from": place.origin[:128],
            "received_at": connection.ops.adapt_datetimefield_value(now)}


class _KnownSeries:
    """The series this process last stored instances into, by Series Instance UID: the
    ``_SQL["series"]`` row each was found with. A hint only: the one-statement store checks
    in the database that the row is still what it was."""

    SIZE = 256

    def __init__(self) -> None:
        self._rows: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def get(self, series_uid: str) -> tuple | None:
        return self._rows.get(series_uid)

    def remember(self, series_uid: str, row: tuple) -> None:
        with self._lock:
            self._rows.pop(series_uid, None)
            if len(self._rows) >= self.SIZE:
                del self._rows[next(iter(self._rows))]  # the one remembered first
            self._rows[series_uid] = row

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


_known_series = _KnownSeries()


def _store_into_known_series(place: _Place, fields: dict, storage: Storage,
                             pending: PendingFile, key: str) -> bool:
    """Store a new instance of a series stored before, on PostgreSQL, in one statement and so
    one round trip to the server; False (nothing done) when this is not that case, and the
    general path (``_index_with_retry``) decides.

    Why: a C-STORE through the general path waits for the server three times (the lookups, the
    insert and counters, COMMIT), each wait a turn of the two processes on shared cores; the
    round trips, not the server's work, kept scale mode under embedded SQLite (bench/scale.py).
    Here the series row this process last found for the UID (``_known_series``) is checked in
    Python as ``_series_for`` would check it (same study and patient, no attribute that
    differs), and the statement inserts the instance only if the database still holds exactly
    that row and no instance with its UID (ON CONFLICT DO NOTHING), and counts it in its series
    and study: autocommit, one statement, one transaction. The file is published first, never
    over a file that is there (``publish_new``): a statement that inserts nothing hands the file
    back to its temporary name for the general path. A crash between the two leaves an orphan
    file, as the general path's rename before COMMIT can.

    Not on SQLite: its writers commit in groups (``group_commit``), which one transaction per
    store would undo; nor with a forwarding rule that takes the instance (its queue rows go in
    the same transaction), nor inside an open transaction."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return False
    row = _known_series.get(place.series_uid)
    if (row is None or not _agrees(place, row)
            or forwarding.destinations(place.origin, place.header)):
        return False
    if not storage.publish_new(pending, key):  # stored before, or an orphan: the general path
        return False
    now = timezone.now()
    values = _instance_values(place, fields, pending, key, row[0], now)
    try:
        inserted = statements.execute(
            _SQL["insert_known"],
            [*(values[name] for name in _INSERT_FIELDS if name != "series_id"), row[0],
             place.series_uid, *row[1:], *_received(now), _synchronous_commit()],
        ).fetchone()[0] == 1
    except (IntegrityError, OperationalError) as exc:
        if _outcome_unknown(exc):
            storage.keep(pending)  # the row may be in: its file stays (an orphan at worst)
            raise
        # a race the general path retries on: the series deleted meanwhile, a deadlock...
        log.debug("one-statement store fell back: %s", type(exc).__name__)
        inserted = False
    except BaseException:
        storage.uncommit(pending, key)
        raise
    if not inserted:
        storage.uncommit(pending, key)
    return inserted


def _resent(place: _Place, existing: tuple, series: tuple | None, fields: dict,
            pending: PendingFile, key: str, storage: Storage) -> tuple[Outcome, str, str | None]:
    inst_id, old_key, old_series_id, old_series_uid, old_study_uid, old_pid, old_issuer = existing
    stored_as = identity.PatientKey(old_pid, old_issuer)
    same = (old_series_uid == place.series_uid and old_study_uid == place.study_uid
            and stored_as == place.patient)
    missing = not storage.exists(old_key)
    replace = settings.DUPLICATE_POLICY == "replace"
    if not same:
        # the gist first: a DIMSE Error Comment keeps 64 characters
        detail = (f"sent again as patient {place.patient.label()} (stored as patient "
                  f"{stored_as.label()}): SOP Instance {place.sop_uid}, stored in study "
                  f"{old_study_uid}, series {old_series_uid}; sent with study "
                  f"{place.study_uid}, series {place.series_uid}")
        if not (replace and settings.DUPLICATE_REPLACE_ACROSS):
            if replace or missing or settings.DUPLICATE_CONFLICT == "refuse":
                raise IdentityConflict(detail, kind=Discrepancy.Kind.DUPLICATE,
                                       study_uid=old_study_uid, sop_uid=place.sop_uid,
                                       patient=stored_as.label())
            reconciliation.record(kind=Discrepancy.Kind.DUPLICATE, study_uid=old_study_uid,
                                  sop_uid=place.sop_uid, patient=stored_as.label(),
                                  detail=detail, origin=place.origin)
            place.warning = "re-sent with another patient, study or series: the stored " \
                            "instance is kept"
            return Outcome.DUPLICATE, old_key, None
    elif missing:
        log.warning("the stored file of an instance was missing: the re-sent copy replaces it")
    elif not replace:
        return Outcome.DUPLICATE, old_key, None
    series_id, study_id = _series_for(place, series)
    # A new key for the new version: the old file stays valid until this commits.
    new_key = key if storage.unique_keys else key.replace(".dcm", f".{time.time_ns()}.dcm")
    Instance.objects.filter(pk=inst_id).update(
        series_id=series_id, file_key=new_key, file_size=pending.size,
        received_from=place.origin[:128], **fields,
    )
    if series_id != old_series_id:  # moved (an explicit setting): counts follow the rows
        for study in Study.objects.filter(series__pk__in=(old_series_id, series_id)).distinct():
            deletion.tidy(study)
    forwarding.queue(place.origin, place.header, place.sop_uid)
    return Outcome.REPLACED, new_key, None if missing else old_key


_INSERT_FIELDS = [
    "sop_instance_uid", "sop_class_uid", "series_id", "instance_number", "transfer_syntax_uid",
    "rows", "columns", "number_of_frames", "has_pixel_data", "file_key", "file_size",
    "metadata", "received_from", "received_at",
]

# What an instance's series lookup reads of its study and patient, to check that it belongs
# there: (attribute, column of the joined row). The first received values are the study's.
_STUDY_ATTRIBUTES = (("StudyDate", "study_date"), ("StudyTime", "study_time"),
                     ("AccessionNumber", "accession_number"), ("StudyID", "study_id"),
                     ("StudyDescription", "study_description"),
                     ("ReferringPhysicianName", "referring_physician_name"))
_DATES = frozenset({"StudyDate", "PatientBirthDate"})
_PATIENT_ATTRIBUTES = (("PatientName", "patient_name"), ("PatientBirthDate", "patient_birth_date"),
                       ("PatientSex", "patient_sex"))


def _build_sql() -> dict[str, str]:
    inst, series, study, patient = (Instance._meta, Series._meta, Study._meta, Patient._meta)
    qn = connection.ops.quote_name
    columns = ", ".join(qn(inst.get_field(name).column) for name in _INSERT_FIELDS)
    i, se, st, p = (qn(m.db_table) for m in (inst, series, study, patient))
    joins = (f"JOIN {st} ON {st}.id = {se}.study_id JOIN {p} ON {p}.id = {st}.patient_id")
    # A study's updated_at (indexed: the study list's "received" order) moves when the last
    # change is a second old or more: PostgreSQL then updates the row in place (a HOT update,
    # no entry added to each of the study's ten indexes) for all but about one of a second's
    # instances. Parameters: _received(now).
    received = "updated_at = CASE WHEN updated_at >= %s THEN updated_at ELSE %s END"
    # the series lookup's row: what an instance is checked against (_series_for)
    looked_up = [f"{se}.id", f"{se}.study_id", f"{st}.study_instance_uid", f"{p}.patient_id",
                 f"{p}.issuer_of_patient_id",
                 *(f"{st}.{qn(column)}" for _, column in _STUDY_ATTRIBUTES),
                 *(f"{p}.{qn(column)}" for _, column in _PATIENT_ATTRIBUTES)]
    # The one-statement store (_store_into_known_series; PostgreSQL): the instance's values
    # typed as its columns, its series' id from the row that must still read as looked up.
    typed = ", ".join(
        f"{se}.id" if name == "series_id"
        else f"CAST(%s AS {inst.get_field(name).db_type(connection)})"
        for name in _INSERT_FIELDS)
    still = " AND ".join([f"{se}.id = %s", f"{se}.series_instance_uid = %s"]
                         + [f"{expr} IS NOT DISTINCT FROM %s" for expr in looked_up[1:]])
    insert_known = (
        f"WITH added AS (INSERT INTO {i} ({columns}) SELECT {typed} FROM {se} {joins} "
        f"WHERE {still} ON CONFLICT DO NOTHING RETURNING series_id), "
        f"counted AS (UPDATE {se} SET number_of_instances = number_of_instances + 1 "
        f"WHERE id IN (SELECT series_id FROM added) RETURNING study_id), "
        f"study AS (UPDATE {st} SET number_of_instances = number_of_instances + 1, {received} "
        f"WHERE id IN (SELECT study_id FROM counted)) "
        # whether the instance row went in decides: committed, it must keep its file; and
        # the statement's own transaction commits as _synchronous_commit() says (the setting
        # in force at COMMIT decides, and set_config's is this transaction's only)
        f"SELECT (SELECT count(*) FROM added), set_config('synchronous_commit', "
        f"COALESCE(%s, current_setting('synchronous_commit')), true)")
    return {
        # FOR UPDATE: a concurrent store of the same instance (PostgreSQL; SQLite has one
        # writer) waits until this one commits, then decides on what it did, so two re-sends
        # never both replace the file and leave one of their files without a row.
        "existing": f"SELECT {i}.id, {i}.file_key, {se}.id, {se}.series_instance_uid, "
                    f"{st}.study_instance_uid, {p}.patient_id, {p}.issuer_of_patient_id "
                    f"FROM {i} JOIN {se} ON {se}.id = {i}.series_id {joins} "
                    f"WHERE {i}.sop_instance_uid = %s"
                    + (f" FOR UPDATE OF {i}" if connection.features.has_select_for_update_of
                       else ""),
        "insert": f"INSERT INTO {i} ({columns}) "
                  f"VALUES ({', '.join(['%s'] * len(_INSERT_FIELDS))})",
        "series": f"SELECT {', '.join(looked_up)} "
                  f"FROM {se} {joins} WHERE {se}.series_instance_uid = %s",
        "insert_known": insert_known,
        "synchronous_commit": "SELECT set_config('synchronous_commit', %s, true)",
        "count_series": f"UPDATE {se} "
                        "SET number_of_instances = number_of_instances + 1 WHERE id = %s",
        "count_study": f"UPDATE {st} SET number_of_instances = "
                       f"number_of_instances + 1, {received} WHERE id = %s",
    }


_SQL = _build_sql()


def instance_fields(header: ParsedHeader, sop_class_uid: str) -> dict:
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


def _patient_for(place: _Place) -> tuple[Patient, bool]:
    """The registry's patient of an image (found or created); whether it was created. Images
    never change the registry: its demographics come from the first image only when the
    images bring the patient, and from HL7 ADT and the scheduler otherwise."""
    return patients.find_or_create(place.patient, _patient_fields(place.header.dataset))


def _patient_fields(ds) -> dict:
    name = text(ds, "PatientName", 324)
    return {
        **identity.name_columns(name),
        "patient_birth_date": date_text(ds, "PatientBirthDate"),
        "patient_sex": text(ds, "PatientSex", 16),
    }


def _study_for(place: _Place) -> Study:
    """The stored study of an image, or a new one (of the image's patient). A stored study
    of another patient takes no image of this one (IdentityConflict)."""
    study = Study.objects.filter(study_instance_uid=place.study_uid).select_related(
        "patient").first()
    if study:
        holder = identity.PatientKey.of(study.patient)
        if holder != place.patient:
            raise _other_patient(place, holder)
        _compare(place, study.pk, Discrepancy.Kind.STUDY, _STUDY_ATTRIBUTES,
                 {column: getattr(study, column) for _, column in _STUDY_ATTRIBUTES},
                 "the study's first images")
        _compare(place, study.pk, Discrepancy.Kind.DEMOGRAPHICS, _PATIENT_ATTRIBUTES,
                 {column: getattr(study.patient, column) for _, column in _PATIENT_ATTRIBUTES},
                 "the registry")
        return study
    ds = place.header.dataset
    patient, created = _patient_for(place)
    study = Study.objects.create(
        study_instance_uid=place.study_uid,
        patient=patient,
        study_date=date_text(ds, "StudyDate"),
        study_time=text(ds, "StudyTime", 16),
        accession_number=text(ds, "AccessionNumber", 64),
        study_id=text(ds, "StudyID", 64),
        study_description=text(ds, "StudyDescription", 256),
        referring_physician_name=text(ds, "ReferringPhysicianName", 324),
    )
    if not created:
        registry = {column: getattr(patient, column) for _, column in _PATIENT_ATTRIBUTES}
        _compare(place, study.pk, Discrepancy.Kind.DEMOGRAPHICS, _PATIENT_ATTRIBUTES, registry,
                 "the registry")
    return study


def _other_patient(place: _Place, holder: identity.PatientKey) -> IdentityConflict:
    return IdentityConflict(
        f"names patient {place.patient.label()}, but study {place.study_uid} is stored for "
        f"patient {holder.label()}: SOP Instance {place.sop_uid} not stored",
        kind=Discrepancy.Kind.PATIENT, study_uid=place.study_uid, sop_uid=place.sop_uid,
        patient=holder.label())


def _request_attributes(ds) -> dict[str, str]:
    items = ds.get("RequestAttributesSequence") or []
    if not items:
        return {}
    return {"requested_procedure_id": text(items[0], "RequestedProcedureID", 64),
            "scheduled_procedure_step_id": text(items[0], "ScheduledProcedureStepID", 64)}


def _stored_values(row: tuple) -> tuple[dict[str, str], dict[str, str]]:
    """A ``_SQL["series"]`` row's study attributes and demographics, by column."""
    n = len(_STUDY_ATTRIBUTES)
    return (dict(zip((c for _, c in _STUDY_ATTRIBUTES), row[5:5 + n], strict=True)),
            dict(zip((c for _, c in _PATIENT_ATTRIBUTES), row[5 + n:], strict=True)))


def _agrees(place: _Place, row: tuple) -> bool:
    """Whether ``_series_for(place, row)`` would take the instance as it is: same study and
    patient, and nothing to record for reconciliation."""
    _, _, study_uid, pid, issuer = row[:5]
    study, demographics = _stored_values(row)
    return (study_uid == place.study_uid and identity.PatientKey(pid, issuer) == place.patient
            and not _differences(place, _STUDY_ATTRIBUTES, study, "")
            and not _differences(place, _PATIENT_ATTRIBUTES, demographics, ""))


def _series_for(place: _Place, row: tuple | None) -> tuple[int, int]:
    """(series id, study id), creating patient/study/series on first sight. ``row``: the
    ``_SQL["series"]`` lookup's answer, None for a series not stored yet. An image for a
    stored series is checked against it: another study or patient is refused; study
    attributes or demographics that differ from what is stored are kept for reconciliation
    (the stored ones stay: the first received study attributes, the registry's names)."""
    if row:
        series_id, study_id, study_uid, pid, issuer = row[:5]
        holder = identity.PatientKey(pid, issuer)
        if study_uid != place.study_uid:
            raise IdentityConflict(
                f"puts series {place.series_uid} in study {place.study_uid}, but it is stored "
                f"in study {study_uid}: SOP Instance {place.sop_uid} not stored",
                kind=Discrepancy.Kind.STUDY, study_uid=study_uid, sop_uid=place.sop_uid,
                patient=holder.label())
        if holder != place.patient:
            raise _other_patient(place, holder)
        study, demographics = _stored_values(row)
        _compare(place, study_id, Discrepancy.Kind.STUDY, _STUDY_ATTRIBUTES, study,
                 "the study's first images")
        _compare(place, study_id, Discrepancy.Kind.DEMOGRAPHICS, _PATIENT_ATTRIBUTES,
                 demographics, "the registry")
        return series_id, study_id
    ds = place.header.dataset
    study = _study_for(place)
    modality = text(ds, "Modality", 64)
    series = Series.objects.create(
        series_instance_uid=place.series_uid,
        study=study,
        modality=modality,
        series_number=integer(ds, "SeriesNumber"),
        series_description=text(ds, "SeriesDescription", 256),
        body_part_examined=text(ds, "BodyPartExamined", 64),
        series_date=date_text(ds, "SeriesDate"),
        series_time=text(ds, "SeriesTime", 16),
        station_name=text(ds, "StationName", 64),
        **_request_attributes(ds),
    )
    modalities = study.modalities
    if modality and modality not in modalities:
        modalities = sorted([*modalities, modality])
    Study.objects.filter(pk=study.pk).update(
        number_of_series=F("number_of_series") + 1, modalities_in_study="\\".join(modalities)
    )
    return series.pk, study.pk


def _compare(place: _Place, study_id: int, kind: str, attributes, stored: dict[str, str],
             whose: str) -> None:
    """Record (for reconciliation, once) the attributes whose value in the image differs from
    the stored one; nothing stored changes."""
    differ = _differences(place, attributes, stored, whose)
    if differ:
        reconciliation.record(kind=kind, study_uid=place.study_uid, study_id=study_id,
                              patient=place.patient.label(), detail="; ".join(differ),
                              origin=place.origin)


def _differences(place: _Place, attributes, stored: dict[str, str], whose: str) -> list[str]:
    differ = []
    for keyword, column in attributes:
        value = place.header.value(keyword)
        mine = identity.person_name(value) if isinstance(value, dict) else place.header.text(
            keyword).strip()
        if keyword in _DATES:
            mine = as_date(mine)
        theirs = stored[column] or ""
        if mine and theirs and not identity.same_value(mine, theirs):
            differ.append(f"{keyword}: {whose} has {theirs!r}, the images {mine!r}")
    return differ
