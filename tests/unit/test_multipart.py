"""multipart/related writing and parsing, and the joined file WADO-RS streams."""

from __future__ import annotations

import io

import pytest

from core.errors import BadRequest
from pacs.dicomweb import multipart
from pacs.dicomweb.negotiation import parse_accept


def test_stream_then_parse_round_trip():
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream(boundary, [
        (multipart.part_header(boundary, "application/dicom", location="a"), [b"one", b"\r\n"]),
        (multipart.part_header(boundary, "application/octet-stream"), [b""]),
    ]))
    parts = multipart.parse(b"preamble\r\n" + body + b"epilogue", boundary)
    assert [(p.content_type, p.location, p.body) for p in parts] == [
        ("application/dicom", "a", b"one\r\n"), ("application/octet-stream", "", b"")]


def test_parse_refuses_a_cut_body_and_a_missing_boundary():
    with pytest.raises(BadRequest, match="incomplete"):
        multipart.parse(b"--b\r\nContent-Type: x\r\n\r\npartial", "b")
    with pytest.raises(BadRequest, match="boundary"):
        multipart.parse(b"no parts here", "b")


def test_parts_are_read_as_they_come_in_any_read_size(monkeypatch):
    boundary = "b0und"
    body = b"".join(multipart.stream(boundary, [
        (multipart.part_header(boundary, "application/dicom"), [b"x" * 50]),
        (b"--b0und\r\n\r\n", [b"no headers"]),  # a part without headers
        (multipart.part_header(boundary, "application/dicom"), [b""]),  # an empty one
        (multipart.part_header(boundary, "application/dicom"), [b"--b0un", b"\r\n--b0u"]),
    ]))
    whole = [(p.headers, p.body) for p in multipart.parse(b"pre" * 9 + body, boundary)]
    assert [b for _, b in whole] == [b"x" * 50, b"no headers", b"", b"--b0un\r\n--b0u"]
    for size in (1, 2, 3, 7, 64):
        monkeypatch.setattr(multipart, "READ_SIZE", size)
        stream = io.BytesIO(b"pre" * 9 + body)
        parts = multipart.iter_parts(stream.read, boundary)
        first = next(parts)
        assert stream.tell() < len(body)  # the first part came before the body was all read
        assert [(first.headers, first.body)] + [(p.headers, p.body) for p in parts] == whole


def test_a_cut_body_gives_its_complete_parts_then_refuses():
    body = b"--b\r\n\r\none\r\n--b\r\nContent-Type: x\r\n\r\npartial"
    parts = multipart.iter_parts(io.BytesIO(body).read, "b")
    assert next(parts).body == b"one"
    with pytest.raises(BadRequest, match="incomplete"):
        next(parts)


def test_joined_file_reads_and_seeks_across_segments(tmp_path):
    from pacs.storage import LocalStorage

    (tmp_path / "a").write_bytes(b"0123456789")
    (tmp_path / "b").write_bytes(b"abcdef")
    joined = multipart.JoinedFile([b"<h>", ("a", 10), b"|", ("b", 6), b"<end>"],
                                  LocalStorage(tmp_path).range_reader())
    whole = b"<h>0123456789|abcdef<end>"
    assert joined.read() == whole
    assert joined.seek(0, 2) == len(whole)
    joined.seek(5)
    assert joined.read(10) == whole[5:15]
    assert joined.tell() == 15
    joined.seek(0)
    assert b"".join(iter(lambda: joined.read(4), b"")) == whole
    joined.close()


def test_accept_parsing_orders_by_quality_and_keeps_parameters():
    ranges = parse_accept('application/json;q=0.5, multipart/related; type="application/dicom";'
                          " transfer-syntax=*, text/html;q=0")
    assert [r.type for r in ranges] == ["multipart/related", "application/json"]
    assert ranges[0].param("type") == "application/dicom"
    assert ranges[0].param("transfer-syntax") == "*"
    assert parse_accept("")[0].matches("image/png")
