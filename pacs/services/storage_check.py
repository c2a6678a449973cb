"""Checking the stored files against the index, and repairing what a crash left.

The ingest path publishes a file (an atomic rename) as the last step before its transaction
commits, and a deletion removes files once its transaction has committed: so a process killed
at the wrong moment can leave a file no instance points at (an *orphan*), never an instance
whose file was not written. An orphan written before its study, series or instance was deleted
(the audit trail says when) is a *leftover* of that deletion: only ever deleted, never
reindexed. A file can still go missing or change size outside the portal (a
disk restored from backup, someone's ``rm``). ``check()`` finds them all; the repairs are
separate, explicit calls (``manage.py check_storage`` offers them as options).

The check runs beside a live SCP: files younger than ``min_age`` seconds are not judged (their
rows may be about to commit), and every finding is checked again against the database and the
file system before it is reported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db.models import Count, F, Q, QuerySet

from core import audit
from core.errors import NotFound
from pacs.models import Instance, Series, Study
from pacs.services import deletion
from pacs.services.importer import ImportSummary, import_files
from pacs.storage import Storage, get_storage

MIN_AGE = 60.0  # seconds; a store or a deletion in progress takes milliseconds
_CHUNK = 500


@dataclass(frozen=True)
class Missing:
    sop_instance_uid: str
    file_key: str


@dataclass(frozen=True)
class WrongSize:
    sop_instance_uid: str
    file_key: str
    indexed: int
    on_disk: int


@dataclass
class StorageReport:
    files: int = 0  # stored files looked at (``*.dcm`` under the storage root)
    instances: int = 0  # instance rows looked at
    too_new: int = 0  # files younger than min_age, not judged
    orphans: list[str] = field(default_factory=list)  # keys of files no instance points at
    # orphans written before a deletion of their study, series or instance (audit trail)
    leftovers: list[str] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    wrong_size: list[WrongSize] = field(default_factory=list)
    # paths of the data dir, database, key and stored files or folders others may read
    open_modes: list[str] = field(default_factory=list)
    # studies and series whose numbers of series and instances differ from their rows
    wrong_counts: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.leftovers or self.missing or self.wrong_size
                    or self.open_modes or self.wrong_counts)


def check(*, min_age: float = MIN_AGE, progress: Callable[[], None] | None = None
          ) -> StorageReport:
    """Compare every stored file with the instance rows; ``progress()`` once per file."""
    storage = get_storage()
    report = StorageReport()
    cutoff = time.time() - min_age
    sizes: dict[str, int] = {}
    mtimes: dict[str, float] = {}
    young: set[str] = set()
    # The files first, then the rows: a file published after the walk is not seen, and one
    # published before it has its row committed by the time the rows are read, or is young.
    report.open_modes = _open_data_paths()
    for key, size, mtime in storage.iter_files(open_modes=report.open_modes):
        report.files += 1
        if mtime > cutoff:
            young.add(key)
        else:
            sizes[key], mtimes[key] = size, mtime
        if progress:
            progress()
    report.too_new = len(young)
    referenced: set[str] = set()
    rows = Instance.objects.order_by().values_list("sop_instance_uid", "file_key", "file_size")
    for sop_uid, key, size in rows.iterator(chunk_size=2000):
        report.instances += 1
        referenced.add(key)
        if key in sizes:
            if sizes[key] != size:
                report.wrong_size.append(WrongSize(sop_uid, key, size, sizes[key]))
        elif key not in young:
            report.missing.append(Missing(sop_uid, key))
    report.orphans = sorted(key for key in sizes if key not in referenced)
    # Again, for what changed while we read: rows committed, replaced or deleted since.
    report.orphans = _still_orphans(report.orphans)
    report.leftovers = _left_by_deletions(report.orphans, mtimes)
    leftovers = set(report.leftovers)
    report.orphans = [key for key in report.orphans if key not in leftovers]
    report.missing = _still_missing(report.missing)
    report.wrong_size = _still_wrong_size(report.wrong_size)
    report.wrong_counts = wrong_counts()
    return report


def _miscounted() -> tuple[QuerySet[Series], QuerySet[Study]]:
    """The series and the studies whose computed keys (PS3.4 C.3.4: numbers of related series
    and instances) differ from their rows, annotated with the counts of their rows."""
    series = Series.objects.annotate(n=Count("instances")).exclude(number_of_instances=F("n"))
    studies = (Study.objects.annotate(n=Count("series__instances"),
                                      ns=Count("series", distinct=True))
               .filter(~Q(number_of_instances=F("n")) | ~Q(number_of_series=F("ns"))))
    return series, studies


def wrong_counts() -> list[str]:
    """Studies and series whose computed keys differ from their rows, each as a line saying
    what is counted and what is stored."""
    series, studies = _miscounted()
    found = [f"series {uid}: {stored} instance(s) counted, {rows} stored"
             for uid, stored, rows in series.values_list(
                 "series_instance_uid", "number_of_instances", "n").iterator(chunk_size=2000)]
    found += [f"study {uid}: {s} series and {i} instance(s) counted, {rs} and {ri} stored"
              for uid, s, rs, i, ri in studies.values_list(
                  "study_instance_uid", "number_of_series", "ns", "number_of_instances",
                  "n").iterator(chunk_size=2000)]
    return found


def fix_counts(*, actor: str) -> int:
    """Count the studies' and series' computed keys again from the rows (a study or series
    left empty goes, as after a deletion); how many studies were counted."""
    series, studies = _miscounted()
    pks = {*series.values_list("study_id", flat=True), *studies.values_list("pk", flat=True)}
    fixed = 0
    for study in Study.objects.filter(pk__in=pks):
        deletion.tidy(study)
        fixed += 1
    if fixed:
        audit.record(category="admin", action="counts repaired", actor=actor,
                     detail=f"{fixed} study(ies) counted again from their rows")
    return fixed


def _open_data_paths() -> list[str]:
    """The data dir and what lies directly in it (database, WAL, secret key) where others than
    this account may read them: patient data, session keys and API tokens."""
    from django.conf import settings

    found = []
    data_dir = Path(settings.DATA_DIR)
    for path in (data_dir, *(data_dir.iterdir() if data_dir.is_dir() else ())):
        try:
            if path.stat().st_mode & 0o077 and path.name != "static":
                found.append(str(path))
        except FileNotFoundError:
            continue
    return found


def make_private(paths: Iterable[str], *, actor: str) -> int:
    """Folders 0700, files 0600: the modes the portal gives what it writes. The number
    changed."""
    changed = 0
    for path in paths:
        try:
            os.chmod(path, 0o700 if os.path.isdir(path) else 0o600)
        except FileNotFoundError:
            continue
        changed += 1
        # SQLite gives its WAL and shared-memory files the database file's mode when it makes
        # them: those made while the database was open to others are so too
        for companion in (f"{path}-wal", f"{path}-shm", f"{path}-journal"):
            if os.path.exists(companion) and os.stat(companion).st_mode & 0o077:
                os.chmod(companion, 0o600)
    if changed:
        audit.record(category="admin", action="file modes made private", actor=actor,
                     detail=f"{changed} file(s) or folder(s) others could read")
    return changed


def reindex_orphans(keys: Iterable[str], *, actor: str,
                    progress: Callable[[], None] | None = None) -> ImportSummary:
    """Index orphan files through the one ingest path, as ``manage.py import`` would: an
    orphan holds an image whose store was never answered (or whose rows a power failure
    lost), or one whose deletion did not finish, which this brings back.
    The file stays where it is when its key is the one ingest gives it; otherwise (an older
    version of a replaced instance, say, or any object of an object store, where each upload
    has a key of its own) the import copies it, and the orphan remains for
    ``delete_orphans``."""
    return import_files(_copies(get_storage(), keys), actor=actor, progress=progress)


def _copies(storage: Storage, keys: Iterable[str]) -> Iterator[Path]:
    """Each stored file by name in turn (an object store's in a temporary copy, removed once
    the next is asked for)."""
    for key in keys:
        with storage.local_copy(key) as path:
            yield path


def delete_orphans(keys: Iterable[str], *, actor: str) -> int:
    """Delete the files among ``keys`` that are still orphans (leftovers of a deletion
    included); the number deleted."""
    storage = get_storage()
    gone = 0
    for key in _still_orphans(list(keys)):
        storage.delete(key)
        gone += 1
    if gone:
        audit.record(category="admin", action="orphan files deleted", actor=actor,
                     detail=f"{gone} stored file(s) no instance pointed at")
    return gone


def forget_missing(missing: Iterable[Missing], *, actor: str) -> int:
    """Delete the instances whose file is still missing (through ``deletion.delete``, so the
    series and study counts stay true and an emptied study goes); the number deleted."""
    forgotten = 0
    for item in missing:
        if not _still_missing([item]):  # just before deleting it
            continue
        try:
            forgotten += deletion.delete("instance", item.sop_instance_uid, actor=actor).instances
        except NotFound:
            continue
    return forgotten


def _left_by_deletions(keys: list[str], mtimes: dict[str, float]) -> list[str]:
    """The files among ``keys`` whose study, series or instance was deleted after they were
    written: what a deletion cut short left. (A file written after the deletion, the same
    instance sent again, is not one of them.)"""
    uids = {key: _uids_of(key) for key in keys}
    deleted = deletion.deleted_at(uid for found in uids.values() for uid in found)
    return [key for key in keys
            if any(uid in deleted and mtimes[key] <= deleted[uid].timestamp()
                   for uid in uids[key])]


def _uids_of(key: str) -> list[str]:
    """The UIDs a stored file's key names: ``<study>/<series>/<sop>[.<version>].dcm``."""
    parts = key.removesuffix(".dcm").split("/")
    if len(parts) != 3:
        return []
    study, series, sop = parts
    return [study, series, sop, sop.rpartition(".")[0]]  # the last: without a version


