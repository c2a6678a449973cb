#!/usr/bin/env python
"""Soak benchmark: the registered clients of a hospital keep working while hostile clients
attack every listener of one `manage.py serve` (embedded mode, the production settings).

    .venv/bin/python bench/soak.py --seconds 300

Two phases of --seconds each: the legitimate load alone, then the same load while the
attackers run. The legitimate load, from 127.0.0.1:
- 4 modalities (DCMTK storescu), each sending associations of 20 new CT images (512x512);
- an HL7 RIS sending ORM^O01 orders over one MLLP connection (python-hl7's client);
- a DICOMweb client searching studies (QIDO-RS, API token);
- a browser-like client loading the study list (session).
The attackers, from 127.0.0.2-127.0.0.9, each attack of issue 23 in a loop:
- DICOM: 64 idle connections; one byte a second; 16 MB A-ASSOCIATE-RQs; a data set that never
  ends from an AE without rights;
- HTTP: 120 slowloris connections; /frames with 20,000 frame numbers; a 5,000-value QIDO key;
- HL7: 50 MB frames; messages without the start block; 30 connections at once.

Reports for each phase: the legitimate operations per second, errors, the serve process's peak
resident memory, and at the end whether everything acknowledged is in the archive (every
stored instance, every order answered AA). It exits 1 when the peak exceeds --max-rss
(400 MB) or anything acknowledged is missing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.ingest import STORESCU, make_ct_series  # noqa: E402
from tests import hostile  # noqa: E402
from tests.portal_process import portal_env, start_portal  # noqa: E402

ORDER_OBR = ["OBR", "1", "{n}", "", "CT1^CT chest"] + [""] * 20
ORDER_OBR[18], ORDER_OBR[24] = "{n}", "CT"
ORDER = ("MSH|^~\\&|SOAK_RIS|H|PORTAL|H|20261207||ORM^O01|{n}|P|2.3.1\r"
         "PID|||SOAK{p}^^^H||SOAK^PATIENT\rORC|NW|{n}\r" + "|".join(ORDER_OBR) + "\r")


@dataclass
class Counts:
    ok: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, ok: bool = True, n: int = 1) -> None:
        with self.lock:
            book = self.ok if ok else self.errors
            book[what] = book.get(what, 0) + n


def setup(portal) -> dict[str, str]:
    """The registered modality, RIS and users, as an admin would set them up."""
    out = portal.shell(
        "from django.contrib.auth.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        "from pacs.models import ApplicationEntity\n"
        "from hl7gw.models import Sender\n"
        "from core.roles import grant\n"
        "ApplicationEntity.objects.create(ae_title='STORESCU', host='127.0.0.1', port=104,"
        " may_store=True, may_query=True)\n"
        "ApplicationEntity.objects.create(ae_title='NORIGHTS', host='127.0.0.0/8', port=104,"
        " calling_addresses='127.0.0.0/8')\n"
        "Sender.objects.create(sending_application='SOAK_RIS', addresses='127.0.0.1',"
        " may_order=True)\n"
        "u = User.objects.create_user('soak', password='Soak-pass-12345')\n"
        "grant(u, 'viewer')\n"
        "print('TOKEN', Token.objects.create(user=u).key)\n")
    return {"token": re.search(r"TOKEN (\w+)", out).group(1)}


def legit_store(portal, template: Path, stop: threading.Event, counts: Counts,
                acked: list[str]) -> None:
    """A modality: DCMTK storescu, one association per 20 new CT images (fresh UIDs, so that
    every acknowledged image must be in the archive once). An image counts as acknowledged
    when storescu reports its Store Response as Success."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    ds = dcmread(template)
    folder = Path(tempfile.mkdtemp(prefix="soak-modality-"))
    paths = [folder / f"{i:02d}.dcm" for i in range(20)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    try:
        while not stop.is_set():
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            uids = {}
            for path in paths:
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.save_as(path, enforce_file_format=True)
                uids[str(path)] = ds.SOPInstanceUID
            try:
                run = subprocess.run(
                    [STORESCU, "-v", "-aet", "STORESCU", "-aec", "PORTAL", "127.0.0.1",
                     str(portal.dimse_port), *map(str, paths)],
                    capture_output=True, text=True, timeout=300, env=env)
                output = run.stdout + run.stderr
            except subprocess.TimeoutExpired:
                output = ""
            done = _acknowledged(output)
            for path in done:
                acked.append(uids[path])
            counts.add("stored", n=len(done))
            if len(done) < len(paths):
                counts.add("stored", False, len(paths) - len(done))
                reason = ("association refused or failed" if "Association Accepted"
                          not in output else "association aborted")
                counts.add(reason, False)
                stop.wait(0.5)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _acknowledged(output: str) -> list[str]:
    """The files storescu -v says were stored (a Success response after "Sending file")."""
    done, current = [], None
    for line in output.splitlines():
        if line.startswith("I: Sending file: "):
            current = line.removeprefix("I: Sending file: ").strip()
        elif line.startswith("I: Received Store Response (Success)") and current:
            done.append(current)
            current = None
    return done


def legit_hl7(portal, stop: threading.Event, counts: Counts, acked: list[str]) -> None:
    from hl7.client import MLLPClient

    n = int(time.time() * 1000) % 10_000_000  # control IDs (accessions) new in every phase
    while not stop.is_set():
        try:
            with MLLPClient("127.0.0.1", portal.hl7_port) as client:
                while not stop.is_set():
                    n += 1
                    control = f"SOAK{n:07d}"
                    ack = client.send_message(ORDER.format(n=control, p=n % 50))
                    if b"MSA|AA" in ack:
                        acked.append(control)
                        counts.add("orders")
                    else:
                        counts.add("orders", False)
                        msa = next((s for s in ack.split(b"\r") if s.startswith(b"MSA")), b"")
                        counts.add(f"orders answered {msa.decode('latin-1')[:80]}", False)
        except OSError as exc:
            counts.add("orders", False)
            counts.add(f"orders {type(exc).__name__}: {str(exc)[:60]}", False)
            time.sleep(0.1)


def legit_http(portal, token: str, stop: threading.Event, counts: Counts) -> None:
    headers = {"Authorization": f"Token {token}"}
    session = requests.Session()
    session.get(f"{portal.url}/login/", timeout=30)
    session.post(f"{portal.url}/login/", timeout=30, data={
        "username": "soak", "password": "Soak-pass-12345",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    while not stop.is_set():
        for what, call in (("qido", lambda: requests.get(
                f"{portal.url}/dicomweb/studies?limit=50", headers=headers, timeout=30)),
                           ("pages", lambda: session.get(f"{portal.url}/studies/",
                                                         timeout=30))):
            try:
                counts.add(what, call().status_code == 200)
            except requests.RequestException:
                counts.add(what, False)


def attack(name: str, stop: threading.Event, portal, counts: Counts) -> None:
    """One attack of issue 23, again and again until ``stop``."""
    dimse, web, hl7 = (("127.0.0.1", portal.dimse_port), ("127.0.0.1", portal.http_port),
                       ("127.0.0.1", portal.hl7_port))
    while not stop.is_set():
        try:
            if name == "dimse idle":
                socks = [hostile.connect(dimse, "127.0.0.2") for _ in range(64)]
                stop.wait(5)
                for s in socks:
                    s.close()
            elif name == "dimse trickle":
                s = hostile.connect(dimse, "127.0.0.3")
                for byte in hostile.associate_rq("STORESCU"):
                    s.sendall(bytes([byte]))
                    if stop.wait(1):
                        break
                s.close()
            elif name == "dimse huge rq":
                s = hostile.connect(dimse, "127.0.0.4")
                s.sendall(hostile.associate_rq("NORIGHTS", padding=16 << 20))
                s.close()
            elif name == "dimse endless data":
                s = hostile.associated(dimse, "NORIGHTS", "127.0.0.5")
                hostile.endless_dataset(s, 800 << 20)
                s.close()
            elif name == "http slowloris":
                socks = []
                for _ in range(120):
                    s = hostile.connect(web, "127.0.0.6")
                    s.sendall(b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    socks.append(s)
                for _ in range(20):
                    for s in socks:
                        s.sendall(b"X")
                    if stop.wait(1):
                        break
                for s in socks:
                    s.close()
            elif name == "http frames":
                requests.get(f"http://127.0.0.1:{portal.http_port}/dicomweb/studies/1.2/series/"
                             f"1.3/instances/1.4/frames/{','.join(['1'] * 20000)}", timeout=30)
                requests.get(f"http://127.0.0.1:{portal.http_port}/dicomweb/studies?"
                             f"ModalitiesInStudy={'%5C'.join(['CT'] * 5000)}", timeout=30)
            elif name == "hl7 huge frame":
                s = hostile.connect(hl7, "127.0.0.7")
                s.sendall(b"\x0bMSH|^~\\&|X|Y|||||ORM^O01|1|P|2.3\r" + b"x" * (50 << 20))
                s.close()
            elif name == "hl7 stray":
                s = hostile.connect(hl7, "127.0.0.8")
                s.sendall(ORDER.format(n="STRAY", p=0).encode() + b"\x1c\r")
                s.recv(4096)
                s.close()
            elif name == "hl7 flood":
                socks = [hostile.connect(hl7, "127.0.0.9") for _ in range(30)]
                stop.wait(3)
                for s in socks:
                    s.close()
            counts.add(name)
        except (OSError, requests.RequestException):
            counts.add(name)  # refused or cut: the attack ran
            stop.wait(0.2)


ATTACKS = ["dimse idle", "dimse trickle", "dimse huge rq", "dimse endless data",
           "http slowloris", "http frames", "hl7 huge frame", "hl7 stray", "hl7 flood"]


def rss_of_tree(pid: int) -> float:
    """The resident memory of `serve` (embedded mode: one process, its listeners threads)."""
    try:
        return hostile.rss_mb(pid)
    except (FileNotFoundError, AssertionError):
        return 0.0


def phase(portal, files, token: str, seconds: float, attackers: bool
          ) -> tuple[Counts, float, tuple[list[str], list[str]]]:
    stop = threading.Event()
    counts, acked = Counts(), []
    stored: list[str] = []
    workers = [threading.Thread(target=legit_store, args=(portal, files[0], stop, counts,
                                                          stored)) for _ in range(4)]
    workers.append(threading.Thread(target=legit_hl7, args=(portal, stop, counts, acked)))
    workers.append(threading.Thread(target=legit_http, args=(portal, token, stop, counts)))
    if attackers:
        workers += [threading.Thread(target=attack, args=(name, stop, portal, counts))
                    for name in ATTACKS]
    for worker in workers:
        worker.daemon = True
        worker.start()
    peak, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss_of_tree(portal.proc.pid))
        time.sleep(0.5)
    stop.set()
    for worker in workers:
        worker.join(60)
    return counts, peak, (stored, acked)


def missing(portal, stored: list[str], orders: list[str]) -> tuple[int, int]:
    """How many acknowledged images and orders are not in the archive."""
    listing = Path(portal.data_dir) / "acknowledged.txt"
    listing.write_text("\n".join(["I " + uid for uid in stored] + ["O " + c for c in orders]))
    out = portal.shell(
        "from pacs.models import Instance\nfrom worklist.models import Order\n"
        f"lines = open({str(listing)!r}).read().split()\n"
        "pairs = list(zip(lines[0::2], lines[1::2]))\n"
        "uids = {v for k, v in pairs if k == 'I'}\n"
        "controls = {v for k, v in pairs if k == 'O'}\n"
        "have = set(Instance.objects.filter(sop_instance_uid__in=uids)"
        ".values_list('sop_instance_uid', flat=True))\n"
        "orders = set(Order.objects.filter(accession_number__in=controls)"
        ".values_list('accession_number', flat=True))\n"
        "print('MISSING', len(uids - have), len(controls - orders))")
    images, orders_missing = re.search(r"MISSING (\d+) (\d+)", out).groups()
    return int(images), int(orders_missing)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--verbose", action="store_true", help="the portal's warnings")
    parser.add_argument("--max-rss", type=float, default=400,
                        help="the bound on the serve process's resident memory, MB")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; {args.seconds:.0f} s per phase")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_ct_series(Path(tmp) / "ct", 1)
        # production settings: fsync on, the AE table cached as by default
        portal = start_portal(Path(tmp) / "var", PORTAL_STORAGE_FSYNC="on",
                              PORTAL_CONFIG_CACHE_SECONDS="2")
        try:
            token = setup(portal)["token"]
            results = {}
            for name, attackers in (("legitimate load alone", False),
                                    ("with the attacks", True)):
                counts, peak, acked = phase(portal, files, token, args.seconds, attackers)
                results[name] = (counts, peak, acked)
                rates = ", ".join(f"{what} {counts.ok.get(what, 0) / args.seconds:.1f}/s"
                                  for what in ("stored", "orders", "qido", "pages"))
                errors = {k: v for k, v in counts.errors.items() if k not in ATTACKS}
                print(f"{name}: {rates}; errors {errors or 'none'}; "
                      f"peak RSS {peak:.0f} MB", flush=True)
                if attackers:
                    print("  attacks run: " + ", ".join(f"{k} {counts.ok.get(k, 0)}"
                                                        for k in ATTACKS))
            stored = [uid for r in results.values() for uid in r[2][0]]
            acked = [c for r in results.values() for c in r[2][1]]
            lost_images, lost_orders = missing(portal, stored, acked)
            print(f"acknowledged: {len(stored)} images stored ({lost_images} not in the "
                  f"archive), {len(acked)} orders answered AA ({lost_orders} not in it)")
            peak = max(r[1] for r in results.values())
            ok = peak <= args.max_rss and not lost_images and not lost_orders
            print(f"{'PASS' if ok else 'FAIL'}: peak RSS {peak:.0f} MB (bound "
                  f"{args.max_rss:.0f} MB); acknowledged but lost: "
                  f"{lost_images + lost_orders}")
        finally:
            portal.stop()
            if "--verbose" in sys.argv:
                lines = [line for line in portal.output().splitlines()
                         if "WARNING" in line or "ERROR" in line]
                print("\n".join(sorted(set(re.sub(r"^\S+ \S+ ", "", line)
                                            for line in lines))[:60]))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.update(portal_env(Path(tempfile.gettempdir()) / "unused"))
    socket.setdefaulttimeout(30)
    sys.exit(main())
