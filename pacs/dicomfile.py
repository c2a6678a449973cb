"""Reading what the index needs from Part 10 bytes, strictly: a truncated or malformed file is
an error, never a half-read dataset (pydicom alone stops silently at the end of the data)."""

from __future__ import annotations

import functools
import io
import re
import struct
from collections.abc import MutableSequence
from typing import Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from core.errors import InvalidDicom, MissingAttribute
from pacs.dicomjson import PIXEL_DATA_REFERENCE, header_json
from pacs.dicomscan import ITEM, PIXEL_TAGS, SEQ_DELIM, scan

# PS3.5 9.1: UIDs are digits and dots, at most 64 characters.
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class _StrictBytesIO(io.BytesIO):
    """A buffer that raises when a read or seek runs past the end of the data."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._size = len(data)

    def read(self, n: int | None = -1) -> bytes:
        chunk = super().read(n)
        if n is not None and n > 0 and 0 < len(chunk) < n:
            raise InvalidDicom(f"truncated: data ends inside an element at byte {self._size}")
        return chunk

    def seek(self, pos: int, whence: int = 0) -> int:
        new = super().seek(pos, whence)
        if new > self._size:
            raise InvalidDicom("truncated: an element runs past the end of the data")
        return new


class ParsedHeader:
    """A received file's header: its DICOM JSON (pixel data as a bulk reference) and, read on
    demand with pydicom, the data set before the pixel data."""

    def __init__(self, data: bytes, transfer_syntax_uid: str, has_pixel_data: bool,
                 metadata: dict[str, Any], dataset: Dataset | None = None) -> None:
        self._data = data
        self.transfer_syntax_uid = transfer_syntax_uid
        self.has_pixel_data = has_pixel_data
        self.metadata = metadata
        self._dataset = dataset

    @property
    def dataset(self) -> Dataset:
        """pydicom's reading, for what the JSON alone does not give (a new patient, study or
        series takes its attributes from it). The header was checked already."""
        if self._dataset is None:
            self._dataset = _read_dataset(_StrictBytesIO(self._data))
        return self._dataset

    def value(self, keyword: str) -> Any:
        """The first value of an attribute, as DICOM JSON has it (None if absent or empty)."""
        values = self.metadata.get(_json_key(keyword), {}).get("Value")
        return values[0] if values else None

    def text(self, keyword: str) -> str:
        """A text attribute's value, multi-values joined by backslashes."""
        values = self.metadata.get(_json_key(keyword), {}).get("Value") or []
        return "\\".join("" if v is None else str(v) for v in values)

    def integer(self, keyword: str) -> int | None:
        return _as_int(self.value(keyword))

    def require_uid(self, keyword: str) -> str:
        value = self.text(keyword).strip().rstrip("\x00")
        if not value:
            raise MissingAttribute(f"{keyword} is missing")
        if len(value) > 64 or not UID_RE.match(value):
            raise MissingAttribute(f"{keyword} is not a valid UID")
        return value


@functools.cache
def _json_key(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


def _read_dataset(buf: _StrictBytesIO) -> Dataset:
    try:
        ds = dcmread(buf, stop_before_pixels=True)
        ds.SOPInstanceUID  # noqa: B018 - force decoding of the raw header elements we need
    except InvalidDicom:
        raise
    except Exception as exc:  # pydicom raises many types on garbage (OSError, RecursionError..)
        raise InvalidDicom(f"not a readable DICOM file: {_short(exc)}") from exc
    return ds


def read_header(data: bytes) -> ParsedHeader:
    """Parse Part 10 bytes up to the pixel data and check the pixel data's framing.

    The header is read by pacs.dicomscan where it can (the common encodings, ~10x faster),
    else by pydicom; both give the same JSON (tests/unit/test_dicomscan.py)."""
    scanned = scan(data)
    ds: Dataset | None = None
    if scanned is not None:
        tsyntax, pos = scanned.transfer_syntax_uid, scanned.end
    else:
        buf = _StrictBytesIO(data)
        ds = _read_dataset(buf)
        pos = buf.tell()
        tsyntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    if not tsyntax:
        raise InvalidDicom("file meta information has no Transfer Syntax UID")
    implicit = tsyntax == ImplicitVRLittleEndian
    little = tsyntax != "1.2.840.10008.1.2.2"
    has_pixels = False
    tail: Dataset | None = None
    if tsyntax == "1.2.840.10008.1.2.1.99":  # deflated: the body is zlib, pydicom checked it
        try:
            has_pixels = "PixelData" in dcmread(io.BytesIO(data))
        except Exception as exc:
            raise InvalidDicom(f"not a readable DICOM file: {_short(exc)}") from exc
    elif pos < len(data):
        end = _check_pixel_element(data, pos, implicit=implicit, little=little)
        has_pixels = end > pos
        tail = _trailing_elements(data[end:], implicit=implicit, little=little)
    if scanned is not None:
        metadata = scanned.metadata
        if has_pixels:
            metadata["7FE00010"] = dict(PIXEL_DATA_REFERENCE)
    else:
        assert ds is not None
        metadata = header_json(ds, has_pixel_data=has_pixels)
    if tail is not None:
        # elements stored after the pixel data (private groups such as 7FE1) are part of the
        # instance's metadata too; trailing padding (FFFC,FFFC) is not
        tail_json = header_json(tail, has_pixel_data=False)
        tail_json.pop("FFFCFFFC", None)
        metadata.update(tail_json)
    return ParsedHeader(data, tsyntax, has_pixels, metadata, ds)


def _trailing_elements(tail: bytes, *, implicit: bool, little: bool) -> Dataset | None:
    """The elements after the pixel data (private groups, padding), which must be complete
    too; None when there are none."""
    if not tail:
        return None
    try:
        ds = read_dataset(_StrictBytesIO(tail), implicit, little)
    except InvalidDicom:
        raise
    except Exception as exc:
        raise InvalidDicom(f"unreadable data after the pixel data: {_short(exc)}") from exc
    return ds


def _check_pixel_element(data: bytes, pos: int, *, implicit: bool, little: bool) -> int:
    """Validate the framing of the pixel data element at ``pos`` (PS3.5 A.4 for encapsulated);
    return where it ends (``pos`` itself when the next element is not pixel data)."""
    end = "<" if little else ">"
    if len(data) - pos < 8:
        raise InvalidDicom("truncated: incomplete element header after the dataset")
    group, elem = struct.unpack_from(f"{end}HH", data, pos)
    tag = (group << 16) | elem
    if tag not in PIXEL_TAGS:
        return pos
    if implicit:
        (length,) = struct.unpack_from(f"{end}L", data, pos + 4)
        start = pos + 8
    else:
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"OD", b"OL", b"UN", b"OV"):
            if len(data) - pos < 12:
                raise InvalidDicom("truncated: incomplete pixel data header")
            (length,) = struct.unpack_from(f"{end}L", data, pos + 8)
            start = pos + 12
        else:
            raise InvalidDicom(f"pixel data has an invalid VR {vr!r}")
    if length != 0xFFFFFFFF:
        if start + length > len(data):
            raise InvalidDicom("truncated: pixel data is shorter than its declared length")
        return start + length
    # Encapsulated: items until the sequence delimiter.
    cursor = start
    while True:
        if cursor + 8 > len(data):
            raise InvalidDicom("truncated: encapsulated pixel data has no sequence delimiter")
        group, elem, item_len = struct.unpack_from("<HHL", data, cursor)
        item_tag = (group << 16) | elem
        cursor += 8
        if item_tag == SEQ_DELIM:
            return cursor
        if item_tag != ITEM or item_len == 0xFFFFFFFF:
            raise InvalidDicom("encapsulated pixel data has an invalid item")
        cursor += item_len
        if cursor > len(data):
            raise InvalidDicom("truncated: a pixel data fragment runs past the end of the data")


