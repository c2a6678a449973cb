"""multipart/related bodies (RFC 2387, PS3.18 8.6.1.2): streamed out, and parsed in as they
are read.

Python's email package would parse these, but it decodes every part into a Message object and
copies the payload twice; a DICOMweb body is a few large binary parts, so a boundary scan over
the bytes is both simpler and faster.
"""

from __future__ import annotations

import bisect
import io
import itertools
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from core.errors import BadRequest
from pacs.dicomweb.negotiation import parse_media_type
from pacs.storage import RangeReader

CRLF = b"\r\n"


def new_boundary() -> str:
    return f"dicomweb-{secrets.token_hex(12)}"


def content_type(boundary: str, part_type: str, **params: str) -> str:
    extra = "".join(f"; {name.replace('_', '-')}={value}" for name, value in params.items())
    return f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'


def part_header(boundary: str, media_type: str, location: str = "",
                length: int | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {media_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


def stream(boundary: str, parts: Iterable[tuple[bytes, Iterable[bytes]]]) -> Iterator[bytes]:
    """Yield a body from (part header, body chunks) pairs; each part ends with CRLF."""
    for header, chunks in parts:
        yield header
        yield from chunks
        yield CRLF
    yield closing(boundary)


@dataclass
class Part:
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def location(self) -> str:
        return self.headers.get("content-location", "") or self.headers.get("content-id", "")


def boundary_of(content_type_header: str) -> str:
    media = parse_media_type(content_type_header)
    boundary = media.param("boundary")
    if not boundary:
        raise BadRequest("multipart/related request without a boundary parameter")
    return boundary


def parse(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body. Preamble and epilogue are ignored; a body without its
    closing delimiter is refused (it was cut off)."""
    return list(iter_parts(io.BytesIO(body).read, boundary))


READ_SIZE = 1 << 20


def iter_parts(read: Callable[[int], bytes], boundary: str) -> Iterator[Part]:
    """The parts of a multipart body read from a stream with ``read(n)``, each as soon as it
    is complete: a large body is never in memory whole, only the part at hand. Raises
    BadRequest (after the parts before it) if the body ends without its closing delimiter."""
    delimiter = b"--" + boundary.encode("latin-1")
    marker = CRLF + delimiter
    buf = bytearray()

    def more() -> bool:
        data = read(READ_SIZE)
        buf.extend(data)
        return bool(data)

    while (start := buf.find(delimiter)) < 0:  # the preamble
        del buf[:max(0, len(buf) - len(delimiter))]
        if not more():
            raise BadRequest("the body has no part with the boundary of its Content-Type")
    del buf[:start + len(delimiter)]
    while True:
        while len(buf) < 2 and more():
            pass
        if buf.startswith(b"--"):
            return  # the closing delimiter
        while (line_end := buf.find(CRLF)) < 0:  # the rest of the delimiter line
            if not more():
                raise _cut()
        # (transport padding after the delimiter is ignored; a part may have no headers)
        while (header_end := buf.find(CRLF + CRLF, line_end)) < 0:
            if not more():
                raise _cut()
        headers = _headers(bytes(buf[line_end + 2:header_end])) if header_end > line_end else {}
        del buf[:header_end + 2]  # keep the CRLF: an empty body's delimiter follows it
        scanned = 0
        while (end := buf.find(marker, max(0, scanned - len(marker)))) < 0:
            scanned = len(buf)
            if not more():
                raise _cut()
        with memoryview(buf) as view:  # one copy of the body, not two
            body = bytes(view[2:max(end, 2)])
        del buf[:end + len(marker)]
        yield Part(headers, body)


def _cut() -> BadRequest:
    return BadRequest("the multipart body is incomplete (no closing boundary)")


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


class _Positioned(io.RawIOBase):
    """A read-only file of ``_size`` bytes read at ``_pos``: what seeking needs, once."""

    _size = 0
    _pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(base + offset, self._size))
        return self._pos


class JoinedFile(_Positioned):
    """A read-only, seekable file made of byte strings and stored files, back to back.

    A multipart body of files sent as stored is handed to the WSGI server as one file
    (``wsgi.file_wrapper``): waitress then sends it from its I/O thread in socket-sized reads,
    instead of copying every chunk of a Python generator through its output buffer.
    A stored file is ``(key, size)``, read through the storage's ``reader``
    (pacs.storage.RangeReader): pread on local files, ranged GETs on an object store.
    """

    def __init__(self, segments: list[bytes | tuple[str, int]], reader: RangeReader) -> None:
        super().__init__()
        self._segments = segments
        self._reader = reader
        reader.will_read([s for s in segments if not isinstance(s, bytes)])
        self._sizes = [len(s) if isinstance(s, bytes) else s[1] for s in segments]
        self._starts = list(itertools.accumulate(self._sizes, initial=0))
        self._size = self._starts[-1]
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        out = []
        while size > 0 and self._pos < self._size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            offset = self._pos - self._starts[index]
            take = min(size, self._sizes[index] - offset)
            segment = self._segments[index]
            if isinstance(segment, bytes):
                chunk = segment[offset:offset + take]
            else:
                chunk = self._reader.read_at(segment[0], offset, take)
                if not chunk:
                    raise OSError(f"{segment[0]} is shorter than its recorded size")
            out.append(chunk)
            self._pos += len(chunk)
            size -= len(chunk)
        return b"".join(out)

    def close(self) -> None:
        self._reader.close()
        super().close()


class Window(_Positioned):
    """``length`` bytes of a seekable file from ``start``: the body of a 206 answer to an HTTP
    range, read on demand (a stored file's bytes are fetched only for the asked range)."""

    def __init__(self, raw: io.RawIOBase, start: int, length: int) -> None:
        super().__init__()
        self._raw, self._start, self._size, self._pos = raw, start, length, 0

    def read(self, size: int = -1) -> bytes:
        left = self._size - self._pos
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self._raw.seek(self._start + self._pos)
        data = self._raw.read(size)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The (start, length) an HTTP ``Range`` header asks of ``size`` bytes (RFC 9110 14.1.2):
    one range, ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``. None when it is not one such range
    (the whole answer is sent then); ValueError when it cannot be satisfied (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (piece.strip() for piece in spec.partition("-"))
    if not dash or not (first or last) or not all(p.isdigit() for p in (first, last) if p):
        return None
    if not first:  # the last n bytes
        length = min(int(last), size)
        if length == 0:
            raise ValueError("an empty suffix range")
        return size - length, length
    start = int(first)
    if last and int(last) < start:  # not a valid range: ignored (RFC 9110 14.1.1)
        return None
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise ValueError(f"bytes {first}-{last} lie outside the {size} bytes")
    return start, end - start + 1
