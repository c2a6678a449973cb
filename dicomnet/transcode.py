"""Stored objects in another transfer syntax than they came in: one place for every face that
sends them (WADO-RS, WADO-URI, C-GET, C-MOVE and send jobs).

Files are kept as received. When a peer cannot take the stored syntax, the object is sent with
native (uncompressed) pixel data: decoded with pydicom's decoders (pylibjpeg for JPEG, JPEG-LS,
JPEG 2000 and RLE), its SOP Instance UID kept, as Orthanc and dcm4chee do. Decoding a lossy
syntax reproduces the image that was stored, so it stays the same instance; it is marked
Lossy Image Compression "01" (PS3.3 C.7.6.1.1.5), which most lossy files already say.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

from core.errors import NotAcceptable

UNCOMPRESSED = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian})
# the uncompressed syntaxes an object is sent in when the peer takes not its own, preferred first
SENT_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
DEFLATED = DeflatedExplicitVRLittleEndian
NATIVE = UNCOMPRESSED | {DEFLATED}  # the pixel data, if any, is not encapsulated

# Syntaxes that are lossy whatever their parameters, and the method they name (PS3.3
# C.7.6.1.1.5.1). JPEG 2000 and JPEG-LS near-lossless may be lossless: their files say.
_LOSSY_METHODS = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1"}


class CannotConvert(NotAcceptable):
    """The stored object cannot be decoded here (no decoder for its syntax, or bad data).
    HTTP faces answer 406: the client may still take it as stored."""


def can_decompress(transfer_syntax: str) -> bool:
    """Can an object stored in ``transfer_syntax`` be given native pixel data here?"""
    if transfer_syntax in NATIVE:
        return True
    try:
        return get_decoder(UID(transfer_syntax)).is_available
    except (NotImplementedError, ValueError):
        return False


def sending_syntax(stored: str, accepted: Collection[str]) -> tuple[str | None, bool]:
    """The transfer syntax to send a stored object in, of those the peer ``accepted`` for its
    SOP class, and whether it must be decompressed for it: as stored when the peer takes that,
    else in an uncompressed syntax when the pixel data can be decoded here; (None, False) when
    it cannot be sent. Every C-STORE sender asks this (send jobs, forwarding, C-MOVE, C-GET)."""
    if stored in accepted:
        return stored, False
    if can_decompress(stored):
        for syntax in SENT_UNCOMPRESSED:
            if syntax in accepted:
                return syntax, True
    return None, False


def decompressed(path: Path | str) -> Dataset:
    """The stored object at ``path`` with native pixel data and the same SOP Instance UID.

    Its file meta names Explicit VR Little Endian unless it was stored in another uncompressed
    syntax; whoever sends it encodes it in the syntax the peer took (any uncompressed one).
    Raises CannotConvert when the pixel data cannot be decoded."""
    ds = dcmread(path)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if stored == ExplicitVRBigEndian:
        _to_little_endian(ds)
        return ds
    if stored in UNCOMPRESSED:
        return ds
    if stored == DEFLATED or "PixelData" not in ds:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # read (inflated) in memory
        return ds
    if not can_decompress(stored):
        raise CannotConvert(f"no decoder for {stored.name} here")
    try:
        ds.decompress(generate_instance_uid=False)
    except Exception as exc:  # the decoders raise many kinds on damaged data
        raise CannotConvert(f"cannot decode the {stored.name} pixel data: {exc}") from exc
    if stored in _LOSSY_METHODS and ds.get("LossyImageCompression") != "01":
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = _LOSSY_METHODS[stored]
    return ds


_WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _to_little_endian(ds: Dataset) -> None:
    """Explicit VR Big Endian (retired) to Explicit VR Little Endian. pydicom decodes numbers
    and text whatever the byte order, but keeps OW/OF/OL/OD/OV values as the stored bytes,
    and refuses to write them in the other order (it would not swap them): swap them here."""
    for elem in ds.iterall():
        size = _WORD_SIZES.get(elem.VR)
        if size and isinstance(elem.value, bytes) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, dtype=f">u{size}").astype(
                f"<u{size}").tobytes()
    ds.set_original_encoding(False, True, ds.original_character_set)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
