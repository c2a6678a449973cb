"""Property-based fuzzing (hypothesis) of every parser a caller can feed: the A-ASSOCIATE-RQ
decoder and the PDU/PDV framing, the Part 10 header scanner, the HL7 ER7 reader and the whole
inbound path, the multipart parser, QIDO parameters and the query engine. Each parser may
refuse its input only with its own error (which the face turns into a status); anything else
is a crash, kept below as a regression example.

Inputs are real samples mutated (bytes flipped, cut, repeated, lengths set to extremes), not
only random bytes, so that the parsers get past their first checks. The number of examples
per target comes from FUZZ_EXAMPLES (scripts/test.sh: a few minutes in all); developers run
longer with e.g. ``FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/fuzz``.
"""

from __future__ import annotations

import io
import os
import struct

import pytest
from django.http import QueryDict
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.errors import ServiceError
from dicomnet import acse, wire
from hl7gw import er7
from pacs import query
from pacs.dicomfile import read_header
from pacs.dicomscan import scan
from pacs.dicomweb import multipart, qido
from tests.hostile import associate_rq
from tests.samples import sample, shared_testdata

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed with a few edits: flips, cuts, insertions, repeats, extreme 16/32-bit values."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "u16", "u32", "del"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "repeat":
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end] * draw(st.integers(1, 4))
        elif op == "del":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            width = 2 if op == "u16" else 4
            value = draw(st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x80000000]))
            if pos + width <= len(data):
                data[pos:pos + width] = (value & (0xFFFF if width == 2 else 0xFFFFFFFF)
                                         ).to_bytes(width, draw(st.sampled_from(["little",
                                                                                 "big"])))
    return bytes(data)


# --- DIMSE ---------------------------------------------------------------------------------

RQ_SEEDS = [associate_rq("MODALITY")[6:], associate_rq("X" * 16, "Y" * 16)[6:]]


@FUZZ
@given(mutated(RQ_SEEDS) | st.binary(max_size=512))
def test_association_requests(body):
    try:
        request = acse.parse_request(body)
    except wire.ProtocolError:
        return
    acse.negotiate(request, {})


PDV_SEEDS = [
    struct.pack(">IBB", 2 + 60, 1, 0x03) + wire.encode_command({
        wire.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.1.1", wire.COMMAND_FIELD: 0x0030,
        wire.MESSAGE_ID: 1, wire.COMMAND_DATA_SET_TYPE: wire.NO_DATASET})[:60],
]


@FUZZ
@given(mutated(PDV_SEEDS) | st.binary(max_size=256))
def test_p_data_pdvs(body):
    sock = PduFeeder(struct.pack(">BBI", wire.P_DATA_TF, 0, len(body)) + body)
    try:
        wire.PduSocket(sock).read_message()
    except (wire.ProtocolError, wire.PeerClosed):
        pass


