"""Rendered images (PNG previews, WADO-RS /rendered and /thumbnail, WADO-URI image/jpeg) of
stored images, decoding compressed pixel data through pylibjpeg."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from pacs.errors import PacsError


class NotRenderable(PacsError):
    http_status = 415


@dataclass(frozen=True)
class Window:
    """A VOI window asked for by the client (PS3.18 8.3.5.1.4): center, width, function."""

    center: float
    width: float
    function: str = "LINEAR"


IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF"}


def render_png(path: str, *, frame: int = 0, max_size: int | None = None) -> bytes:
    return render(path, frame=frame, max_size=max_size, media_type="image/png")


def render(path: str, *, frame: int = 0, max_size: int | None = None,
           media_type: str = "image/png", window: Window | None = None, quality: int = 90
           ) -> bytes:
    """Frame ``frame`` (0-based) as an 8-bit image: the client's window if given, else the
    file's own window (or its VOI LUT), else the full range of the values."""
    try:
        ds = dcmread(path)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        # decode only the frame shown
        pixels = pixel_array(ds, index=min(frame, frames - 1)) if frames > 1 else ds.pixel_array
    except Exception as exc:
        raise NotRenderable(f"cannot decode pixel data: {str(exc)[:120]}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        samples = 3
    if samples == 1:
        image = Image.fromarray(_to_8bit_gray(pixels, ds, photometric, window), mode="L")
    else:
        image = Image.fromarray(_to_8bit(pixels).astype(np.uint8), mode="RGB")
    if max_size:
        image.thumbnail((max_size, max_size))
    out = io.BytesIO()
    fmt = IMAGE_FORMATS.get(media_type, "PNG")
    if fmt == "JPEG":
        image.save(out, format=fmt, quality=max(1, min(quality, 100)))
    else:
        image.save(out, format=fmt)
    return out.getvalue()


def _to_8bit_gray(pixels: np.ndarray, ds, photometric: str, window: Window | None
                  ) -> np.ndarray:
    values = apply_modality_lut(pixels, ds)
    if window is not None:
        out = _apply_window(values, window)  # already 0..255: no stretching
    else:
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


def _apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing straight to 0..255 (LINEAR, LINEAR_EXACT, SIGMOID)."""
    center, width = window.center, max(window.width, 1.0)
    values = values.astype(np.float64)
    if window.function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif window.function == "LINEAR_EXACT":
        out = ((values - center) / width + 0.5) * 255.0
    else:
        out = ((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
    return out.clip(0, 255)
