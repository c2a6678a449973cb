from __future__ import annotations

import os

import pytest
from pydicom import dcmread

from core.errors import InvalidDicom, MissingAttribute, SopClassMismatch, StorageFull
from pacs.dicomfile import to_part10
from pacs.models import Instance, Patient, Series, Study
from pacs.services.ingest import Outcome, store_instance
from pacs.storage import INCOMING, _write_all, get_storage
from tests import stored
from tests.samples import COMPRESSED, UNCOMPRESSED, dataset_bytes, encoded, sample
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db


def _files(root):
    return stored.left_behind(root)


def test_store_indexes_header_columns_and_keeps_bytes(storage_dir):
    data = sample("CT_small.dcm").read_bytes()
    result = store_instance(data=data, received_from="test")
    assert result.outcome is Outcome.STORED
    inst = Instance.objects.select_related("series__study__patient").get()
    study, patient = inst.series.study, inst.series.study.patient
    assert patient.patient_id == "1CT1"
    assert patient.patient_name == "CompressedSamples^CT1"
    assert study.study_date == "20040119" and study.modalities_in_study == "CT"
    assert study.number_of_series == 1 and study.number_of_instances == 1
    assert inst.series.modality == "CT" and inst.series.number_of_instances == 1
    assert (inst.rows, inst.columns, inst.has_pixel_data) == (128, 128, True)
    assert inst.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert stored.read(inst.file_key) == data  # exactly as received
    # Metadata is DICOM JSON without bulk data.
    assert inst.metadata["00100010"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "CompressedSamples^CT1"}],
    }
    assert inst.metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
    assert all(
        "InlineBinary" not in v or len(v["InlineBinary"]) < 2000 for v in inst.metadata.values()
    )


def test_duplicate_keeps_first_and_creates_no_row(storage_dir, settings):
    settings.DUPLICATE_POLICY = "keep"
    data = sample("CT_small.dcm").read_bytes()
    store_instance(data=data, received_from="first")
    again = store_instance(data=data, received_from="second")
    assert again.outcome is Outcome.DUPLICATE
    assert Instance.objects.get().received_from == "first"
    assert Study.objects.get().number_of_instances == 1
    assert len(_files(storage_dir)) == 1  # no temporary file left behind


def test_a_resent_instance_restores_its_missing_file(storage_dir, settings):
    settings.DUPLICATE_POLICY = "keep"
    data = sample("CT_small.dcm").read_bytes()
    store_instance(data=data, received_from="first")
    stored.remove(Instance.objects.get().file_key)  # e.g. a rename lost to a crash
    again = store_instance(data=data, received_from="second")
    assert again.outcome is Outcome.REPLACED
    inst = Instance.objects.get()
    assert inst.received_from == "second"
    assert _files(storage_dir) == [inst.file_key]
    assert stored.read(inst.file_key) == data
    assert Study.objects.get().number_of_instances == 1
    assert store_instance(data=data, received_from="third").outcome is Outcome.DUPLICATE


def test_replace_policy_swaps_file(storage_dir, settings, django_capture_on_commit_callbacks):
    settings.DUPLICATE_POLICY = "replace"
    data = sample("CT_small.dcm").read_bytes()
    store_instance(data=data, received_from="first")
    old_key = Instance.objects.get().file_key
    with django_capture_on_commit_callbacks(execute=True):
        again = store_instance(data=data, received_from="second")
    assert again.outcome is Outcome.REPLACED
    inst = Instance.objects.get()
    assert inst.received_from == "second" and inst.file_key != old_key
    assert _files(storage_dir) == [inst.file_key]


@pytest.mark.parametrize("name", list(COMPRESSED) + UNCOMPRESSED)
def test_every_sample_transfer_syntax_is_stored_as_received(storage_dir, name):
    data = sample(name).read_bytes()
    store_instance(data=data, received_from="test")
    inst = Instance.objects.get()
    assert stored.read(inst.file_key) == data
    if name in COMPRESSED:
        assert inst.transfer_syntax_uid == COMPRESSED[name]


def test_multiframe_and_sr():
    store_instance(data=sample("emri_small.dcm").read_bytes(), received_from="t")
    store_instance(data=sample("reportsi.dcm").read_bytes(), received_from="t")
    mf = Instance.objects.get(number_of_frames__gt=1)
    assert mf.number_of_frames == 10 and mf.has_pixel_data
    sr = Instance.objects.get(series__modality="SR")
    assert not sr.has_pixel_data and "7FE00010" not in sr.metadata


@pytest.mark.parametrize("cut", [-100, 0.5, 0.9])
def test_truncated_file_is_refused_and_leaves_nothing(storage_dir, cut):
    data = sample("CT_small.dcm").read_bytes()
    end = len(data) + cut if cut < 0 else int(len(data) * cut)
    with pytest.raises(InvalidDicom, match="truncated"):
        store_instance(data=data[:end], received_from="test")
    assert not Instance.objects.exists() and not Study.objects.exists()
    assert _files(storage_dir) == []


