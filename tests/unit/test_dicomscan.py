"""The store path's one-pass header reader against pydicom, on every sample file we have."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files

from core.errors import InvalidDicom, ServiceError
from pacs.dicomfile import read_header
from pacs.dicomjson import header_json
from pacs.dicomscan import scan
from tests.samples import _data_store, dataset_bytes, encoded, sample


def _all_samples() -> list[Path]:
    roots = [Path(pydicom.__file__).parent / "data" / "test_files", _data_store()]
    files = {p for root in roots for p in root.rglob("*") if p.is_file()}
    return sorted(files | {Path(p) for p in get_charset_files("*.dcm")})


ALL = _all_samples()


def _pydicom_header(data: bytes) -> tuple[dict, int]:
    """What the store path computes without the scanner: header_json of pydicom's read, and
    where pydicom stopped (before the pixel data)."""
    buf = io.BytesIO(data)
    ds = dcmread(buf, stop_before_pixels=True)
    metadata = header_json(ds, has_pixel_data=False)
    return metadata, buf.tell()


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_same_header_as_pydicom_or_falls_back(path):
    data = path.read_bytes()
    scanned = scan(data)
    if scanned is None:
        return  # pydicom reads this one (or rejects it), as before
    metadata, end = _pydicom_header(data)
    assert scanned.metadata == metadata
    assert scanned.end == end
    assert scanned.transfer_syntax_uid == dcmread(path, stop_before_pixels=True
                                                  ).file_meta.TransferSyntaxUID


def test_scans_what_modalities_send():
    """The common encodings take the fast path: Explicit and Implicit VR LE, compressed,
    sequences (SR), Latin-1 and UTF-8 text, US-or-SS pixel values in Implicit VR."""
    names = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm",
             "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm",
             "test-SR.dcm", "reportsi.dcm"]
    for name in names:
        assert scan(sample(name).read_bytes()) is not None, name
    charsets = {Path(p).name: Path(p) for p in get_charset_files("*.dcm")}
    for name in ("chrFren.dcm", "chrGerm.dcm", "chrSQEncoding1.dcm"):
        data = charsets[name].read_bytes()
        if b"ISO_IR 100" in data or b"ISO_IR 192" in data:
            assert scan(data) is not None, name
    fast = sum(scan(p.read_bytes()) is not None for p in ALL)
    assert fast > len(ALL) / 2


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "image_dfl.dcm", "priv_SQ.dcm",
                                  "explicit_VR-UN.dcm", "no_meta.dcm"])
def test_leaves_the_unusual_to_pydicom(name):
    """Big endian, deflate, private elements in Implicit VR, VR UN, no file meta."""
    assert scan(sample(name).read_bytes()) is None


def test_iso2022_text_goes_to_pydicom():
    charsets = {Path(p).name: Path(p) for p in get_charset_files("*.dcm")}
    assert scan(charsets["chrH31.dcm"].read_bytes()) is None  # ISO 2022 IR 13 / 87


def test_truncated_or_malformed_headers_go_to_pydicom():
    data = sample("CT_small.dcm").read_bytes()
    end = scan(data).end
    for cut in (140, 300, end // 2, end - 3):
        assert scan(data[:cut]) is None, cut
    broken = bytearray(data)
    broken[end - 40:end - 38] = b"ZZ"  # not a VR
    assert scan(bytes(broken)) is None


def test_empty_sequence_has_no_value():
    ds = dcmread(sample("CT_small.dcm"))
    ds.ReferencedImageSequence = []
    ds.ProcedureCodeSequence = [pydicom.Dataset()]
    ds.ProcedureCodeSequence[0].ReferencedSOPSequence = []
    scanned = scan(encoded(ds))
    assert scanned.metadata["00081140"] == {"vr": "SQ"}
    assert scanned.metadata["00081032"] == {"vr": "SQ", "Value": [{"00081199": {"vr": "SQ"}}]}
    assert scanned.metadata == _pydicom_header(encoded(ds))[0]


def test_text_quirks_as_the_pydicom_path():
    """Latin-1 text, padding, empty values and components, numbers with spaces."""
    ds = dcmread(sample("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jörg=  ^x\\Smith^J==Ph  "
    ds.ReferringPhysicianName = "Ref^Phys^^^="
    ds.StudyDescription = "  leading and trailing  "
    ds.InstitutionName = "Zürich"
    ds.ImageType = ["", "PRIMARY ", " AXIAL"]
    ds.add_new(0x00081090, "LO", "  Model \\ two\\\\")
    ds.add_new(0x00204000, "LT", "line1\\line2  \r\n ")
    ds.add_new(0x00321060, "LO", "")
    ds.add_new(0x00180050, "DS", " 1.50 \\2e3\\-0.0")
    ds.add_new(0x00200013, "IS", " 12 \\ -3")
    ds.add_new(0x00080030, "TM", "101010.5 ")
    data = encoded(ds)
    scanned = scan(data)
    assert scanned is not None
    assert scanned.metadata == _pydicom_header(data)[0]
    assert scanned.metadata["00100010"]["Value"] == [
        {"Alphabetic": "Müller^Jörg", "Ideographic": "  ^x"},
        {"Alphabetic": "Smith^J", "Ideographic": "", "Phonetic": "Ph"}]


def test_damaged_headers_are_refused_cleanly():
    """Random damage to real headers: either read, or refused with a ServiceError (0xC000 family
    on the wire), never another exception (it would be a 0x0110 'processing failure')."""
    rng = random.Random(7)
    sources = [sample(name).read_bytes() for name in
               ("CT_small.dcm", "test-SR.dcm", "MR_small_implicit.dcm", "reportsi.dcm")]
    for _ in range(400):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(132, min(len(data), 3000))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[:rng.randrange(132, len(data))]
        try:
            read_header(bytes(data))
        except ServiceError:
            pass


def test_sequences_nested_too_deep_are_refused():
    base = sample("CT_small.dcm").read_bytes()
    start = len(base) - len(dataset_bytes(sample("CT_small.dcm")))
    item = b""
    for _ in range(5000):  # (0008,1140) SQ of undefined length holding one item, recursively
        item = (b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff"
                + item + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    data = base[:start] + item
    assert scan(data) is None
    with pytest.raises(InvalidDicom):
        read_header(data)
