#!/usr/bin/env python
"""Cost as the archive grows: the same measurements on an archive of N instances, for each N.

    .venv/bin/python bench/growth.py --instances 0 10000 100000

For each N, a fresh data dir (embedded SQLite; PostgreSQL when DATABASE_URL is set) is
filled with N instances through the real ingest code, `pacs.services.ingest.store_instance`,
in-process (no network, but the same index rows and files as a C-STORE makes): studies of
ten small CT instances, one patient each, 12% of patient names starting with A, study dates
over 1,000 days, and one study of 300 instances. Then `manage.py serve` is started on it and
measured from outside:

- start-up: from starting `serve` to its banner (migrations already applied);
- C-FIND (Study Root, STUDY level) by PatientID and by PatientName=A*, pynetdicom on one open
  association: the time from request to last answer, i.e. the server's work and loopback;
- QIDO-RS `/studies?PatientName=A*&limit=100` and `/studies?StudyDate=<one day>`, and the
  300-instance study's `/metadata`, with requests on one keep-alive connection;
- ingest: 200 CT images of 512x512 (bench/ingest.py's) sent by storescu over 1 association,
  and 200 more over 4, instances/s, the median of --ingest-runs such pairs (new images each);
- `manage.py check_storage`: wall time;
- database size per instance (the SQLite file, or pg_total_relation_size of the tables).

With --orthanc, the peer at each size: Orthanc (Debian's package, its default SQLite index,
the DICOMweb plugin), filled with the same instances through its own ingest (REST
`POST /instances`, four connections at once), then measured the same way (start-up: until its
REST API answers). It has no `check_storage`.

Medians of --repeat runs. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import DCMTK_ENV, make_ct_series, send  # noqa: E402

from tests.samples import free_port  # noqa: E402

NAMES_A = ["ADAMS", "ALLEN", "ANDERSON", "ALVAREZ", "ABBOTT", "ATKINS"]
NAMES_OTHER = ["BAKER", "CLARK", "DAVIS", "EVANS", "FISHER", "GARCIA", "HILL", "JONES",
               "KING", "LEWIS", "MILLER", "NELSON", "OWENS", "PARKER", "REED", "SMITH",
               "TAYLOR", "WALKER", "YOUNG", "ZIMMER"]
PER_STUDY = 10
BIG_STUDY = 300
FILL_PROCESSES = 2  # --fill-processes
INGEST_RUNS = 3  # --ingest-runs
ONE_DAY = "20210315"


def instances(count: int, part: int = 0, parts: int = 1):
    """The archive of ``count`` instances, as Part 10 bytes: all of it, or, for one of
    ``parts`` processes filling together, the studies whose number modulo ``parts`` is
    ``part``. Yields (instances counted so far, bytes)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    rng = random.Random(5)
    root = "1.2.826.0.1.3680043.10.1456.28"
    pixels = bytes(128)

    def instance(study: int, number: int, patient: tuple[str, str], date: str) -> bytes:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = \
            f"{root}.{study}.1.{number}"
        ds.PatientID, ds.PatientName = patient
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{root}.{study}", f"{root}.{study}.1"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = date, "101500", f"G{study:08d}"
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, number
        ds.StudyDescription, ds.Modality, ds.SeriesDescription = "CT CHEST", "CT", "AXIAL"
        ds.InstitutionName, ds.BodyPartExamined = "Growth Hospital", "CHEST"
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels
        out = DicomBytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        return out.getvalue()

    stored, study = 0, 0
    big = min(BIG_STUDY, count)
    for number in range(1, big + 1 if part == 0 else 1):  # the study /metadata is asked for
        yield number, instance(0, number, ("BIG0", "BIG^STUDY"), ONE_DAY)
    stored = big
    while stored < count:
        study += 1
        last = rng.choice(NAMES_A) if rng.random() < 0.12 else rng.choice(NAMES_OTHER)
        patient = (f"G{study:07d}", f"{last}^{study}")
        day = 20200101 + rng.randrange(1000)
        date = f"{2020 + (day - 20200101) // 365}{rng.randrange(1, 13):02d}" \
               f"{rng.randrange(1, 29):02d}"
        for number in range(1, min(PER_STUDY, count - stored) + 1):
            stored += 1
            if study % parts == part:
                yield stored, instance(study, number, patient, date)


