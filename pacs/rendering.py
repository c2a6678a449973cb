"""Rendered images (PNG previews, WADO-RS /rendered and /thumbnail, WADO-URI image/jpeg) of
stored images, decoding compressed pixel data through pylibjpeg."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from PIL import Image
from pydicom import dcmread
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from core.errors import ServiceError


class NotRenderable(ServiceError):
    http_status = 415


class TooManyPixels(ServiceError):
    """An image larger than PORTAL_RENDER_MAX_PIXELS: decoding it would cost gigabytes."""

    http_status = 413


def check_pixels(ds, frame: int = 0) -> None:
    """Refuse an image whose decoded frame would exceed PORTAL_RENDER_MAX_PIXELS, by its
    header, and for compressed data also by the frame's own codestream (whose size, not the
    header's, is what a decoder allocates)."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    limit = settings.RENDER_MAX_PIXELS
    if rows * columns * samples > limit:
        raise TooManyPixels(f"{columns}x{rows} image ({samples} sample(s) per pixel): more "
                            f"than the {limit // 1_000_000} Mpixel rendered at most")
    if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_encapsulated:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        size = codestream_size(_first_fragment(ds.PixelData, frame, frames))
        if size is not None and size[0] * size[1] * samples > limit:
            raise TooManyPixels(f"the compressed frame is {size[0]}x{size[1]}: more than the "
                                f"{limit // 1_000_000} Mpixel rendered at most")


def _first_fragment(pixel_data: bytes, frame: int, frames: int = 1) -> bytes:
    """The start of frame ``frame``'s codestream (its first fragment: the headers)."""
    from pydicom.encaps import generate_frames

    try:
        for number, data in enumerate(generate_frames(pixel_data,
                                                      number_of_frames=max(frames, 1))):
            if number == frame:
                return data
    except (ValueError, StopIteration):
        pass
    return b""


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG / JPEG-LS frame header (SOFn) or a JPEG 2000 image and
    tile size (SIZ) at the start of ``data``; None when neither is found."""
    if data[:4] == b"\xff\x4f\xff\x51" and len(data) >= 22:  # J2K: SOC then SIZ
        xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", data, 8)
        return xsiz - xo, ysiz - yo
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        sof = marker in (0xF7, *range(0xC0, 0xD0)) and marker not in (0xC4, 0xC8, 0xCC)
        if sof and pos + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        pos += 2 + length
    return None


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
    check_pixels(dcmread(path, stop_before_pixels=True))  # before the file is read whole
    try:
        ds = dcmread(path)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        frame = min(frame, frames - 1)
    except Exception as exc:
        raise NotRenderable(f"cannot read the image: {str(exc)[:120]}") from exc
    check_pixels(ds, frame)
    try:
        # decode only the frame shown
        pixels = pixel_array(ds, index=frame) if frames > 1 else ds.pixel_array
    except Exception as exc:
        raise NotRenderable(f"cannot decode pixel data: {str(exc)[:120]}") from exc
    if max_size:  # a preview: thin it out before the value arithmetic (twice what is kept)
        step = max(1, min(pixels.shape[0], pixels.shape[1]) // (2 * max_size))
        pixels = pixels[::step, ::step]
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
    values = values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values - low) * (255.0 / (high - low))).clip(0, 255).astype(np.uint8)


def _apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing straight to 0..255 (LINEAR, LINEAR_EXACT, SIGMOID)."""
    center, width = window.center, max(window.width, 1.0)
    values = values.astype(np.float32)
    if window.function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif window.function == "LINEAR_EXACT":
        out = ((values - center) / width + 0.5) * 255.0
    else:
        out = ((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
    return out.clip(0, 255)
