"""What one client can make the DICOM listener spend: hostile clients (tests/hostile.py) beside
DCMTK's storescu as the registered modality. The hostile ones call from other loopback
addresses (127.0.0.2...), the modality from 127.0.0.1."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from core.models import AuditEvent
from dicomnet import wire
from dicomnet.engine import NegotiationCache
from pacs.models import ApplicationEntity, Instance
from tests import hostile
from tests.samples import sample
from tests.stored import dataset, read

pytestmark = pytest.mark.interop


@pytest.fixture
def tight(settings, transactional_db, storage_dir):
    """The real listener with small limits, so that the tests do not have to be slow."""
    from pacs.dimse.scp import DimseListener

    settings.DIMSE_ARTIM_SECONDS = 1.5
    settings.DIMSE_IDLE_SECONDS = 2
    settings.DIMSE_MAX_PER_AE = 2
    settings.DIMSE_MAX_DATASET_BYTES = 64 << 20
    settings.DIMSE_SPOOL_BYTES = 1 << 20
    ApplicationEntity.objects.create(ae_title="STORESCU", host="127.0.0.1", port=104,
                                     may_store=True, any_host=True)
    ApplicationEntity.objects.create(ae_title="NORIGHTS", host="127.0.0.1", port=104,
                                     may_store=False, any_host=True)
    listener = DimseListener(host="127.0.0.1", port=0, ae_title="PORTAL")
    listener.start()
    yield listener
    listener.stop()


def address(listener) -> tuple[str, int]:
    return "127.0.0.1", listener.address[1]


def storescu(listener, *files: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/usr/bin/storescu", "-aet", "STORESCU", "-aec", "PORTAL",
                           "127.0.0.1", str(listener.address[1]), *files],
                          capture_output=True, text=True, timeout=60)


def test_idle_connections_never_take_a_modalitys_place(tight):
    idle = []
    for _ in range(64):
        try:
            idle.append(hostile.connect(address(tight), source="127.0.0.2"))
        except OSError:
            pass
    time.sleep(0.3)
    closed = sum(hostile.closed_within(s, 0.05) for s in idle)
    assert closed >= 64 - 4 - 1  # beyond 4 waiting per address, closed at once
    started = time.monotonic()
    done = storescu(tight, str(sample("CT_small.dcm")))
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 5
    assert Instance.objects.count() == 1
    still_open = [s for s in idle if not hostile.closed_within(s, 0)]
    assert all(hostile.closed_within(s, 3) for s in still_open)  # ARTIM: 1.5 s


def test_a_trickled_request_is_dropped_at_artim(tight):
    sock = hostile.connect(address(tight), source="127.0.0.3")
    rq = hostile.associate_rq("STORESCU")
    started = time.monotonic()
    try:
        for byte in rq:
            sock.sendall(bytes([byte]))
            time.sleep(0.2)
            if time.monotonic() - started > 5:
                break
    except OSError:
        pass
    assert hostile.closed_within(sock, 1)
    assert time.monotonic() - started < 4  # 1.5 s of ARTIM, not one byte in time forever


def test_connections_do_not_cost_a_thread_each(tight):
    before = hostile.threads()
    flood = []
    for _ in range(200):
        try:
            flood.append(hostile.connect(address(tight), source="127.0.0.4"))
        except OSError:
            pass
    time.sleep(0.5)
    assert hostile.threads() - before <= 8
    for s in flood:
        s.close()


def test_a_data_set_that_never_ends_is_not_held(tight):
    """From an AE without the right to store: read and dropped, never held; from one with
    it: spooled to a file as it comes. Either way cut at the limit with a failure status, the
    association aborted, nothing kept, little memory."""
    base = hostile.rss_mb()
    sock = hostile.associated(address(tight), "NORIGHTS", source="127.0.0.5")
    sent = hostile.endless_dataset(sock, 300 << 20)
    assert sent < 200 << 20  # stopped near the 64 MB limit
    assert hostile.rss_mb() - base < 60
    sock.close()
    sock = hostile.associated(address(tight), "STORESCU", source="127.0.0.5")
    reader = wire.PduSocket(sock)
    got: list = []
    thread = threading.Thread(target=lambda: got.append(_read_all(reader)), daemon=True)
    thread.start()
    sent = hostile.endless_dataset(sock, 300 << 20)
    thread.join(10)
    assert sent < 200 << 20  # the portal stopped it near the 64 MB limit
    assert hostile.rss_mb() - base < 60  # spooled to a file as it came, not in memory
    (messages,) = got
    (response,) = [m for m in messages if isinstance(m, wire.Message)]
    assert response.command[wire.STATUS] == 0xA700
    assert wire.A_ABORT in messages
    assert not Instance.objects.exists()
    time.sleep(0.2)
    assert not [p for p in (tight_storage() / ".incoming").iterdir()]


def tight_storage():
    from django.conf import settings

    return settings.STORAGE_DIR


def _read_all(reader: wire.PduSocket) -> list:
    out: list = []
    while True:
        try:
            item = reader.read_message()
        except (wire.PeerClosed, OSError, wire.ProtocolError):
            return out
        out.append(item)
        if item == wire.A_ABORT:
            return out


def test_a_large_data_set_goes_through_a_file_and_arrives_whole(tight, tmp_path):
    from pydicom import dcmread

    ds = dcmread(sample("CT_small.dcm"))
    ds.PixelData = bytes(range(256)) * (12 << 12)  # 12 MB, spooled (the limit here is 1 MB)
    ds.Rows, ds.Columns = 2048, 3072
    big = tmp_path / "big.dcm"
    ds.save_as(big)
    done = storescu(tight, str(big))
    assert done.returncode == 0, done.stderr
    stored = Instance.objects.get()
    on_disk = read(stored.file_key)
    assert dcmread(big).PixelData == dataset(stored.file_key).PixelData
    assert stored.file_size == len(on_disk)
    assert not [p for p in (tight_storage() / ".incoming").iterdir()]  # the spooled copy went


def test_huge_association_requests_are_refused_and_not_cached(tight):
    base = hostile.rss_mb()
    for n in range(12):
        sock = hostile.connect(address(tight), source="127.0.0.6")
        try:
            sock.sendall(hostile.associate_rq("STORESCU", padding=16 << 20))
        except OSError:
            pass
        assert hostile.closed_within(sock, 5), n
        sock.close()
    assert hostile.rss_mb() - base < 100
    cache = tight._server.config.negotiations
    assert all(len(key) == 20 for key in cache._done)  # digests, not requests
    ok = storescu(tight, str(sample("CT_small.dcm")))
    assert ok.returncode == 0, ok.stderr


def test_associations_per_ae_title_are_limited(tight):
    first = hostile.associated(address(tight), "STORESCU")
    second = hostile.associated(address(tight), "STORESCU")
    third = hostile.connect(address(tight))
    third.sendall(hostile.associate_rq("STORESCU"))
    pdu_type, body = wire.PduSocket(third).read_pdu()
    assert (pdu_type, body[1:4]) == (wire.A_ASSOCIATE_RJ, bytes([0x02, 0x03, 0x02]))
    refusal = AuditEvent.objects.get(outcome="refused", actor="STORESCU")
    assert "association limit reached (2 at once per calling AE title)" in refusal.detail
    other = hostile.associated(address(tight), "NORIGHTS")  # another AE still gets in
    for sock in (first, second, third, other):
        sock.close()


def test_a_silent_association_is_closed_after_the_idle_time(tight):
    sock = hostile.associated(address(tight), "STORESCU", source="127.0.0.7")
    assert not hostile.closed_within(sock, 1)
    assert hostile.closed_within(sock, 3)  # idle: 2 s


def test_the_negotiation_cache_is_bounded_in_bytes():
    cache = NegotiationCache(size=4, max_request=1000)
    assert cache.claim(bytes(2000)) is None  # too large to keep: negotiated each time
    cache.settle(bytes(2000), object())  # type: ignore[arg-type]
    assert len(cache) == 0
    for n in range(10):
        assert cache.claim(bytes([n]) * 10) is None
        cache.settle(bytes([n]) * 10, object())  # type: ignore[arg-type]
    assert len(cache) == 4