def populate(count: int, part: int = 0, parts: int = 1) -> None:
    """In this process (Django set up by the caller's environment): ``count`` instances, or,
    as one of ``parts`` processes filling together, the studies whose number modulo ``parts``
    is ``part`` (the same archive whatever the number of processes)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    from django.core.management import call_command

    from pacs.services.ingest import store_instance

    if count == 0:  # the first call, alone: the fillers find the tables made
        call_command("migrate", verbosity=0)
        return
    started = time.perf_counter()
    shown = 0
    for stored, data in instances(count, part, parts):
        store_instance(data=data, received_from="growth")
        if part == 0 and stored - shown >= 20000:
            shown = stored
            rate = stored / (time.perf_counter() - started)
            print(f"  populated {stored} ({rate:.0f} inst/s)", flush=True)
    print(f"  populated {count} in {time.perf_counter() - started:.0f} s", flush=True)


class Serve:
    """`manage.py serve` on a data dir; the ports it took."""

    def __init__(self, env: dict[str, str]) -> None:
        self.http, self.dimse, self.hl7, self.ws = (free_port() for _ in range(4))
        self.env = {**env, "PORTAL_HTTP_PORT": str(self.http),
                    "PORTAL_DIMSE_PORT": str(self.dimse), "PORTAL_DIMSE_HOST": "127.0.0.1",
                    "PORTAL_HL7_PORT": str(self.hl7), "PORTAL_HL7_HOST": "127.0.0.1",
                    "PORTAL_WS_PORT": str(self.ws), "PORTAL_DIMSE_ALLOW_UNKNOWN_AE": "1",
                    "DJANGO_SUPERUSER_USERNAME": "bench",
                    "DJANGO_SUPERUSER_PASSWORD": "Bench-pass-2026!"}
        self.log = Path(env["PORTAL_DATA_DIR"]).parent / "serve.log"  # not in the data dir
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "serve",
                                      "--no-migrate"], env=self.env, stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT, cwd=ROOT)
        while "Stop with Ctrl+C" not in self.log.read_text():
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-2000:])
            time.sleep(0.02)
        self.startup = time.perf_counter() - started

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def _token(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c",
                          "from django.contrib.auth.models import User\n"
                          "from rest_framework.authtoken.models import Token\n"
                          "print(Token.objects.get_or_create(user=User.objects.get("
                          "username='bench'))[0].key)"],
                         env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.split()[-1]


def _find_times(port: int, keys: dict[str, str], repeat: int) -> tuple[list[float], int]:
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate",
                    "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
        setattr(query, keyword, "")
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title="PORTAL")
    # pynetdicom leaves Nagle's algorithm on: without this each query waits out a delayed ACK
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times, matches = [], 0
    try:
        for _ in range(repeat + 1):
            started = time.perf_counter()
            answers = [s for s, _ in assoc.send_c_find(query, FIND) if s.Status == 0xFF00]
            times.append(time.perf_counter() - started)
            matches = len(answers)
    finally:
        assoc.release()
    return times[1:], matches


def _http_times(session, url: str, repeat: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(repeat + 1):
        started = time.perf_counter()
        answer = session.get(url, timeout=120)
        times.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"{url}: {answer.status_code} {answer.text[:200]}")
        size = len(answer.content)
    return times[1:], size


def _db_bytes(env: dict[str, str]) -> int:
    if env.get("DATABASE_URL"):
        out = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "shell", "-c",
             "from django.db import connection\nc = connection.cursor()\n"
             "c.execute(\"select sum(pg_total_relation_size(c.oid)) from pg_class c join "
             "pg_namespace n on n.oid=c.relnamespace where n.nspname='public' and "
             "c.relkind='r'\")\nprint(c.fetchone()[0])"],
            env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        return int(out.stdout.split()[-1])
    db = Path(env["PORTAL_DATA_DIR"]) / "portal.sqlite3"
    return sum(p.stat().st_size for p in db.parent.glob("portal.sqlite3*"))


def _measure_running(line, dimse_port: int, session, base: str, count: int, repeat: int,
                     images: list[Path], tmp: Path) -> None:
    """The measurements made from outside a running server, the portal or the peer alike:
    C-FIND, QIDO-RS and /metadata on ``base``, then ingest by storescu."""
    for label, keys in (("C-FIND STUDY PatientID=<one>", {"PatientID": "G0000042"}),
                        ("C-FIND STUDY PatientName=A*", {"PatientName": "A*"})):
        times, matches = _find_times(dimse_port, keys, repeat)
        line(label, f"{statistics.median(times) * 1000:.1f} ms (min "
             f"{min(times) * 1000:.1f}, max {max(times) * 1000:.1f}), {matches} matches")
    for label, url in (
            ("QIDO /studies?PatientName=A*&limit=100", f"{base}/studies?PatientName=A*&limit=100"),
            (f"QIDO /studies?StudyDate={ONE_DAY}", f"{base}/studies?StudyDate={ONE_DAY}"),
            ("WADO-RS /metadata, 300 instances",
             f"{base}/studies/1.2.826.0.1.3680043.10.1456.28.0/metadata")):
        if "metadata" in url and count < BIG_STUDY:
            continue
        times, size = _http_times(session, url, repeat)
        line(label, f"{statistics.median(times) * 1000:.1f} ms (min "
             f"{min(times) * 1000:.1f}, max {max(times) * 1000:.1f}), {size} bytes")
    for associations, runs in ingest_runs(images, dimse_port, INGEST_RUNS, tmp).items():
        line(f"ingest 512x512 CT, {associations} association(s)",
             f"{statistics.median(runs):.0f} inst/s (min {min(runs):.0f}, max {max(runs):.0f})")


def ingest_runs(images: list[Path], dimse_port: int, runs: int,
                tmp: Path) -> dict[int, list[float]]:
    """Instances/s of ``runs`` pairs of storescu runs, 200 of ``images`` over 1 association
    then the next 200 over 4 (``images`` holds 400 per run: a re-sent image would be a
    duplicate). One run spreads by up to a quarter from the next on this machine, so callers
    take the median; the pairs take turns so that drift falls on both."""
    rates: dict[int, list[float]] = {1: [], 4: []}
    for run in range(runs):
        for associations, first in ((1, 400 * run), (4, 400 * run + 200)):
            rates[associations].append(send(images[first:first + 200], dimse_port,
                                            associations, "PORTAL", tmp))
    return rates


def server_env(data_dir: str) -> dict[str, str]:
    """The environment of a measured portal on ``data_dir``: none of this shell's portal
    settings, no file syncs, the embedded jobs (nothing here needs workers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DJANGO_"))}
    env.update({"PORTAL_DATA_DIR": data_dir, "PORTAL_STORAGE_FSYNC": "0",
                "PORTAL_CONFIG_CACHE_SECONDS": "2"})
    env.pop("REDIS_URL", None)
    return env


def measure(count: int, repeat: int, images: list[Path]) -> None:
    import requests

    with tempfile.TemporaryDirectory() as tmp:
        env = server_env(str(Path(tmp) / "var"))
        if env.get("DATABASE_URL"):
            subprocess.run([sys.executable, str(ROOT / "manage.py"), "flush", "--no-input"],
                           env=env, check=True, cwd=ROOT, capture_output=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--fill", "0", "0", "1"], env=env,
                       check=True, cwd=ROOT)  # the tables first
        fillers = [subprocess.Popen([sys.executable, __file__, "--fill", str(count), str(part),
                                     str(FILL_PROCESSES)], env=env, cwd=ROOT)
                   for part in range(FILL_PROCESSES)] if count else []
        if any(p.wait() for p in fillers):
            raise RuntimeError("a filling process failed")
        fill = time.perf_counter() - started
        db_bytes = _db_bytes(env)

        def line(what: str, value: str) -> None:
            print(f"{count:>9} {what:44} {value}", flush=True)

        line("populate (in-process store_instance)",
             f"{fill:.0f} s, {count / fill if count else 0:.0f} inst/s")
        line("database size per instance", f"{db_bytes / max(count, 1):.0f} B "
             f"({db_bytes / 1e6:.0f} MB)")
        startups = []
        for _ in range(3):
            server = Serve(env)
            startups.append(server.startup)
            server.stop()
        line("serve start-up (median of 3)", f"{statistics.median(startups) * 1000:.0f} ms")
        server = Serve(env)
        try:
            session = requests.Session()
            session.headers["Authorization"] = f"Token {_token(server.env)}"
            _measure_running(line, server.dimse, session,
                             f"http://127.0.0.1:{server.http}/dicomweb", count, repeat, images,
                             Path(tmp))
        finally:
            server.stop()
        started = time.perf_counter()
        checked = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check_storage",
                                  "--no-progress", "--min-age", "0"], env=env, cwd=ROOT,
                                 capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if checked.returncode != 0:
            raise RuntimeError(f"check_storage: {checked.stdout[-1000:]}{checked.stderr[-1000:]}")
        line("check_storage", f"{elapsed:.1f} s")