def _still_orphans(keys: list[str]) -> list[str]:
    storage = get_storage()
    left = []
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        used = set(Instance.objects.filter(file_key__in=chunk)
                   .values_list("file_key", flat=True))
        left.extend(key for key in chunk if key not in used and storage.exists(key))
    return left


def _current_files(sop_uids: list[str]) -> dict[str, tuple[str, int]]:
    """Each instance's file key and indexed size as the database has them now."""
    current: dict[str, tuple[str, int]] = {}
    for start in range(0, len(sop_uids), _CHUNK):
        rows = Instance.objects.filter(sop_instance_uid__in=sop_uids[start:start + _CHUNK])
        for sop_uid, key, size in rows.values_list("sop_instance_uid", "file_key", "file_size"):
            current[sop_uid] = (key, size)
    return current


def _still_missing(items: list[Missing]) -> list[Missing]:
    """Those of ``items`` whose instance is still there without its file, by its key now."""
    if not items:
        return []
    storage = get_storage()
    current = _current_files([m.sop_instance_uid for m in items])
    return [Missing(m.sop_instance_uid, current[m.sop_instance_uid][0]) for m in items
            if m.sop_instance_uid in current
            and not storage.exists(current[m.sop_instance_uid][0])]


def _still_wrong_size(items: list[WrongSize]) -> list[WrongSize]:
    if not items:
        return []
    current = _current_files([w.sop_instance_uid for w in items])
    return [w for w in items if w.sop_instance_uid in current
            and _size(current[w.sop_instance_uid][0]) not in (None, current[w.sop_instance_uid][1])]


def _size(key: str) -> int | None:
    return get_storage().size(key)
