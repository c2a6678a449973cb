"""Retrieval of stored objects for the web faces (WADO-RS, WADO-URI): which files, in which
transfer syntax, their metadata from the index, frames, bulk data and rendered images.

Files are sent as received whenever the client accepts that; anything else is converted here
by dicomnet.transcode.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db.models import TextField
from django.db.models.functions import Cast
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian

from core.errors import BadRequest, NotAcceptable, NotFound
from dicomnet import transcode
from pacs.dicomjson import LONG_TEXT_VRS
from pacs.models import Instance
from pacs.rendering import Window, render
from pacs.storage import RangeReader, get_storage

CHUNK = 1 << 22

# Media types of a frame in each stored transfer syntax (PS3.18 Table 8.7.3-2 and -5).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
}
OCTET = "application/octet-stream"


@dataclass(frozen=True)
class StoredInstance:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_key: str
    file_size: int
    has_pixel_data: bool
    number_of_frames: int | None

    @contextmanager
    def file(self) -> Iterator[Path]:
        """The stored file by name (a temporary copy of an object store's)."""
        with get_storage().local_copy(self.file_key) as path:
            yield path


_FIELDS = ("series__study__study_instance_uid", "series__series_instance_uid",
           "sop_instance_uid", "sop_class_uid", "transfer_syntax_uid", "file_key", "file_size",
           "has_pixel_data", "number_of_frames")


def _filtered(study_uid: str, series_uid: str | None, sop_uid: str | None):
    qs = Instance.objects.filter(series__study__study_instance_uid=study_uid)
    if series_uid:
        qs = qs.filter(series__series_instance_uid=series_uid)
    if sop_uid:
        qs = qs.filter(sop_instance_uid=sop_uid)
    return qs.order_by("series__series_number", "series_id", "instance_number", "pk")


def instances(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
              ) -> list[StoredInstance]:
    """The stored instances of a study, series or one instance, in a stable order; 404 when
    there are none."""
    found = [StoredInstance(*row) for row in
             _filtered(study_uid, series_uid, sop_uid).values_list(*_FIELDS)]
    if not found:
        raise NotFound(_what(study_uid, series_uid, sop_uid) + " is not in the archive")
    return found


def _what(study_uid: str, series_uid: str | None, sop_uid: str | None) -> str:
    if sop_uid:
        return f"instance {sop_uid}"
    if series_uid:
        return f"series {series_uid}"
    return f"study {study_uid}"


_RELATIVE_BULK = re.compile(r'"BulkDataURI":\s*"bulkdata/')


def metadata_json(study_uid: str, series_uid: str | None, sop_uid: str | None,
                  base_url: str) -> bytes:
    """WADO-RS /metadata: the stored DICOM JSON of each instance as one JSON array, joined as
    text (never parsed); relative BulkDataURIs become absolute (PS3.18 F.2.6)."""
    rows = _filtered(study_uid, series_uid, sop_uid).annotate(
        text=Cast("metadata", TextField())).values_list(
        "series__series_instance_uid", "sop_instance_uid", "text")
    base = base_url.rstrip("/")
    parts = []
    for series, sop, text in rows.iterator(chunk_size=500):
        if '"BulkDataURI"' in text:
            url = f"{base}/studies/{study_uid}/series/{series}/instances/{sop}/bulkdata/"
            # SQLite keeps orjson's compact text; PostgreSQL's jsonb::text adds spaces
            text = _RELATIVE_BULK.sub(lambda m, url=url: f'"BulkDataURI":"{url}', text)
        parts.append(text.encode("utf-8"))
    if not parts:
        raise NotFound(_what(study_uid, series_uid, sop_uid) + " is not in the archive")
    return b"[" + b",".join(parts) + b"]"


# --- transfer syntaxes ----------------------------------------------------------------------

def can_convert(item: StoredInstance, target: str) -> bool:
    """Can the stored object be sent in ``target``? As stored always; to Explicit VR Little
    Endian when its pixel data, if any, can be decoded here (dicomnet.transcode)."""
    stored = item.transfer_syntax_uid
    if target in ("*", stored):
        return True
    if target != ExplicitVRLittleEndian:
        return False
    return not item.has_pixel_data or transcode.can_decompress(stored)


def choose_syntax(item: StoredInstance, acceptable: list[str]) -> str:
    """The first acceptable transfer syntax (in the client's order) we can send; "*" means
    as stored. Raises NotAcceptable when there is none."""
    for target in acceptable:
        if can_convert(item, target):
            return item.transfer_syntax_uid if target == "*" else target
    raise NotAcceptable(
        f"instance {item.sop_instance_uid} is stored as {item.transfer_syntax_uid} and cannot "
        f"be sent as {', '.join(acceptable)}")


def range_reader() -> RangeReader:
    """Positioned reads of stored files for one answer (pacs.storage.RangeReader)."""
    return get_storage().range_reader()


def part10(item: StoredInstance, target: str) -> Iterator[bytes]:
    """The instance as a Part 10 file in ``target``: the stored bytes in 1 MiB chunks, or a
    converted copy."""
    if target == item.transfer_syntax_uid:
        with get_storage().open(item.file_key) as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
        return
    yield converted(item, target)


def converted(item: StoredInstance, target: str) -> bytes:
    """A Part 10 copy in ``target`` (an uncompressed syntax), the SOP Instance UID kept."""
    with item.file() as path:
        ds = transcode.decompressed(path)
    ds.file_meta.TransferSyntaxUID = UID(target)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --- frames and bulk data -------------------------------------------------------------------

def frame_media_type(item: StoredInstance) -> str:
    """The media type of the stored frames (octet-stream when uncompressed)."""
    stored = item.transfer_syntax_uid
    if stored in transcode.NATIVE:
        return OCTET
    return FRAME_MEDIA_TYPES.get(stored, OCTET)


def parse_frame_list(text: str) -> list[int]:
    """The frame numbers of a request, at most PORTAL_WADO_MAX_FRAMES of them (each one is
    read, maybe decoded, and held until the answer is sent)."""
    items = [n for n in text.split(",") if n.strip()]
    if len(items) > settings.WADO_MAX_FRAMES:
        raise BadRequest(f"{len(items)} frames asked for: at most "
                         f"{settings.WADO_MAX_FRAMES} per request")
    try:
        numbers = [int(n) for n in items]
    except ValueError as exc:
        raise BadRequest(f"frame list {text[:100]!r} is not a comma-separated list of "
                         "numbers") from exc
    if not numbers or min(numbers) < 1:
        raise BadRequest("frame numbers start at 1")
    return numbers


def frames(item: StoredInstance, numbers: list[int], *, as_stored: bool) -> list[bytes]:
    """The frames ``numbers`` (1-based): as stored (compressed fragments joined), or
    uncompressed little-endian pixel values."""
    if not item.has_pixel_data:
        raise NotFound(f"instance {item.sop_instance_uid} has no pixel data")
    with item.file() as path:
        ds = dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFound(f"instance {item.sop_instance_uid} has {count} frame(s); "
                       f"no frame {missing[0]}")
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_encapsulated:
        if as_stored:
            encoded = list(generate_frames(ds.PixelData, number_of_frames=count))
            return [encoded[n - 1] for n in numbers]
        return [_le_bytes(pixel_array(ds, index=n - 1)) for n in numbers]
    data = ds.PixelData
    rows, columns = int(ds.Rows), int(ds.Columns)
    bits = int(ds.BitsAllocated) * rows * columns * int(ds.get("SamplesPerPixel", 1))
    if bits % 8:
        return [_le_bytes(pixel_array(ds, index=n - 1)) for n in numbers]
    size = bits // 8
    if not syntax.is_little_endian:
        return [_le_bytes(pixel_array(ds, index=n - 1)) for n in numbers]
    return [bytes(data[(n - 1) * size:n * size]) for n in numbers]


def _le_bytes(array: np.ndarray) -> bytes:
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def bulkdata(item: StoredInstance, tag_text: str) -> list[tuple[str, bytes]]:
    """The value of a bulk data element (the BulkDataURIs of /metadata) as (media type, bytes)
    parts. Pixel data gives its frames: as stored when compressed, else one raw part.
    ``tag_text`` is a tag, or a path into sequence items: ``60031010/1/60031011`` (the
    sequence, the item's index from 0, the element)."""
    path = _bulk_path(tag_text)
    tag = path[-1]
    if len(path) == 1 and tag == 0x7FE00010 and item.has_pixel_data:
        media = frame_media_type(item)
        if media != OCTET:
            count = item.number_of_frames or 1
            return [(media, f) for f in frames(item, list(range(1, count + 1)), as_stored=True)]
    with item.file() as file:
        ds = dcmread(file)
    if len(path) == 1:
        raw = ds.get_item(tag) if tag in ds else None
        if raw is not None and raw.VR in LONG_TEXT_VRS and isinstance(raw.value, bytes):
            return [(_media_of(ds, tag), raw.value)]  # a long text, as encoded in the file
        # an older index names an element inside a sequence by its tag alone: the first
        element = _find(ds, tag)
    else:
        element = _at(ds, path)
    if element is None or not isinstance(element.value, bytes):
        raise NotFound(f"instance {item.sop_instance_uid} has no bulk data {tag_text}")
    return [(_media_of(ds, tag) if len(path) == 1 else OCTET, element.value)]


ENCAPSULATED_DOCUMENT = 0x00420011
_PADDED_PDF_END = re.compile(rb"%%EOF(\r\n|\r|\n)?\x00$")
_DOCUMENT_MIME = 0x00420012


def _media_of(ds: Dataset, tag: int) -> str:
    """The media type of a bulk value: an encapsulated document's own (PDF, CDA, STL, OBJ,
    MTL...: MIME Type of Encapsulated Document, PS3.3 C.24.2), else application/octet-stream."""
    if tag == ENCAPSULATED_DOCUMENT:
        mime = str(ds.get(_DOCUMENT_MIME, "") and ds[_DOCUMENT_MIME].value or "").strip()
        if mime and "/" in mime:
            return mime.lower()
    return OCTET


def document(item: StoredInstance) -> tuple[str, bytes] | None:
    """An encapsulated document's media type and bytes, or None for another object. Its
    rendered form is the document itself (PS3.18 8.7.4)."""
    with item.file() as path:
        ds = dcmread(path, specific_tags=[ENCAPSULATED_DOCUMENT, _DOCUMENT_MIME])
    if ENCAPSULATED_DOCUMENT not in ds or not isinstance(ds[ENCAPSULATED_DOCUMENT].value,
                                                         bytes):
        return None
    data, media = ds[ENCAPSULATED_DOCUMENT].value, _media_of(ds, ENCAPSULATED_DOCUMENT)
    if media == "application/pdf" and _PADDED_PDF_END.search(data[-8:]):
        data = data[:-1]  # the padding of an odd-length value (PS3.5 7.1.1), not the PDF's
    return media, data


def _bulk_path(text: str) -> list[int]:
    """``TAG`` or ``TAG/INDEX/TAG/...`` as [tag, index, tag, ...]."""
    pieces = text.strip("/").split("/")
    if len(pieces) % 2 == 0 or len(pieces) > 31:
        raise BadRequest(f"{text!r} is not a tag or a tag/item/tag path")
    path = []
    for number, piece in enumerate(pieces):
        try:
            path.append(int(piece, 16) if number % 2 == 0 else int(piece))
        except ValueError as exc:
            raise BadRequest(f"{text!r} is not a tag or a tag/item/tag path") from exc
        if number % 2 == 0 and len(piece) != 8:
            raise BadRequest(f"{piece!r} is not an 8-digit tag")
    return path


def _at(ds: Dataset, path: list[int]):
    """The element at ``path`` ([sequence tag, item index, ..., tag]), or None."""
    for position in range(0, len(path) - 1, 2):
        sequence, index = path[position], path[position + 1]
        if sequence not in ds or ds[sequence].VR != "SQ" or not \
                0 <= index < len(ds[sequence].value):
            return None
        ds = ds[sequence].value[index]
    return ds[path[-1]] if path[-1] in ds else None


def _find(ds: Dataset, tag: int):
    if tag in ds:
        return ds[tag]
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                found = _find(item, tag)
                if found is not None:
                    return found
    return None


# --- rendered ---------------------------------------------------------------------------------

def rendered(item: StoredInstance, *, frame: int = 1, media_type: str = "image/jpeg",
             window: Window | None = None, size: int | None = None, quality: int = 90
             ) -> bytes:
    if not item.has_pixel_data:
        raise NotAcceptable(f"instance {item.sop_instance_uid} has no image to render")
    with item.file() as path:
        return render(str(path), frame=frame - 1, max_size=size, media_type=media_type,
                      window=window, quality=quality)


def representative(items: list[StoredInstance]) -> StoredInstance:
    """The instance that stands for a study or series in a thumbnail: the middle image."""
    images = [i for i in items if i.has_pixel_data] or items
    return images[len(images) // 2]
