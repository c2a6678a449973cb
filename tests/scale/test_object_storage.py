"""The object store backend against a real S3 server (Ceph's RADOS Gateway, started by
scripts/objectstore.sh; PORTAL_TEST_S3_ENDPOINT names it): what S3's semantics change from
local files (no rename, a PUT replaces), and the storage check over a bucket.

scripts/test.sh also runs the archive's protocol tests (store, WADO, C-MOVE/C-GET, send jobs,
forwarding, deletion, previews, export) against the same server, through the ``storage_dir``
fixture."""

from __future__ import annotations

import pytest
from boto3.s3.transfer import TransferConfig
from django.db import connection
from pydicom import dcmread

from core.errors import StorageFull
from pacs import objectstore
from pacs.models import Instance, Series, Study
from pacs.services import storage_check
from pacs.services.ingest import Outcome, store_instance
from pacs.storage import get_storage
from tests import stored
from tests.samples import encoded, sample

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not stored.object_store(),
                                 reason="needs PORTAL_TEST_S3_ENDPOINT (scripts/objectstore.sh)")]


def test_every_upload_has_its_own_key_and_nothing_is_overwritten(storage_dir):
    storage = get_storage()
    assert isinstance(storage, objectstore.ObjectStorage)
    first = storage.write_soon(b"first").result()
    second = storage.write_soon(b"second").result()
    a, b = storage.place(first, "s/e/i.dcm"), storage.place(second, "s/e/i.dcm")
    assert a != b and a.startswith("s/e/i.") and a.endswith(".dcm")
    assert stored.read(a) == b"first" and stored.read(b) == b"second"
    storage.discard(second)  # a kept duplicate's upload goes
    assert stored.keys() == [a] and storage.size(a) == 5 and not storage.exists(b)


def test_a_resent_instance_never_replaces_the_stored_object(storage_dir, settings):
    settings.DUPLICATE_POLICY = "keep"
    ds = dcmread(sample("CT_small.dcm"))
    store_instance(data=encoded(ds), received_from="first")
    key = Instance.objects.get().file_key
    ds.PatientComments = "changed"
    again = store_instance(data=encoded(ds), received_from="second")
    assert again.outcome is Outcome.DUPLICATE
    assert stored.keys() == [key] and "PatientComments" not in stored.dataset(key)
    settings.DUPLICATE_POLICY = "replace"
    replaced = store_instance(data=encoded(ds), received_from="third")
    assert replaced.outcome is Outcome.REPLACED
    new_key = Instance.objects.get().file_key
    assert new_key != key and stored.keys() == [new_key]  # the old object went on commit
    assert stored.dataset(new_key).PatientComments == "changed"


