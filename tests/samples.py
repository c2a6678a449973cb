"""Sample DICOM files shipped by pydicom and pydicom-data (no download needed)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pydicom
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

_PYDICOM = Path(pydicom.__file__).parent / "data" / "test_files"


def _data_store() -> Path:
    import data_store  # from the pydicom-data package

    return Path(data_store.__file__).parent / "data"


def sample(name: str) -> Path:
    for base in (_PYDICOM, _data_store(), _PYDICOM / "dicomdirtests"):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(name)


def dicomdir_tests() -> Path:
    return _PYDICOM / "dicomdirtests"


def dataset_bytes(path: Path) -> bytes:
    """The dataset part of a Part 10 file (what travels in a C-STORE), without the meta."""
    data = path.read_bytes()
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    meta_end = 132 + int(ds.file_meta.FileMetaInformationGroupLength) + 12
    return data[meta_end:]


def encoded(ds) -> bytes:
    """A dataset as Part 10 bytes, e.g. a sample changed by a test."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and never the same one twice in this test process.

    The kernel may give the port it just gave back again: two calls in a row (a worker's
    DIMSE and HL7 ports) then named one port, and since our listeners bind with SO_REUSEPORT
    both bound it and the kernel split the connections between them (a storescu answered by
    the HL7 listener in CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


# Transfer syntaxes stored "as received" (file name -> transfer syntax UID).
COMPRESSED = {
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "JPGExtended.dcm": "1.2.840.10008.1.2.4.51",  # JPEG extended
    "JPEG-LL.dcm": "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",  # RLE lossless
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",  # deflated explicit VR LE
}
UNCOMPRESSED = [
    "CT_small.dcm",  # explicit VR LE
    "MR_small_implicit.dcm",  # implicit VR LE
    "MR_small_bigendian.dcm",  # explicit VR BE
    "emri_small.dcm",  # multi-frame MR
    "reportsi.dcm",  # SR, no pixel data
    "rtplan.dcm",  # RT plan, nested sequences
]


def shared_testdata(name: str) -> Path:
    """Oracle data handed to the project in ../shared/testdata (not committed: third-party
    test data). Looked up beside the checkout, then at /work/shared, or $PORTAL_TESTDATA."""
    import os

    import pytest

    root = Path(__file__).resolve().parent.parent
    for base in (os.environ.get("PORTAL_TESTDATA"), root.parent / "shared" / "testdata",
                 Path("/work/shared/testdata")):
        if base and (Path(base) / name).exists():
            return Path(base) / name
    pytest.skip(f"oracle data {name!r} not found (set PORTAL_TESTDATA)")


def synthetic_image(kind: str, frames: int = 1) -> Dataset:
    """A made-up image with edges and gradients (to exercise every DCT coefficient):
    ``kind`` is grey8, grey12, grey16 or rgb8; a Secondary Capture in Explicit VR LE."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.Modality = "CODEC", "OT"
    ds.Rows, ds.Columns = 48, 40
    y, x = np.mgrid[0:48, 0:40]
    bits = {"grey8": 8, "rgb8": 8, "grey12": 12, "grey16": 16}[kind]
    top = (1 << bits) - 1
    plane = ((x * 97 + y * 31) % (top + 1)) ^ ((x // 8 + y // 8) % 2 * (top // 3))
    plane = np.clip(plane, 0, top)
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    dtype = np.uint8 if bits == 8 else np.uint16
    if kind == "rgb8":
        pixels = np.stack([plane, top - plane, (plane * 3) % 256], axis=-1).astype(dtype)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.PlanarConfiguration = 0
    else:
        pixels = plane.astype(dtype)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if frames > 1:
        pixels = np.stack([pixels] * frames)
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    return ds
