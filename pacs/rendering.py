"""PNG previews of stored images (decoding compressed pixel data through pylibjpeg)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from pacs.errors import PacsError


class NotRenderable(PacsError):
    http_status = 415


def render_png(path: str, *, frame: int = 0, max_size: int | None = None) -> bytes:
    try:
        ds = dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:
        raise NotRenderable(f"cannot decode pixel data: {str(exc)[:120]}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[min(frame, frames - 1)]
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        samples = 3
    if samples == 1:
        image = Image.fromarray(_to_8bit_gray(pixels, ds, photometric), mode="L")
    else:
        image = Image.fromarray(_to_8bit(pixels).astype(np.uint8), mode="RGB")
    if max_size:
        image.thumbnail((max_size, max_size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _to_8bit_gray(pixels: np.ndarray, ds, photometric: str) -> np.ndarray:
    values = apply_modality_lut(pixels, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
    out = _to_8bit(values)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out.astype(np.uint8)


def _to_8bit(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values - low) * (255.0 / (high - low))).clip(0, 255).astype(np.uint8)