def test_large_data_sets_are_spooled_then_uploaded_in_parts(storage_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(objectstore, "_TRANSFER", TransferConfig(
        multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    ds = dcmread(sample("CT_small.dcm"))
    ds.PixelData = bytes(range(256)) * (48 << 10)  # 12 MB: three parts
    ds.Rows, ds.Columns = 2048, 3072
    data = encoded(ds)
    storage = get_storage()
    received = tmp_path / "received"  # what the DIMSE reader spools a large data set to
    received.write_bytes(data[128:])
    with open(received, "rb") as source:
        pending = storage.write_from(data[:128], source, len(data) - 128)
    spooled = pending.temp_path
    assert spooled is not None and spooled.exists()
    result = store_instance(written=pending, storage=storage, received_from="big")
    assert result.outcome is Outcome.STORED
    key = Instance.objects.get().file_key
    assert stored.read(key) == data and not spooled.exists()
    assert storage.size(key) == len(data) == Instance.objects.get().file_size


def test_positioned_reads_follow_one_stream_and_jump_with_a_new_range(storage_dir):
    storage = get_storage()
    data = bytes(range(256)) * 64
    key = storage.place(storage.write_soon(data).result(), "s/e/r.dcm")
    reader = storage.range_reader()
    try:
        assert reader.read_at(key, 0, 100) == data[:100]
        assert reader.read_at(key, 100, 1000) == data[100:1100]  # the same GET, read on
        assert reader.read_at(key, 5000, 10) == data[5000:5010]  # a ranged GET
        assert reader.read_at(key, 16380, 100) == data[16380:]  # short at the end
    finally:
        reader.close()
    with storage.local_copy(key) as path:
        assert path.read_bytes() == data and path.name.startswith("r.")
    assert not path.exists()  # the temporary copy is gone


def test_the_objects_of_a_multipart_answer_are_read_ahead(storage_dir, monkeypatch):
    from pacs.dicomweb import multipart

    monkeypatch.setattr(objectstore, "READ_AHEAD_OBJECTS", 2)
    storage = get_storage()
    blobs = [bytes([n]) * (1000 + n) for n in range(5)]
    keys = [storage.place(storage.write_soon(b).result(), f"s/e/{n}.dcm")
            for n, b in enumerate(blobs)]
    segments: list = []
    for key, blob in zip(keys, blobs, strict=True):
        segments += [b"--part\r\n", (key, len(blob)), b"\r\n"]
    whole = b"".join(b"--part\r\n" + blob + b"\r\n" for blob in blobs)
    joined = multipart.JoinedFile(segments, storage.range_reader())
    assert b"".join(iter(lambda: joined.read(700), b"")) == whole
    joined.seek(2500)  # an HTTP range in the middle
    assert joined.read(3000) == whole[2500:5500]
    joined.close()
    stored.remove(keys[4])
    again = multipart.JoinedFile(segments, storage.range_reader())
    with pytest.raises(FileNotFoundError):  # a lost object fails the answer, never garbles it
        again.read()
    again.close()


def test_an_unreachable_store_refuses_the_store_with_a700_and_keeps_nothing(storage_dir,
                                                                             settings):
    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(StorageFull) as refused:
        store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="t")
    assert refused.value.dimse_status == 0xA700
    assert "object store" in str(refused.value)
    assert not Instance.objects.exists() and not Study.objects.exists()
    spool = storage_dir / ".incoming"
    assert not spool.exists() or not any(spool.iterdir())


def test_storage_check_finds_orphans_missing_and_damaged_objects(storage_dir):
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        store_instance(data=sample(name).read_bytes(), received_from="MODALITY")
    ct, mr, plan = Instance.objects.order_by("pk")
    assert storage_check.check(min_age=0).clean
    # a process killed between the upload and the commit: the object, no rows
    with connection.cursor() as cur:
        cur.execute(f"DELETE FROM {Instance._meta.db_table} WHERE id = %s", [plan.pk])
    Series.objects.filter(instances__isnull=True).delete()
    Study.objects.filter(series__isnull=True).delete()
    stored.remove(mr.file_key)  # lost from the bucket
    stored.put(ct.file_key, b"not what was stored")  # changed behind the portal's back
    stored.put("stray/junk.dcm", b"junk")
    report = storage_check.check(min_age=0)
    assert (report.files, report.instances) == (3, 2)
    assert sorted(report.orphans) == sorted([plan.file_key, "stray/junk.dcm"])
    assert [m.sop_instance_uid for m in report.missing] == [mr.sop_instance_uid]
    assert [w.sop_instance_uid for w in report.wrong_size] == [ct.sop_instance_uid]
    summary = storage_check.reindex_orphans(report.orphans, actor="admin")
    assert summary.counts["stored"] == 1 and summary.counts["rejected"] == 1
    assert Instance.objects.filter(sop_instance_uid=plan.sop_instance_uid).exists()
    left = storage_check.check(min_age=0).orphans  # the reindexed copy is a new object
    assert storage_check.delete_orphans(left, actor="admin") == len(left) == 2
    assert storage_check.forget_missing(report.missing, actor="admin") == 1
    final = storage_check.check(min_age=0)
    assert not final.orphans and not final.missing
    assert [w.sop_instance_uid for w in final.wrong_size] == [ct.sop_instance_uid]
