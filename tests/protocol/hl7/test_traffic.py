"""Traffic per sender and receiver: messages per day and errors counted from what the real
listener received (python-hl7's MLLP client), and a receiver's connection test against a
port that listens and one that does not."""

from __future__ import annotations

import socket
import threading

import pytest
from django.urls import reverse
from hl7.client import MLLPClient

from core.models import AuditEvent
from hl7gw import stats
from hl7gw.models import Receiver, Sender
from tests.samples import free_port
from tests.users import user_with

pytestmark = pytest.mark.interop


@pytest.fixture
def hl7(transactional_db, storage_dir):
    from hl7gw.mllp import MllpListener

    listener = MllpListener(host="127.0.0.1", port=0)
    listener.start()
    yield listener
    listener.stop()


def _send(listener, app: str, control: str, pid: str) -> None:
    message = (f"MSH|^~\\&|{app}|HOSP|PORTAL|RAD|20261207100000||ADT^A08|{control}|P|2.5.1"
               f"\r{pid}\r")
    with MLLPClient(*listener.address) as client:
        client.send_message(message)


def test_messages_per_sender_per_day_with_errors(hl7, client):
    ris = Sender.objects.create(sending_application="RIS", addresses="127.0.0.1",
                                may_update_patients=True)
    _send(hl7, "RIS", "T1", "PID|||P1||ONE^PATIENT")
    _send(hl7, "RIS", "T2", "PID|||P2||TWO^PATIENT")
    _send(hl7, "RIS", "T3", "PID")  # no patient ID: answered AE
    _send(hl7, "STRANGER", "T4", "PID|||P3||X^Y")  # not registered: AR
    rows = {t.name: t for t in stats.senders()}
    mine = rows[str(ris)]
    assert mine.per_day[-1] == 3 and sum(mine.per_day) == 3  # today is the last column
    assert (mine.errors, mine.total) == (1, 3) and round(mine.error_rate) == 33
    assert mine.last is not None
    assert rows["(not registered)"].errors == 1
    client.force_login(user_with("boss", "admin"))
    page = client.get(reverse("hl7-traffic"))
    assert page.status_code == 200 and b"1 of 3 (33.3 %)" in page.content


def test_connection_test_says_what_it_found(transactional_db, client):
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: server.accept()[0].close(), daemon=True).start()
    up = Receiver.objects.create(name="UP", host="127.0.0.1", port=server.getsockname()[1])
    down = Receiver.objects.create(name="DOWN", host="127.0.0.1", port=free_port())
    try:
        result = stats.test_connection(up, actor="boss")
        assert result.ok and "no message sent" in result.detail
    finally:
        server.close()
    result = stats.test_connection(down, actor="boss")
    assert not result.ok and "refused" in result.detail
    assert AuditEvent.objects.filter(action="receiver connection test",
                                     outcome="failure").count() == 1
    client.force_login(user_with("boss", "admin"))
    answer = client.post(reverse("hl7-receiver-test", args=[down.pk]), follow=True)
    assert b"refused the connection" in answer.content
