"""dicomnet.transcode: stored objects with native pixel data for peers that take no other syntax."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom.dsutils import decode, encode

from dicomnet.transcode import CannotConvert, can_decompress, decompressed
from tests.samples import COMPRESSED, UNCOMPRESSED, encoded, sample


@pytest.mark.parametrize("name", [*COMPRESSED, *UNCOMPRESSED])
def test_native_pixels_same_instance(name):
    original = dcmread(sample(name))
    ds = decompressed(sample(name))
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == original.file_meta.MediaStorageSOPInstanceUID
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    assert not ds.file_meta.TransferSyntaxUID.is_deflated
    # what a peer that takes Implicit VR Little Endian only receives
    received = decode(io.BytesIO(encode(ds, True, True)), True, True)
    if "PixelData" in original:
        received.file_meta = ds.file_meta
        received.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        assert np.array_equal(received.pixel_array, original.pixel_array)
    else:
        assert received == original


def test_lossy_jpeg_is_marked_lossy_when_the_file_did_not_say():
    ds = dcmread(sample("SC_rgb_jpeg_dcmtk.dcm"))
    del ds.LossyImageCompression, ds.LossyImageCompressionMethod

    out = decompressed(io.BytesIO(encoded(ds)))
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_10918_1"
    assert out.PhotometricInterpretation == "RGB"  # decoded from YBR_FULL


def test_lossless_stays_unmarked():
    out = decompressed(sample("MR_small_jp2klossless.dcm"))
    assert out.get("LossyImageCompression") in (None, "00")


def test_damaged_or_undecodable_pixel_data_cannot_convert():
    ds = dcmread(sample("SC_rgb_jpeg_dcmtk.dcm"))
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
    with pytest.raises(CannotConvert, match="cannot decode"):
        decompressed(io.BytesIO(encoded(ds)))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no decoder
    with pytest.raises(CannotConvert, match="no decoder"):
        decompressed(io.BytesIO(encoded(ds)))


def test_can_decompress():
    assert can_decompress(JPEGBaseline8Bit) and can_decompress(ExplicitVRLittleEndian)
    assert can_decompress("1.2.840.10008.1.2.1.99") and can_decompress("1.2.840.10008.1.2.2")
    assert not can_decompress("1.2.840.10008.1.2.4.100")
    assert not can_decompress("1.2.3.4")


def test_one_choice_of_syntax_for_every_cstore_sender():
    from dicomnet.transcode import sending_syntax

    jpeg, explicit, implicit = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1",
                                "1.2.840.10008.1.2")
    assert sending_syntax(jpeg, {jpeg, explicit}) == (jpeg, False)  # as stored first
    assert sending_syntax(jpeg, {implicit, explicit}) == (explicit, True)
    assert sending_syntax(jpeg, {implicit}) == (implicit, True)
    assert sending_syntax(explicit, {implicit}) == (implicit, True)  # native: re-encoded only
    assert sending_syntax(jpeg, {"1.2.840.10008.1.2.4.90"}) == (None, False)
    assert sending_syntax("1.2.3.4.5", {explicit}) == (None, False)  # no decoder for it


def test_c_get_proposes_each_stored_syntax_in_a_context_of_its_own():
    from dicomnet.scu import GET_UNCOMPRESSED, MAX_CONTEXTS, get_contexts

    mr, j2k = "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.4.90"
    contexts = get_contexts({mr: {j2k}})
    assert [(c.abstract_syntax, c.transfer_syntax) for c in contexts] == [
        (mr, GET_UNCOMPRESSED), (mr, [j2k])]
    unknown = get_contexts({mr: set()})  # the peer named the class, not its syntaxes
    assert len(unknown) == 11 and all(len(c.transfer_syntax) == 1 for c in unknown[1:])
    many = {f"1.2.840.10008.5.1.4.1.1.{n}": set() for n in range(1, 20)}
    fallback = get_contexts(many)  # 19 x 11 contexts do not fit: one per class, every syntax
    assert len(fallback) < MAX_CONTEXTS and len(fallback[0].transfer_syntax) == 12
    assert get_contexts(None) == fallback
