"""The web server under slow and greedy clients (raw sockets from 127.0.0.2, the attacker;
requests from 127.0.0.1, everybody else), and bad parameters that must be a 400, never a 500."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from tests import hostile

pytestmark = pytest.mark.interop


@pytest.fixture
def tight_web(transactional_db, storage_dir):
    """`serve`'s web server with small bounds, so that the tests need not wait long."""
    from portal.webserver import create_web_server
    from portal.wsgi import application

    server = create_web_server(application, host="127.0.0.1", port=0, threads=4,
                               max_per_source=20, header_seconds=2,
                               min_bytes_per_second=200_000, idle_seconds=5)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server
    server.close()


def slow_client(port: int, stop: threading.Event, sent: list[socket.socket]) -> None:
    """A slowloris connection: a request line and then one header byte a second."""
    try:
        sock = hostile.connect(("127.0.0.1", port), source="127.0.0.2")
        sent.append(sock)
        sock.sendall(b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while not stop.is_set():
            sock.sendall(b"X")
            stop.wait(1)
    except OSError:
        return


def test_slowloris_does_not_lock_the_others_out(tight_web):
    port = int(tight_web.effective_port)
    stop = threading.Event()
    socks: list[socket.socket] = []
    for _ in range(120):
        threading.Thread(target=slow_client, args=(port, stop, socks), daemon=True).start()
    try:
        time.sleep(1)
        assert len(socks) == 120  # all connected; past 20 the server closed them at once
        for _ in range(5):
            started = time.monotonic()
            assert requests.get(f"http://127.0.0.1:{port}/login/", timeout=5).status_code == 200
            assert time.monotonic() - started < 1
        time.sleep(3.5)  # past the 2 s header deadline, one byte a second or not
        assert all(hostile.closed_within(s, 0.5) for s in socks)
    finally:
        stop.set()


def test_a_body_must_keep_coming(tight_web):
    sock = hostile.connect(("127.0.0.1", int(tight_web.effective_port)), source="127.0.0.2")
    sock.sendall(b"POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/dicom\r\nContent-Length: 400000\r\n\r\n")
    started = time.monotonic()
    try:
        while time.monotonic() - started < 8:
            sock.sendall(b"x" * 100)
            time.sleep(0.5)
    except OSError:
        pass
    assert hostile.closed_within(sock, 1)
    assert time.monotonic() - started < 6  # 2 s + 400 KB at 200 KB/s, not forever


BAD = [
    ("/dicomweb/studies?offset=99999999999999999999999", 400),
    ("/dicomweb/studies?limit=-1", 400),
    ("/dicomweb/studies?ModalitiesInStudy=" + "\\".join(["CT"] * 5000), 400),
    ("/dicomweb/studies?ModalitiesInStudy=" + ",".join(["MR"] * 5000), 400),
    ("/dicomweb/studies?StudyDate=2024-13-45", 400),
    ("/dicomweb/studies?00100010=" + "A" * 100_000, 400),
]


@pytest.mark.parametrize(("path", "status"), BAD)
def test_bad_parameters_are_400_not_500(web, auth, path, status):
    response = requests.get(web + path, headers=auth, timeout=30)
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]


def test_preview_and_frame_parameters(web, client_session, auth, storage_dir):
    from pydicom import dcmread

    from pacs.services.ingest import store_instance
    from tests.samples import sample

    store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="test")
    ds = dcmread(sample("CT_small.dcm"))
    preview = f"{web}/instances/{ds.SOPInstanceUID}/preview.png"
    for query in ("?frame=abc", "?frame=-5", "?size=abc", "?frame=99999999999999999999"):
        answer = client_session.get(preview + query, timeout=10)
        assert answer.status_code == 400, (query, answer.status_code)
    base = (f"{web}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/"
            f"instances/{ds.SOPInstanceUID}")
    many = ",".join(["1"] * 20_000)
    started = time.monotonic()
    answer = requests.get(f"{base}/frames/{many}", headers=auth, timeout=30)
    assert answer.status_code == 400 and "at most" in answer.json()["error"]
    assert time.monotonic() - started < 2
    assert requests.get(f"{base}/frames/99999999999999999999999", headers=auth,
                        timeout=10).status_code == 404
    assert requests.get(f"{base}/rendered?quality=abc", headers=auth,
                        timeout=10).status_code == 400


def _jpeg_dicom(tmp_path, width: int, height: int, rows: int | None = None) -> bytes:
    """An 8-bit JPEG baseline image of ``width`` x ``height`` in a Secondary Capture object
    whose header says ``rows`` x ``width`` (the real height unless told otherwise)."""
    import io

    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="JPEG", quality=50)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "BIG", "OT"
    ds.Rows, ds.Columns = rows or height, width
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_huge_images_are_refused_before_they_are_decoded(web, client_session, storage_dir,
                                                        settings, tmp_path):
    from pacs.services.ingest import store_instance

    big = store_instance(data=_jpeg_dicom(tmp_path, 8000, 8000), received_from="test")
    preview = f"{web}/instances/{big.sop_instance_uid}/preview.png"
    base = hostile.rss_mb()
    assert client_session.get(preview + "?size=256", timeout=60).status_code == 200
    assert hostile.rss_mb() - base < 400  # 64 Mpixel thinned before the arithmetic
    settings.RENDER_MAX_PIXELS = 50_000_000
    refused = client_session.get(preview, timeout=60)
    assert refused.status_code == 413 and "8000x8000" in refused.text
    # a header that says 512 rows over an 8000 x 8000 codestream: the codestream counts
    liar = store_instance(data=_jpeg_dicom(tmp_path, 8000, 8000, rows=512),
                          received_from="test")
    refused = client_session.get(f"{web}/instances/{liar.sop_instance_uid}/preview.png",
                                 timeout=60)
    assert refused.status_code == 413 and "compressed frame is 8000x8000" in refused.text


def test_codestream_sizes():
    from pacs.rendering import codestream_size

    sof = b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x0b\x08\xff\xff\xff\xff\x01\x01\x11\x00"
    assert codestream_size(sof) == (65535, 65535)
    siz = b"\xff\x4f\xff\x51\x00\x29\x00\x00" + (70000).to_bytes(4, "big") * 2 + bytes(8)
    assert codestream_size(siz) == (70000, 70000)
    assert codestream_size(b"not an image") is None