def test_truncated_encapsulated_pixel_data_is_refused(storage_dir):
    data = sample("MR_small_RLE.dcm").read_bytes()
    with pytest.raises(InvalidDicom):
        store_instance(data=data[:-20], received_from="test")
    assert _files(storage_dir) == []


def test_garbage_is_refused(storage_dir):
    with pytest.raises(InvalidDicom):
        store_instance(data=b"\x00" * 128 + b"DICM" + b"garbage" * 50, received_from="t")
    with pytest.raises(InvalidDicom):
        store_instance(data=b"hello world", received_from="t")
    assert _files(storage_dir) == []


def test_missing_uid_is_refused(storage_dir):
    ds = dcmread(sample("CT_small.dcm"))
    del ds.SeriesInstanceUID
    with pytest.raises(MissingAttribute, match="SeriesInstanceUID"):
        store_instance(data=encoded(ds), received_from="t")
    assert not Patient.objects.exists()


def test_invalid_uid_cannot_escape_storage(storage_dir):
    ds = dcmread(sample("CT_small.dcm"))
    ds.StudyInstanceUID = "../../etc"
    with pytest.raises(MissingAttribute, match="not a valid UID"):
        store_instance(data=encoded(ds), received_from="t")


def test_request_mismatch_is_a900(storage_dir):
    data = sample("CT_small.dcm").read_bytes()
    with pytest.raises(SopClassMismatch) as info:
        store_instance(data=data, received_from="t", expected_sop_instance_uid="1.2.3")
    assert info.value.dimse_status == 0xA900


def test_synced_write_is_stored_and_leaves_no_temporary_file(storage_dir, settings):
    settings.STORAGE_FSYNC = True  # the default: written with O_DSYNC
    data = sample("MR_small.dcm").read_bytes()
    assert store_instance(data=data, received_from="t").outcome is Outcome.STORED
    [key] = _files(storage_dir)
    assert stored.read(key) == data
    assert key == Instance.objects.get().file_key


@stored.local_files_only
def test_unwritable_storage_is_a700_and_leaves_no_row(storage_dir):
    storage_dir.mkdir(parents=True)
    (storage_dir / INCOMING).write_text("a file where the folder should be")
    with pytest.raises(StorageFull) as info:
        store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="t")
    assert info.value.dimse_status == 0xA700
    assert not Instance.objects.exists() and not Patient.objects.exists()


def test_failed_write_raises_storage_full_and_removes_the_temporary_file(tmp_path):
    """A real ENOSPC: /dev/full takes no byte."""
    temp = tmp_path / "x.tmp"
    temp.write_bytes(b"")
    fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(StorageFull, match="cannot write file"):
        _write_all(fd, temp, b"\x00" * 4096, True)
    assert not temp.exists()


def test_stale_temporary_files_are_swept_and_fresh_ones_kept(storage_dir):
    incoming = storage_dir / INCOMING
    incoming.mkdir(parents=True)
    stale, fresh = incoming / "a.tmp", incoming / "b.tmp"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being written")
    two_hours_ago = stale.stat().st_mtime - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert get_storage().sweep_incoming() == 1
    assert not stale.exists() and fresh.exists()
    assert get_storage().sweep_incoming(older_than=0) == 1 and not fresh.exists()
    assert get_storage().sweep_incoming() == 0  # empty, or missing altogether:
    incoming.rmdir()
    assert get_storage().sweep_incoming() == 0


def test_dimse_listener_sweeps_stale_temporary_files_on_start_and_while_running(
        storage_dir, transactional_db):
    from pacs.dimse.scp import DimseListener

    stale = storage_dir / INCOMING / "c.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    os.utime(stale, (1, 1))
    listener = DimseListener(host="127.0.0.1", port=0, ae_title="PORTAL")
    listener.SWEEP_SECONDS = 0.2
    listener.start()
    try:
        assert not stale.exists()
        later = storage_dir / INCOMING / "d.tmp"  # left by a web process, say, while it runs
        later.write_bytes(b"x")
        os.utime(later, (1, 1))
        wait_until(lambda: not later.exists(), 10, 0.05, "the sweep while running")
    finally:
        listener.stop()


def test_second_series_updates_study_counters_and_modalities(storage_dir):
    ds = dcmread(sample("CT_small.dcm"))
    store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="t")
    ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".2"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".2"
    ds.Modality = "MR"
    store_instance(data=encoded(ds), received_from="t")
    study = Study.objects.get()
    assert study.number_of_series == 2 and study.number_of_instances == 2
    assert study.modalities_in_study == "CT\\MR"
    assert Series.objects.count() == 2 and Patient.objects.count() == 1


