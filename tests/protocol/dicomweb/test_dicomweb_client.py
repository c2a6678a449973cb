"""DICOMweb against the real HTTP server, with dicomweb-client (an outside library) as the client:
store, search, retrieve, metadata, frames, bulk data, rendered."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from pacs.models import Instance, Study
from tests.samples import sample

STORED = ("CT_small.dcm", "MR_small_RLE.dcm", "emri_small.dcm", "reportsi.dcm",
          "SC_rgb_jpeg_dcmtk.dcm")


@pytest.fixture
def archive(dicomweb, web, settings):
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so links are pinned here as
    # an installation behind a proxy would pin them.
    settings.DICOMWEB_BASE_URL = f"{web}/dicomweb"
    datasets = [dcmread(sample(name)) for name in STORED]
    response = dicomweb.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == len(STORED)
    assert "FailedSOPSequence" not in response
    return {name: ds for name, ds in zip(STORED, datasets, strict=True)}


def uid(ds, keyword: str) -> str:
    return str(getattr(ds, keyword))


def test_store_response_links_every_instance_to_its_wado_url(dicomweb, web, settings):
    settings.DICOMWEB_BASE_URL = f"{web}/dicomweb"
    ct = dcmread(sample("CT_small.dcm"))
    response = dicomweb.store_instances([ct])
    item = response.ReferencedSOPSequence[0]
    assert item.ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert item.RetrieveURL == (f"{web}/dicomweb/studies/{ct.StudyInstanceUID}/series/"
                                f"{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}")
    assert response.RetrieveURL == f"{web}/dicomweb/studies/{ct.StudyInstanceUID}"
    stored = Instance.objects.get(sop_instance_uid=ct.SOPInstanceUID)
    assert stored.received_from == "stow:clinician"
    # what is stored is the file as sent, and it is retrieved unchanged
    (back,) = dicomweb.retrieve_study(ct.StudyInstanceUID)
    assert back.SOPInstanceUID == ct.SOPInstanceUID
    assert np.array_equal(back.pixel_array, ct.pixel_array)


def test_search_studies_series_instances(dicomweb, archive):
    studies = dicomweb.search_for_studies()
    assert len(studies) == Study.objects.count() == 5
    ct = archive["CT_small.dcm"]
    found = dicomweb.search_for_studies(search_filters={"PatientName": "compressed*"})
    assert {s["0020000D"]["Value"][0] for s in found} >= {ct.StudyInstanceUID}
    (study,) = dicomweb.search_for_studies(search_filters={"PatientID": ct.PatientID})
    assert study["00100010"]["Value"][0]["Alphabetic"] == str(ct.PatientName)
    assert study["00201208"]["Value"] == [1]
    assert study["00080061"]["Value"] == ["CT"]
    series = dicomweb.search_for_series(ct.StudyInstanceUID)
    assert [s["0020000E"]["Value"][0] for s in series] == [ct.SeriesInstanceUID]
    assert series[0]["00080060"]["Value"] == ["CT"]
    instances = dicomweb.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert instances[0]["00080018"]["Value"] == [ct.SOPInstanceUID]
    assert instances[0]["00280010"]["Value"] == [ct.Rows]
    assert instances[0]["00280100"]["Value"] == [ct.BitsAllocated]  # from stored metadata
    mr = dicomweb.search_for_series(search_filters={"Modality": "MR"})
    assert len(mr) == 2 and all("00100020" in s for s in mr)  # study attributes at /series


def test_search_paging_is_stable_and_includefield_adds_attributes(dicomweb, archive):
    everything = [s["0020000D"]["Value"][0] for s in dicomweb.search_for_studies()]
    pages = [dicomweb.search_for_studies(limit=2, offset=o) for o in (0, 2, 4)]
    assert [s["0020000D"]["Value"][0] for page in pages for s in page] == everything
    assert dicomweb.search_for_studies(get_remaining=True, limit=2)  # walks the pages
    ct = archive["CT_small.dcm"]
    (inst,) = dicomweb.search_for_instances(
        ct.StudyInstanceUID, search_filters={"SOPInstanceUID": ct.SOPInstanceUID},
        fields=["ImageType", "00180050"])
    assert inst["00080008"]["Value"] == list(ct.ImageType)
    assert inst["00180050"]["Value"] == [float(ct.SliceThickness)]
    (full,) = dicomweb.search_for_instances(
        ct.StudyInstanceUID, search_filters={"SOPInstanceUID": ct.SOPInstanceUID},
        fields=["all"])
    assert "00200032" in full and "7FE00010" not in full  # no bulk data in QIDO answers


def test_fuzzy_matching_finds_name_parts(dicomweb, archive):
    ct = archive["CT_small.dcm"]  # CompressedSamples^CT1
    strict = dicomweb.search_for_studies(search_filters={"PatientName": "ct1"})
    fuzzy = dicomweb.search_for_studies(search_filters={"PatientName": "ct1"}, fuzzymatching=True)
    assert strict == []
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == [ct.StudyInstanceUID]


def test_retrieve_as_stored_or_explicit_little_endian(dicomweb, archive):
    rle = archive["MR_small_RLE.dcm"]
    (as_stored,) = dicomweb.retrieve_study(rle.StudyInstanceUID,
                                         media_types=(("application/dicom", "*"),))
    assert as_stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    (default,) = dicomweb.retrieve_series(rle.StudyInstanceUID, rle.SeriesInstanceUID)
    assert default.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # decompressed
    assert np.array_equal(default.pixel_array, rle.pixel_array)
    assert default.SOPInstanceUID == rle.SOPInstanceUID  # the same instance (a new UID before)
    assert default.file_meta.MediaStorageSOPInstanceUID == rle.SOPInstanceUID
    sr = archive["reportsi.dcm"]
    inst = dicomweb.retrieve_instance(sr.StudyInstanceUID, sr.SeriesInstanceUID,
                                    sr.SOPInstanceUID)
    assert inst.ContentSequence == sr.ContentSequence


def test_retrieve_big_endian_as_explicit_little_endian(dicomweb, web, settings):
    """Explicit VR Big Endian (retired) comes out little endian, its words swapped (before,
    pydicom refused to write it and the request failed)."""
    settings.DICOMWEB_BASE_URL = f"{web}/dicomweb"
    be = dcmread(sample("MR_small_bigendian.dcm"))
    dicomweb.store_instances([be])
    assert Instance.objects.get(sop_instance_uid=be.SOPInstanceUID).transfer_syntax_uid == \
        "1.2.840.10008.1.2.2"
    (got,) = dicomweb.retrieve_study(be.StudyInstanceUID)
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert got.SOPInstanceUID == be.SOPInstanceUID
    assert np.array_equal(got.pixel_array, be.pixel_array)


def test_metadata_at_each_level_and_bulk_data(dicomweb, archive):
    mf = archive["emri_small.dcm"]
    study_md = dicomweb.retrieve_study_metadata(mf.StudyInstanceUID)
    series_md = dicomweb.retrieve_series_metadata(mf.StudyInstanceUID, mf.SeriesInstanceUID)
    inst_md = dicomweb.retrieve_instance_metadata(mf.StudyInstanceUID, mf.SeriesInstanceUID,
                                                mf.SOPInstanceUID)
    assert study_md == series_md == [inst_md]
    assert inst_md["00080018"]["Value"] == [mf.SOPInstanceUID]
    uri = inst_md["7FE00010"]["BulkDataURI"]
    assert uri.endswith(f"/instances/{mf.SOPInstanceUID}/bulkdata/7FE00010")
    (pixels,) = dicomweb.retrieve_bulkdata(uri)
    assert pixels == mf.PixelData


def test_frames_uncompressed_and_as_stored(dicomweb, archive):
    mf = archive["emri_small.dcm"]  # 10 frames of 64x64 16-bit
    size = mf.Rows * mf.Columns * 2
    frames = dicomweb.retrieve_instance_frames(mf.StudyInstanceUID, mf.SeriesInstanceUID,
                                             mf.SOPInstanceUID, frame_numbers=[2, 5])
    assert frames == [mf.PixelData[size:2 * size], mf.PixelData[4 * size:5 * size]]
    jpeg = archive["SC_rgb_jpeg_dcmtk.dcm"]
    (stored,) = dicomweb.retrieve_instance_frames(
        jpeg.StudyInstanceUID, jpeg.SeriesInstanceUID, jpeg.SOPInstanceUID, frame_numbers=[1],
        media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),))
    assert stored[:2] == b"\xff\xd8"  # the JPEG stream as stored
    (decoded,) = dicomweb.retrieve_instance_frames(
        jpeg.StudyInstanceUID, jpeg.SeriesInstanceUID, jpeg.SOPInstanceUID, frame_numbers=[1],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert len(decoded) == jpeg.Rows * jpeg.Columns * 3


def test_rendered_and_thumbnail(dicomweb, archive, web, auth):
    ct = archive["CT_small.dcm"]
    jpeg = dicomweb.retrieve_instance_rendered(ct.StudyInstanceUID, ct.SeriesInstanceUID,
                                             ct.SOPInstanceUID)
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (ct.Columns, ct.Rows)
    png = dicomweb.retrieve_instance_rendered(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID,
        media_types=("image/png",), params={"window": "40,400", "viewport": "64,64"})
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and max(image.size) == 64
    mf = archive["emri_small.dcm"]
    frame = dicomweb.retrieve_instance_frames_rendered(
        mf.StudyInstanceUID, mf.SeriesInstanceUID, mf.SOPInstanceUID, frame_numbers=[3])
    assert frame[:2] == b"\xff\xd8"
    # dicomweb-client has no thumbnail call: plain HTTP
    thumb = requests.get(f"{web}/dicomweb/studies/{mf.StudyInstanceUID}/thumbnail",
                         headers={**auth, "Accept": "image/png"}, timeout=10)
    assert thumb.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 64)