def to_part10(data: bytes) -> bytes:
    """Return Part 10 bytes for a file that may lack the preamble/file meta (raw dataset).

    Used by import only: a file without meta is read as Implicit VR Little Endian, the default
    transfer syntax (PS3.5 10.1), and given a file meta header; its dataset bytes are unchanged.
    """
    if len(data) >= 132 and data[128:132] == b"DICM":
        return data
    try:
        ds = dcmread(io.BytesIO(data), force=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except Exception as exc:  # pydicom raises many types on garbage
        raise InvalidDicom(f"not a DICOM file: {_short(exc)}") from exc
    tsyntax = ExplicitVRLittleEndian if _looks_explicit(data) else ImplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(ds.get("SOPClassUID", "") or ""))
    meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "") or ""))
    meta.TransferSyntaxUID = tsyntax
    if not meta.MediaStorageSOPInstanceUID:
        raise InvalidDicom("not a DICOM file: no SOP Instance UID")
    out = io.BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    out.write(data)
    return out.getvalue()


def _looks_explicit(data: bytes) -> bool:
    return len(data) > 6 and data[4:6].isalpha() and data[4:6].isupper()


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def is_multi_value(value: Any) -> bool:
    """A pydicom MultiValue (a MutableSequence), a list or a tuple."""
    return isinstance(value, MutableSequence | tuple)


def text(ds: Dataset, keyword: str, max_length: int) -> str:
    """A header value as a clean string for an index column (multi-values joined by '\\')."""
    value: Any = ds.get(keyword, "")
    if value is None:
        return ""
    if is_multi_value(value):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().rstrip("\x00")[:max_length]


def as_date(value: str) -> str:
    """A DA value as YYYYMMDD: the retired ACR-NEMA form YYYY.MM.DD (PS3.5 6.2, still in
    old files) is the same date, so it is indexed, matched and returned in the DICOM form."""
    value = value.strip()
    if len(value) == 10 and value[4] == value[7] == "." and value.replace(".", "").isdigit():
        return value.replace(".", "")
    return value


def date_text(ds: Dataset, keyword: str) -> str:
    """A DA header value for an index column (YYYYMMDD; at most 8 characters kept of a value
    that is no date)."""
    return as_date(text(ds, keyword, 10))[:8]


def integer(ds: Dataset, keyword: str) -> int | None:
    return _as_int(ds.get(keyword))


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def part10_prefix(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                  source_aet: str, implementation_uid: str, implementation_version: str) -> bytes:
    """Preamble + File Meta Information (PS3.10 7.1) for a dataset received over the network.

    Written by hand: the group is seven short Explicit VR LE elements, and building it through
    pydicom costs more than the rest of the C-STORE bookkeeping.
    """
    body = b"".join((
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid_bytes(sop_class_uid)),
        _meta_element(0x0003, b"UI", _uid_bytes(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _uid_bytes(transfer_syntax_uid)),
        _meta_element(0x0012, b"UI", _uid_bytes(implementation_uid)),
        _meta_element(0x0013, b"SH", _padded(implementation_version[:16].encode("ascii"))),
        _meta_element(0x0016, b"AE", _padded(source_aet[:16].encode("ascii", "replace"))),
    ))
    length = _meta_element(0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + length + body


def _uid_bytes(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _padded(raw: bytes) -> bytes:
    return raw + b" " if len(raw) % 2 else raw


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def dataset_offset(data: bytes) -> int:
    """Where the dataset starts in Part 10 bytes: after the preamble and file meta group."""
    if data[128:132] != b"DICM":
        return 0
    pos = 132
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return pos
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8 + length
    return pos