def test_character_set_is_decoded_to_unicode(storage_dir):
    ds = dcmread(sample("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    data = encoded(ds)
    assert "Müller".encode("latin-1") in data
    store_instance(data=data, received_from="t")
    assert Patient.objects.get().patient_name == "Müller^Jürgen"


def test_file_without_meta_is_given_one_on_import(storage_dir):
    data = to_part10(dataset_bytes(sample("CT_small.dcm")))
    assert data[128:132] == b"DICM"
    result = store_instance(data=data, received_from="import")
    assert result.outcome is Outcome.STORED


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"])
def test_group_lengths_stay_out_of_the_stored_metadata(storage_dir, syntax):
    """PS3.18 F.2.2: group length attributes (gggg,0000) are not included in DICOM JSON, at
    the top level or in sequence items; both header readers (the fast scan for Explicit VR
    Little Endian, pydicom for Big Endian) leave them out."""
    import io

    from pydicom import dcmwrite
    from pydicom.dataset import Dataset
    from pydicom.uid import UID

    ds = dcmread(sample("CT_small.dcm"))
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1456.9.{syntax[-1]}"
    ds.add_new(0x00080000, "UL", 0)
    ds.add_new(0x00100000, "UL", 0)
    item = Dataset()
    item.add_new(0x00080000, "UL", 0)
    item.CodeValue, item.CodingSchemeDesignator = "T-A0100", "SRT"
    ds.AnatomicRegionSequence = [item]
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = io.BytesIO()
    dcmwrite(out, ds, little_endian=not syntax.endswith(".2"), implicit_vr=False,
             enforce_file_format=True)
    store_instance(data=out.getvalue(), received_from="t")
    metadata = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID).metadata

    def keys(element_map):
        for key, element in element_map.items():
            yield key
            for child in element.get("Value", []) if element.get("vr") == "SQ" else []:
                yield from keys(child)

    assert "00080060" in metadata and "00082218" in metadata
    assert [k for k in keys(metadata) if k.endswith("0000")] == []


def test_elements_after_the_pixel_data_are_in_the_metadata(storage_dir):
    """The metadata of an instance (PS3.18 10.4.1.1.2) holds every attribute of its header,
    those stored after the pixel data too (a private group 7FE1, as some vendors write),
    bulk ones as BulkDataURI; trailing padding (FFFC,FFFC) is no attribute of the instance."""
    ds = dcmread(sample("CT_small.dcm"))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1456.9.71"
    block = ds.private_block(0x7FE1, "VENDOR AFTER", create=True)
    block.add_new(0x01, "LO", "after the pixels")
    block.add_new(0x02, "OB", bytes(range(256)) * 8)
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 16)
    store_instance(data=encoded(ds), received_from="t")
    metadata = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID).metadata
    assert metadata["7FE11001"] == {"vr": "LO", "Value": ["after the pixels"]}
    assert metadata["7FE11002"] == {"vr": "OB", "BulkDataURI": "bulkdata/7FE11002"}
    assert "7FE00010" in metadata and "FFFCFFFC" not in metadata
    assert list(metadata) == sorted(metadata)


def test_publish_new_never_replaces_a_stored_file_and_can_be_undone(tmp_path):
    """LocalStorage.publish_new, for a store that publishes before it knows whether its
    instance is new: a file at the key stays as it is."""
    from pacs.storage import LocalStorage

    storage = LocalStorage(tmp_path, fsync=False)
    first = storage.write_soon(b"first").result()
    assert storage.publish_new(first, "a/b/c.dcm")
    assert (tmp_path / "a/b/c.dcm").read_bytes() == b"first" and not first.temp_path.exists()
    second = storage.write_soon(b"second").result()
    assert not storage.publish_new(second, "a/b/c.dcm")
    assert (tmp_path / "a/b/c.dcm").read_bytes() == b"first"
    assert second.temp_path.read_bytes() == b"second"
    storage.uncommit(first, "a/b/c.dcm")  # the statement after it inserted nothing
    assert not (tmp_path / "a/b/c.dcm").exists() and first.temp_path.read_bytes() == b"first"


def test_a_studys_received_time_follows_its_instances_to_the_second(storage_dir, monkeypatch):
    """Study.updated_at (the study list's "received" order) moves with each store, unless it
    moved less than RECEIVED_RESOLUTION ago: then the row keeps it (an in-place update on
    PostgreSQL, no entry in each of the study's indexes)."""
    import datetime as dt

    from pydicom import dcmread

    from pacs.models import Study
    from pacs.services import ingest
    from tests.samples import encoded

    clock = [dt.datetime(2026, 12, 7, 9, 0, 0, tzinfo=dt.UTC)]
    monkeypatch.setattr(ingest.timezone, "now", lambda: clock[0])

    def store(n: int) -> dt.datetime:
        ds = dcmread(sample("CT_small.dcm"))
        ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.{n}"
        ingest.store_instance(data=encoded(ds), received_from="test")
        return Study.objects.get().updated_at

    first = store(1)
    clock[0] += dt.timedelta(milliseconds=400)
    assert store(2) == first
    clock[0] += dt.timedelta(milliseconds=700)  # 1.1 s after the first
    assert store(3) == clock[0]
    assert Study.objects.get().number_of_instances == 3
