"""Every compressed transfer syntax we store decodes to the image a reference decoder gives.

The images are made here (8-, 12- and 16-bit grey, 8-bit colour), compressed by DCMTK
(dcmcjpeg, dcmcjpls, dcmcrle) or, for JPEG 2000 which DCMTK lacks, by pydicom's encoder. A
lossless syntax must give back the original pixels exactly. A lossy one must give what
DCMTK's own decoders (dcmdjpeg, dcmdjpls) give, within the rounding of two inverse DCT and
chroma upsampling implementations (a unit on average), and be as faithful to the original
image as the reference is (its PSNR no more than 0.5 dB lower).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomnet.transcode import decompressed
from tests.samples import synthetic_image

pytestmark = pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="needs DCMTK")

# (tool, options, reference decoder or "" for lossless, transfer syntax DCMTK writes)
DCMTK_CODECS = {
    "jpeg-baseline": ("dcmcjpeg", ["+eb"], "dcmdjpeg", JPEGBaseline8Bit),
    "jpeg-extended-12": ("dcmcjpeg", ["+ee"], "dcmdjpeg", JPEGExtended12Bit),
    "jpeg-lossless-sv1": ("dcmcjpeg", ["+e1"], "", JPEGLosslessSV1),
    "jpeg-ls-lossless": ("dcmcjpls", ["+el"], "", JPEGLSLossless),
    "jpeg-ls-near": ("dcmcjpls", ["+en"], "dcmdjpls", JPEGLSNearLossless),
    "rle": ("dcmcrle", [], "", RLELossless),
}
# which images each codec is defined for (PS3.5 A.4: bits stored per process)
IMAGES_FOR = {
    "jpeg-baseline": ("grey8", "rgb8"),
    "jpeg-extended-12": ("grey12",),
    "jpeg-lossless-sv1": ("grey8", "grey12", "grey16", "rgb8"),
    "jpeg-ls-lossless": ("grey8", "grey12", "grey16", "rgb8"),
    "jpeg-ls-near": ("grey8", "grey12"),
    "rle": ("grey8", "grey12", "grey16", "rgb8"),
}


def _psnr(image: np.ndarray, original: np.ndarray, peak: int) -> float:
    error = image.astype(np.float64) - original.astype(np.float64)
    return float(10 * np.log10(peak ** 2 / max(float(np.mean(error ** 2)), 1e-9)))


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("codec,kind", [(c, k) for c, kinds in IMAGES_FOR.items()
                                        for k in kinds])
def test_dcmtk_encoded_pixel_data_decodes_like_the_reference(codec, kind, tmp_path: Path):
    tool, options, reference, syntax = DCMTK_CODECS[codec]
    original = synthetic_image(kind, frames=2)
    source, compressed = tmp_path / "in.dcm", tmp_path / "c.dcm"
    original.save_as(source, enforce_file_format=True)
    _run(tool, *options, "+un", str(source), str(compressed)) if tool != "dcmcrle" else \
        _run(tool, str(source), str(compressed))
    assert dcmread(compressed).file_meta.TransferSyntaxUID == syntax

    ours = decompressed(compressed)
    assert not ours.file_meta.TransferSyntaxUID.is_compressed
    assert ours.SOPInstanceUID == dcmread(compressed).SOPInstanceUID
    if not reference:
        assert np.array_equal(ours.pixel_array, original.pixel_array)
        return
    _run(reference, str(compressed),
         str(tmp_path / "ref.dcm"))
    expected = dcmread(tmp_path / "ref.dcm").pixel_array
    assert ours.pixel_array.shape == expected.shape
    # as close to the reference as two IDCTs (and chroma upsampling filters) allow, and as
    # faithful to the original image as the reference decoder is
    difference = np.abs(ours.pixel_array.astype(np.int32) - expected.astype(np.int32))
    assert difference.mean() <= 1.0, f"{codec} {kind}: {difference.mean():.2f} on average"
    peak = (1 << original.BitsStored) - 1
    ours_psnr = _psnr(ours.pixel_array, original.pixel_array, peak)
    reference_psnr = _psnr(expected, original.pixel_array, peak)
    assert ours_psnr >= reference_psnr - 0.5, (codec, kind, ours_psnr, reference_psnr)
    assert ours.LossyImageCompression == "01"


@pytest.mark.parametrize("kind", ["grey8", "grey12", "grey16", "rgb8"])
def test_jpeg_2000_lossless_gives_the_original_pixels(kind, tmp_path: Path):
    original = synthetic_image(kind)
    encoded = synthetic_image(kind)
    encoded.SOPInstanceUID = original.SOPInstanceUID
    encoded.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    encoded.save_as(tmp_path / "j2k.dcm", enforce_file_format=True)
    ours = decompressed(tmp_path / "j2k.dcm")
    assert np.array_equal(ours.pixel_array, original.pixel_array)


def test_jpeg_2000_lossy_stays_close(tmp_path: Path):
    original = synthetic_image("grey12")
    encoded = synthetic_image("grey12")
    encoded.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_psnr=[60])
    encoded.save_as(tmp_path / "j2k.dcm", enforce_file_format=True)
    ours = decompressed(tmp_path / "j2k.dcm").pixel_array
    assert _psnr(ours, original.pixel_array, 4095) > 50
