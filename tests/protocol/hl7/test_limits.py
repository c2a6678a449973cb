"""What one client can make the HL7 listener spend: oversized frames, bytes outside frames,
silent and trickling connections, many connections (raw sockets from 127.0.0.2), beside a
registered RIS using python-hl7's MLLP client from 127.0.0.1."""

from __future__ import annotations

import time

import pytest
from hl7.client import MLLPClient

from hl7gw.models import Message
from tests import hostile
from worklist.models import Order

pytestmark = pytest.mark.interop

_OBR = ["OBR", "1", "{control}", "", "CT1^CT chest"] + [""] * 20
_OBR[18], _OBR[24] = "{control}", "CT"  # OBR-18 accession (IHE RAD-4), OBR-24 modality
ORDER = ("MSH|^~\\&|RIS|H|PORTAL|H|20261207||ORM^O01|{control}|P|2.3.1\r"
         "PID|||L1^^^H||LIMIT^TEST\rORC|NW|{control}\r" + "|".join(_OBR) + "\r")


@pytest.fixture
def hl7(transactional_db, hl7_senders, settings):
    from hl7gw.mllp import MllpListener

    settings.HL7_MAX_FRAME_BYTES = 256 * 1024
    settings.HL7_IDLE_SECONDS = 1.5
    settings.HL7_FRAME_SECONDS = 2
    settings.HL7_MAX_PER_SOURCE = 8
    listener = MllpListener(host="127.0.0.1", port=0)
    listener.start()
    yield listener
    listener.stop()


def order(listener, control: str) -> bytes:
    with MLLPClient(*listener.address) as client:
        return client.send_message(ORDER.format(control=control))


def read_reply(sock, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\x1c\r" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_an_oversized_frame_gets_one_ar_and_nothing_is_applied(hl7):
    sock = hostile.connect(hl7.address, source="127.0.0.2")
    big = ORDER.format(control="BIG1").encode() + b"NTE|1||" + b"x" * (50 << 20) + b"\r"
    try:
        sock.sendall(b"\x0b" + big + b"\x1c\r")
    except OSError:
        pass  # the listener closed the connection once the frame passed the limit
    reply = read_reply(sock)
    assert reply.count(b"MSA|AR") == 1 and b"more than 262144 bytes" in reply
    assert hostile.closed_within(sock, 2)
    assert not Order.objects.exists()
    (logged,) = Message.objects.all()
    assert logged.status == "rejected" and "more than 262144 bytes" in logged.error
    assert len(bytes(logged.raw)) <= 256 * 1024
    assert b"MSA|AA" in order(hl7, "OK1")  # the others carry on


def test_a_message_without_the_start_block_is_not_applied(hl7):
    sock = hostile.connect(hl7.address, source="127.0.0.2")
    sock.sendall(ORDER.format(control="NOSTART").encode() + b"\x1c\r")
    reply = read_reply(sock)
    assert b"MSA|AR|NOSTART" in reply and b"no start block" in reply
    assert not Order.objects.exists()
    assert Message.objects.get().status == "rejected"


def test_silent_and_trickling_connections_are_closed(hl7):
    silent = hostile.connect(hl7.address, source="127.0.0.2")
    assert hostile.closed_within(silent, 3)  # idle: 1.5 s
    trickle = hostile.connect(hl7.address, source="127.0.0.2")
    started = time.monotonic()
    try:
        trickle.sendall(b"\x0b")
        for byte in ORDER.format(control="SLOW").encode():
            trickle.sendall(bytes([byte]))
            time.sleep(0.3)
            if time.monotonic() - started > 6:
                break
    except OSError:
        pass
    assert time.monotonic() - started < 4  # the frame's 2 s, not one byte in time forever
    assert not Order.objects.exists()


def test_many_connections_from_one_source_leave_room_for_the_others(hl7):
    flood = [hostile.connect(hl7.address, source="127.0.0.2") for _ in range(30)]
    time.sleep(0.3)
    open_ones = [s for s in flood if not hostile.closed_within(s, 0.05)]
    assert len(open_ones) <= 8
    assert b"MSA|AA" in order(hl7, "OK2")
    for sock in flood:
        sock.close()