class OrthancPeer:
    """Orthanc (Debian's package) with its default SQLite index and its DICOMweb plugin, on a
    folder of its own; the ports it took and how long it took to answer."""

    PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

    def __init__(self, folder: Path) -> None:
        import json

        self.folder = folder
        self.dimse, self.http = free_port(), free_port()
        self.conf = folder / "orthanc.json"
        self.conf.write_text(json.dumps({
            "Name": "growth", "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"), "DicomAet": "PORTAL",
            "DicomPort": self.dimse, "HttpPort": self.http, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
            "DicomTcpNoDelay": True, "HttpThreadsCount": 8,
            "Plugins": [self.PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }))

    def start(self) -> float:
        import requests

        started = time.perf_counter()
        self.proc = subprocess.Popen(["Orthanc", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=DCMTK_ENV)
        while True:  # up: its REST API answers
            if self.proc.poll() is not None:
                raise RuntimeError("Orthanc ended at start")
            try:
                if requests.get(f"http://127.0.0.1:{self.http}/system", timeout=5).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.02)
        return time.perf_counter() - started

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)

    def db_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.folder / "db").glob("index*"))


def measure_orthanc(count: int, repeat: int, images: list[Path], fillers: int = 4) -> None:
    """The same archive in Orthanc, filled through its own ingest (REST POST /instances,
    ``fillers`` connections at once), and the same measurements from outside."""
    import threading

    import requests

    def line(what: str, value: str) -> None:
        print(f"{count:>9} orthanc {what:36} {value}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        peer = OrthancPeer(Path(tmp))
        peer.start()
        started = time.perf_counter()
        failures: list[str] = []

        def fill(part: int) -> None:
            session = requests.Session()
            for _, data in instances(count, part, fillers):
                answer = session.post(f"http://127.0.0.1:{peer.http}/instances", data=data,
                                      timeout=120)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                    return

        threads = [threading.Thread(target=fill, args=(n,)) for n in range(fillers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        fill_time = time.perf_counter() - started
        if failures:
            raise RuntimeError(f"Orthanc refused an instance: {failures[0]}")
        peer.stop()
        line("populate (REST POST /instances)",
             f"{fill_time:.0f} s, {count / fill_time if count else 0:.0f} inst/s")
        line("database size per instance", f"{peer.db_bytes() / max(count, 1):.0f} B "
             f"({peer.db_bytes() / 1e6:.0f} MB)")
        startups = []
        for _ in range(3):
            startups.append(peer.start())
            peer.stop()
        line("start-up (median of 3)", f"{statistics.median(startups) * 1000:.0f} ms")
        peer.start()
        try:
            _measure_running(line, peer.dimse, requests.Session(),
                             f"http://127.0.0.1:{peer.http}/dicom-web", count, repeat, images,
                             Path(tmp))
        finally:
            peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, nargs="+", default=[0, 10000, 100000])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--fill-processes", type=int, default=2,
                        help="processes filling the archive together")
    parser.add_argument("--orthanc", action="store_true",
                        help="also Orthanc (SQLite index, DICOMweb plugin) at each size")
    parser.add_argument("--ingest-runs", type=int, default=3,
                        help="storescu runs of 200 images per association count (median)")
    # a populating child: COUNT PART PARTS (COUNT 0: make the tables)
    parser.add_argument("--fill", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill is not None:
        populate(*args.fill)
        return
    global FILL_PROCESSES, INGEST_RUNS
    FILL_PROCESSES = max(1, args.fill_processes)
    INGEST_RUNS = max(1, args.ingest_runs)
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; database: {database}")
    images = make_ct_series(ROOT / "bench" / "out" / "ct512", 400 * INGEST_RUNS)
    for count in args.instances:
        measure(count, args.repeat, images)
        if args.orthanc:
            measure_orthanc(count, args.repeat, images)
    assert DCMTK_ENV  # storescu runs with TCP_NODELAY (bench/ingest.py)


if __name__ == "__main__":
    main()