class PduFeeder:
    """A socket that hands out a byte string and then says the peer closed."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def settimeout(self, _seconds) -> None:
        pass

    def recv_into(self, view, size: int) -> int:
        chunk = self.data.read(size)
        view[:len(chunk)] = chunk
        return len(chunk)


@FUZZ
@given(st.binary(max_size=300))
def test_command_sets(data):
    try:
        wire.decode_command(data)
    except wire.ProtocolError:
        pass


# --- Part 10 ---------------------------------------------------------------------------------

DICOM_SEEDS = [sample(name).read_bytes()[:6000] for name in (
    "CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "emri_small_jpeg_2k_lossless.dcm",
    "SC_rgb_rle.dcm")] + [sample("reportsi.dcm").read_bytes()]


@FUZZ
@given(mutated(DICOM_SEEDS))
@example(b"DICM" * 40)
def test_part10_headers(data):
    """The store path's parser refuses bad files with InvalidDicom, whatever they hold; the
    fast scanner either reads a file or hands it to pydicom."""
    try:
        scan(data)
    except ServiceError:
        pass
    try:
        read_header(data)
    except ServiceError:
        pass


# --- HL7 -------------------------------------------------------------------------------------

HL7_SEEDS = [path.read_bytes().replace(b"\n", b"\r")
             for path in sorted(shared_testdata("hl7").glob("*.hl7"))]


@FUZZ
@given(mutated(HL7_SEEDS))
def test_er7_reading(raw):
    text, charset = er7.decode(raw)
    er7.codec_for(charset)
    segments = er7.split_segments(text)
    if not segments or not segments[0].startswith("MSH"):
        return
    try:
        enc = er7.encoding_of(segments[0])
    except ValueError:
        return
    for segment in segments:
        parsed = er7.Segment(segment, enc)
        for n in range(1, 12):
            parsed.get(n)
            parsed.get(n, 1)
            parsed.raw(n)
        er7.unescape(segment, enc)
    er7.raw_msh_field(raw, 3)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=max(EXAMPLES // 6, 20), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=mutated(HL7_SEEDS))
@example(raw=b"BHS")  # found: a batch with no message (an empty batch is the answer)
def test_the_inbound_path_always_answers(raw, hl7_senders_for_fuzz):
    """Whatever a registered sender sends, the gateway answers with an ACK and logs it."""
    from hl7gw.inbound.service import receive_frame

    ack = receive_frame(raw, peer="127.0.0.1:2575")
    assert b"MSA" in ack or ack.startswith(b"BHS")  # an empty batch: an empty batch back


@pytest.fixture
def hl7_senders_for_fuzz(transactional_db, settings):
    settings.HL7_ALLOW_UNKNOWN_SENDER = True  # the mutations change MSH-3 too


# --- DICOMweb --------------------------------------------------------------------------------

BOUNDARY = "fuzzboundary"
MULTIPART_SEEDS = [b"".join(multipart.stream(BOUNDARY, [
    (multipart.part_header(BOUNDARY, "application/dicom"), [sample("CT_small.dcm")
                                                             .read_bytes()[:2000]]),
    (multipart.part_header(BOUNDARY, "application/dicom+json"), [b'{"00100010": {}}'])]))]


@FUZZ
@given(mutated(MULTIPART_SEEDS) | st.binary(max_size=400))
def test_multipart_bodies(body):
    try:
        for part in multipart.iter_parts(io.BytesIO(body).read, BOUNDARY):
            part.headers.get("content-type")
    except ServiceError:
        pass


KEYS = st.sampled_from(["PatientName", "PatientID", "StudyDate", "ModalitiesInStudy",
                        "StudyInstanceUID", "00100020", "AccessionNumber", "limit", "offset",
                        "includefield", "fuzzymatching", "StudyTime", "Modality", "x.y",
                        "ReferencedStudySequence.ReferencedSOPInstanceUID", "NumberOfFrames",
                        "00081030", "SeriesNumber", ""])
VALUES = st.one_of(st.text(max_size=40), st.sampled_from(
    ["*", "?", "-", "20240101-", "-20240101", "A*B?", "1.2.3,4.5.6", "CT\\MR", "all", "true",
     "99999999999999999999", "-1", "1e5", "\x00", "^^^", "=", "\\", ",,,"]))


@pytest.mark.django_db
@FUZZ
@given(st.lists(st.tuples(KEYS, VALUES), max_size=6),
       st.sampled_from(["STUDY", "SERIES", "IMAGE"]))
@example([("NumberOfFrames", ":")], "STUDY")  # found: pydicom's IS conversion raised (500)
@example([("offset", "99999999999999999999")], "STUDY")
@example([("ModalitiesInStudy", "\\".join(["CT"] * 5000))], "STUDY")
def test_qido_parameters(pairs, level):
    params = QueryDict(mutable=True)
    for key, value in pairs:
        params.appendlist(key, value)
    try:
        request = qido.parse(params, {})
        list(query.search_level(query.FLAT_LEVELS[level], request.identifier,
                                fuzzy=request.fuzzy)[request.offset:request.offset + 5])
    except ServiceError:
        pass
