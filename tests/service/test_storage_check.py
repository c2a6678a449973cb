"""manage.py check_storage: what a crash or an outside hand leaves between files and index."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from core.models import AuditEvent
from pacs.models import Instance, Series, Study
from pacs.services import deletion, storage_check
from pacs.services.ingest import store_instance
from tests import stored
from tests.samples import sample

# ages files by their mtime; the object store has its own test (tests/scale/test_object_storage)
pytestmark = [pytest.mark.django_db, stored.local_files_only]


def _store(name: str) -> Instance:
    store_instance(data=sample(name).read_bytes(), received_from="MODALITY")
    return Instance.objects.order_by("-pk").first()


def _age(path, seconds: float = 3600) -> None:
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))


def _crash_before_commit(inst: Instance) -> None:
    """The state a process killed between publishing a file and committing its rows leaves:
    the file, no instance row (nor the series and study it created)."""
    with connection.cursor() as cur:
        cur.execute(f"DELETE FROM {Instance._meta.db_table} WHERE id = %s", [inst.pk])
    Series.objects.filter(instances__isnull=True).delete()
    Study.objects.filter(series__isnull=True).delete()


def _run(*args: str, capsys) -> tuple[str, bool]:
    try:
        call_command("check_storage", "--no-progress", *args)
    except CommandError as exc:
        return capsys.readouterr().out + str(exc), False
    return capsys.readouterr().out, True


def test_a_consistent_archive_is_clean(storage_dir, capsys):
    for name in ("CT_small.dcm", "MR_small.dcm"):
        _age(storage_dir / _store(name).file_key)
    report = storage_check.check()
    assert (report.files, report.instances, report.clean) == (2, 2, True)
    out, ok = _run(capsys=capsys)
    assert ok and ("2 file(s), 2 instance(s); 0 orphan file(s), 0 left by a deletion, "
                   "0 missing, 0 of the wrong size") in out


def test_an_orphan_is_found_and_reindexed_where_it_lies(storage_dir, capsys):
    inst = _store("CT_small.dcm")
    path = storage_dir / inst.file_key
    data = path.read_bytes()
    _crash_before_commit(inst)
    _age(path)
    assert storage_check.check().orphans == [inst.file_key]
    out, ok = _run(capsys=capsys)
    assert not ok and "1 orphan file(s)" in out and inst.file_key in out
    assert "storage has problems: 1 orphan file(s)" in out
    out, ok = _run("--reindex-orphans", capsys=capsys)
    assert ok and "reindexed orphans: 1 stored" in out
    again = Instance.objects.get(sop_instance_uid=inst.sop_instance_uid)
    assert again.file_key == inst.file_key and path.read_bytes() == data
    assert again.series.study.number_of_instances == 1
    assert [p for p in storage_dir.rglob("*.dcm")] == [path]  # not copied, still the one file
    _age(path)
    assert storage_check.check().clean


def test_orphans_that_cannot_be_reindexed_are_deleted_on_request(storage_dir, capsys):
    inst = _store("CT_small.dcm")
    kept = storage_dir / inst.file_key
    _age(kept)
    # An older copy under another name (a replaced version a deletion did not finish with)
    # and a file that is no DICOM at all.
    older = kept.with_name(f"{inst.sop_instance_uid}.1700000000000000000.dcm")
    older.write_bytes(kept.read_bytes())
    junk = storage_dir / "stray" / "junk.dcm"
    junk.parent.mkdir()
    junk.write_bytes(b"not dicom")
    _age(older)
    _age(junk)
    out, ok = _run("--reindex-orphans", capsys=capsys)
    assert not ok and "1 duplicate" in out and "1 rejected" in out
    assert older.exists() and junk.exists()
    out, ok = _run("--reindex-orphans", "--delete-orphans", capsys=capsys)
    assert ok and "deleted 2 orphan file(s)" in out
    assert not older.exists() and not junk.exists() and kept.exists()
    assert Instance.objects.get().file_key == inst.file_key
    assert AuditEvent.objects.filter(action="orphan files deleted").exists()


def test_the_files_of_a_deletion_cut_short_are_deleted_never_reindexed(storage_dir, capsys):
    ct, mr = _store("CT_small.dcm"), _store("MR_small.dcm")
    ct_path, mr_path = storage_dir / ct.file_key, storage_dir / mr.file_key
    # Deleted, and the process gone before its files were (the test's transaction never
    # commits, so the on-commit file deletion never runs: the state a kill leaves).
    deletion.delete("study", ct.series.study.study_instance_uid, actor="admin")
    deletion.delete("instance", mr.sop_instance_uid, actor="admin")
    for path in (ct_path, mr_path):
        assert path.exists()
        _age(path)
    report = storage_check.check()
    assert report.leftovers == sorted([ct.file_key, mr.file_key]) and report.orphans == []
    out, ok = _run("--reindex-orphans", capsys=capsys)
    assert not ok and "2 left by a deletion" in out and "reindexed" not in out
    assert not Instance.objects.exists()  # nothing came back
    out, ok = _run("--delete-orphans", capsys=capsys)
    assert ok and "deleted 2 orphan file(s)" in out
    assert not ct_path.exists() and not mr_path.exists()


def test_an_instance_sent_again_after_its_deletion_is_an_orphan_to_reindex(storage_dir):
    inst = _store("CT_small.dcm")
    path = storage_dir / inst.file_key
    deletion.delete("series", inst.series.series_instance_uid, actor="admin")
    two_hours_ago = timezone.now() - timedelta(hours=2)
    AuditEvent.objects.filter(action="series deleted").update(created_at=two_hours_ago)
    _age(path)  # written an hour ago: after the deletion, a store cut short
    assert storage_check.check().orphans == [inst.file_key]
    storage_check.reindex_orphans([inst.file_key], actor="test")
    assert Instance.objects.get().sop_instance_uid == inst.sop_instance_uid


def test_an_older_version_of_a_deleted_instance_is_a_leftover(storage_dir):
    inst = _store("CT_small.dcm")
    version = (storage_dir / inst.file_key).with_name(
        f"{inst.sop_instance_uid}.1700000000000000000.dcm")
    version.write_bytes(b"an older version")
    _age(version)
    deletion.delete("instance", inst.sop_instance_uid, actor="admin")
    _age(storage_dir / inst.file_key)
    report = storage_check.check()
    assert sorted(report.leftovers) == sorted([inst.file_key, str(version.relative_to(
        storage_dir))])


def test_a_missing_file_is_reported_and_its_instance_forgotten_on_request(storage_dir, capsys):
    ct, mr = _store("CT_small.dcm"), _store("MR_small.dcm")
    ct_study = ct.series.study_id
    _age(storage_dir / mr.file_key)
    (storage_dir / ct.file_key).unlink()
    report = storage_check.check()
    assert [m.sop_instance_uid for m in report.missing] == [ct.sop_instance_uid]
    assert report.orphans == [] and report.wrong_size == []
    out, ok = _run(capsys=capsys)
    assert not ok and "1 missing" in out and ct.sop_instance_uid in out
    assert Instance.objects.count() == 2  # reporting changes nothing
    out, ok = _run("--forget-missing", capsys=capsys)
    assert ok and "deleted 1 instance(s) whose file was missing" in out
    assert list(Instance.objects.values_list("sop_instance_uid", flat=True)) == [
        mr.sop_instance_uid]
    assert not Study.objects.filter(pk=ct_study).exists()  # emptied, gone too
    assert AuditEvent.objects.filter(action="instance deleted").exists()


def test_a_file_of_the_wrong_size_is_reported_and_left_alone(storage_dir, capsys):
    inst = _store("CT_small.dcm")
    path = storage_dir / inst.file_key
    with open(path, "r+b") as fh:
        fh.truncate(inst.file_size - 1000)
    _age(path)
    [wrong] = storage_check.check().wrong_size
    assert (wrong.file_key, wrong.indexed, wrong.on_disk) == (
        inst.file_key, inst.file_size, inst.file_size - 1000)
    out, ok = _run("--reindex-orphans", "--delete-orphans", "--forget-missing", capsys=capsys)
    assert not ok and "1 of the wrong size" in out and path.exists()
    assert Instance.objects.count() == 1


def test_a_file_mended_while_checking_is_not_reported(storage_dir, monkeypatch):
    inst = _store("CT_small.dcm")
    path = storage_dir / inst.file_key
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    _age(path)
    recheck = storage_check._current_files

    def mended_then_recheck(sop_uids: list[str]) -> dict:
        path.write_bytes(data)  # the modality's copy restored meanwhile
        return recheck(sop_uids)

    monkeypatch.setattr(storage_check, "_current_files", mended_then_recheck)
    assert storage_check.check().clean


def test_young_files_and_temporary_files_are_not_judged(storage_dir, capsys):
    inst = _store("CT_small.dcm")
    young_orphan = storage_dir / inst.file_key
    _crash_before_commit(inst)  # as if its rows were about to commit
    incoming = storage_dir / ".incoming"
    incoming.mkdir(exist_ok=True)
    (incoming / "abc.tmp").write_bytes(b"being written")
    (incoming / "abc.dcm").write_bytes(b"not a stored file either")
    report = storage_check.check()
    assert report.clean and (report.files, report.too_new) == (1, 1)
    out, ok = _run(capsys=capsys)
    assert ok and "1 too new to judge" in out
    assert storage_check.check(min_age=0).orphans == [inst.file_key]
    assert young_orphan.exists()


def test_a_store_committing_while_checking_leaves_no_false_orphan(storage_dir, monkeypatch):
    """A store whose rows commit during the file walk (the rows are read after it), or after
    the rows were read (each finding is checked again): the file looked like an orphan and
    is not one."""
    inst = _store("CT_small.dcm")
    path = storage_dir / inst.file_key
    data = path.read_bytes()

    def crashed() -> None:
        _crash_before_commit(Instance.objects.get())
        _age(path)

    crashed()
    report = storage_check.check(
        progress=lambda: store_instance(data=data, received_from="MODALITY"))
    assert report.clean and report.instances == 1
    crashed()
    recheck = storage_check._still_orphans

    def commit_then_recheck(keys: list[str]) -> list[str]:
        assert keys == [inst.file_key]  # an orphan when the rows were read
        store_instance(data=data, received_from="MODALITY")
        return recheck(keys)

    monkeypatch.setattr(storage_check, "_still_orphans", commit_then_recheck)
    report = storage_check.check()
    assert report.clean and report.instances == 0


def test_a_deletion_finishing_while_checking_leaves_no_false_missing(storage_dir, monkeypatch):
    inst = _store("CT_small.dcm")
    (storage_dir / inst.file_key).unlink()  # the file went first: rows are still being read
    recheck = storage_check._current_files

    def rows_go_then_recheck(sop_uids: list[str]) -> dict:
        assert sop_uids == [inst.sop_instance_uid]  # missing when the rows were read
        deletion.delete("instance", inst.sop_instance_uid, actor="admin")  # now it finishes
        return recheck(sop_uids)

    monkeypatch.setattr(storage_check, "_current_files", rows_go_then_recheck)
    assert storage_check.check().clean


def test_min_age_must_not_be_negative(storage_dir):
    with pytest.raises(CommandError, match="--min-age"):
        call_command("check_storage", "--no-progress", "--min-age", "-1")


def test_counters_are_checked_and_counted_again_on_request(storage_dir, capsys):
    for name in ("CT_small.dcm", "MR_small.dcm"):
        _age(storage_dir / _store(name).file_key)
    assert storage_check.check().wrong_counts == []
    Study.objects.filter(patient__patient_id="1CT1").update(number_of_instances=5)
    Series.objects.filter(study__patient__patient_id="4MR1").update(number_of_instances=0)
    found = storage_check.check().wrong_counts
    assert len(found) == 2 and not storage_check.check().clean  # the MR series, the CT study
    assert any("1 and 1 stored" in line and "5 instance(s) counted" in line for line in found)
    with pytest.raises(CommandError):
        call_command("check_storage", "--no-progress")
    call_command("check_storage", "--no-progress", "--fix-counts")
    assert "counted 2 study(ies) again" in capsys.readouterr().out
    assert storage_check.check().clean
    assert [s.number_of_instances for s in Study.objects.order_by("pk")] == [1, 1]
