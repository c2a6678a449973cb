#!/usr/bin/env python
"""Ingest benchmark: CT-like 512x512 16-bit instances sent with DCMTK storescu over 1 and 4
associations to our DIMSE SCP, and, in the same run, to peers (DCMTK storescp writing files;
Orthanc if the `orthanc` Debian package is installed).

    .venv/bin/python bench/ingest.py --count 400 --repeat 3 --processes 2

Reports instances/s (median, min, max over the repeats) and, for our SCP, the CPU time its
processes spent per instance (user + system, from /proc; median over the repeats).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# A free loopback port, never the same one twice in a process: the portal refuses two
# listeners on one port, and bench/dicomweb.py takes three in a row.
from tests.samples import free_port  # noqa: E402

STORESCU = "/usr/bin/storescu"
# DCMTK leaves Nagle's algorithm on unless TCP_NODELAY is set in its environment; without it
# every receiver is held to ~20 inst/s by 40 ms delayed-ACK stalls, so set it for all peers.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def make_ct_series(out: Path, count: int) -> list[Path]:
    """CT-like instances: one study, one series, realistic header, 512x512 16-bit pixels."""
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("*.dcm"))
    if len(existing) >= count:
        return existing[:count]
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 + (yy - 256) ** 2 < 200**2) * 1000
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20261122"
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
        ds.AccessionNumber = "BENCH0001"
        ds.Modality = "CT"
        ds.Manufacturer = "Bench"
        ds.InstitutionName = "Benchmark Hospital"
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.StationName = "CT01"
        ds.StudyDescription = "CT CHEST"
        ds.SeriesDescription = "AXIAL 1.0"
        ds.ManufacturerModelName = "BenchScan 64"
        ds.PatientName = "Bench^Patient"
        ds.PatientID = "BENCH-1"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "1.0"
        ds.KVP = "120"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-250.0, -250.0, float(-i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame
        ds.SliceLocation = float(-i)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.PixelSpacing = [0.976, 0.976]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        pixels = (body + rng.integers(0, 200, (512, 512))).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(out / f"ct{i:05d}.dcm", enforce_file_format=True)
    return sorted(out.glob("*.dcm"))[:count]


def send(files: list[Path], port: int, associations: int, aec: str, tmp: Path) -> float:
    """Send with `associations` parallel storescu processes; return instances/s."""
    groups = [files[i::associations] for i in range(associations)]
    lists = []
    for n, group in enumerate(groups):
        lst = tmp / f"group{n}"
        if lst.exists():
            shutil.rmtree(lst)
        lst.mkdir()
        for f in group:
            os.symlink(f, lst / f.name)
        lists.append(lst)
    started = time.perf_counter()
    procs = [
        subprocess.Popen([STORESCU, "-aet", "BENCH", "-aec", aec, "+sd", "+r", "127.0.0.1",
                          str(port), str(lst)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=DCMTK_ENV)
        for lst in lists
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0 or b"E:" in err:
            raise RuntimeError(err.decode()[-2000:])
    return len(files) / (time.perf_counter() - started)


def _proc_stat(pid: int | str) -> list[str]:
    """/proc/PID/stat fields after the command name (state, ppid, ...); [] if gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Receiver:
    """A receiving server run as a subprocess for the duration of one measurement."""

    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Portal(Receiver):
    name = "portal"

    def __init__(self, processes: int, fsync: bool, extra_env: dict[str, str] | None = None,
                 label: str = "") -> None:
        self.processes, self.fsync, self.extra_env = processes, fsync, extra_env or {}
        self.label = label or \
            f"portal ({processes} SCP process(es), fsync={'on' if fsync else 'off'})"

    def start(self, tmp: Path) -> int:
        self.port = free_port()
        self.env = {**os.environ, "PORTAL_DATA_DIR": str(tmp / "portal"),
                    "PORTAL_DIMSE_PORT": str(self.port), "PORTAL_DIMSE_HOST": "127.0.0.1",
                    "PORTAL_STORAGE_FSYNC": "1" if self.fsync else "0", **self.extra_env}
        for key in ("DATABASE_URL", "REDIS_URL"):
            self.env.pop(key, None)
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=self.env, check=True)
        subprocess.run([*manage, "shell", "-c", "from pacs.models import ApplicationEntity as A;"
                        "A.objects.get_or_create(ae_title='BENCH', host='127.0.0.1', port=104, "
                        "defaults={'may_query': True})"],
                       env=self.env, check=True, capture_output=True)
        self.proc = subprocess.Popen([*manage, "dimse_scp", "--processes", str(self.processes),
                                      "--quiet"], env=self.env)
        wait_port(self.port)
        time.sleep(1.0 * self.processes)  # let every process bind before measuring
        return self.port

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the SCP process and the processes it spawned."""
        stats = [_proc_stat(self.proc.pid)] + [
            fields for p in Path("/proc").iterdir()
            if p.name.isdigit() and (fields := _proc_stat(p.name))[1:2] == [str(self.proc.pid)]]
        ticks = sum(int(f[11]) + int(f[12]) for f in stats if f)  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def count(self) -> int:
        out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c",
                              "from pacs.models import Instance; print(Instance.objects.count())"],
                             env=self.env, check=True, capture_output=True, text=True).stdout
        return int(out.strip().splitlines()[-1])



class StoreScp(Receiver):
    label = "DCMTK storescp (writing files)"

    def start(self, tmp: Path) -> int:
        self.port = free_port()
        out = tmp / "storescp"
        out.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["/usr/bin/storescp", "-od", str(out), "-aet", "PORTAL",
                                      "--max-pdu", "131072", str(self.port)], env=DCMTK_ENV)
        wait_port(self.port)
        return self.port



class Orthanc(Receiver):
    name = "orthanc"
    label = "Orthanc (Debian package, index + files, TCP_NODELAY)"

    def start(self, tmp: Path) -> int:
        self.port, http = free_port(), free_port()
        conf = tmp / "orthanc.json"
        conf.write_text(json.dumps({
            "Name": "bench", "StorageDirectory": str(tmp / "orthanc"),
            "IndexDirectory": str(tmp / "orthanc"), "DicomAet": "PORTAL",
            "DicomPort": self.port, "HttpPort": http, "RemoteAccessAllowed": False,
            "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True,
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
            "DicomTcpNoDelay": True, "Plugins": [],
        }))
        self.proc = subprocess.Popen(["Orthanc", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=DCMTK_ENV)
        wait_port(self.port)
        return self.port



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--fsync", choices=["on", "off", "both"], default="on")
    parser.add_argument("--only", choices=["portal", "storescp", "orthanc"],
                        help="measure one receiver only")
    args = parser.parse_args()

    files = make_ct_series(ROOT / "bench" / "out" / "ct512", args.count)
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"{len(files)} CT instances, {mb:.0f} MB; machine: {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    servers: list = [Portal(args.processes, f == "on")
                     for f in (["on", "off"] if args.fsync == "both" else [args.fsync])]
    if args.processes > 1:
        servers.insert(0, Portal(1, args.fsync != "off"))
    if not args.no_peers:
        servers.append(StoreScp())
        if shutil.which("Orthanc"):
            servers.append(Orthanc())
    kinds = {"portal": Portal, "storescp": StoreScp, "orthanc": Orthanc}
    if args.only:
        servers = [s for s in servers if isinstance(s, kinds[args.only])]
        if args.only == "orthanc" and not servers:
            servers = [Orthanc()]
    print(f"{'receiver':58} {'assoc':>5}  {'median':>8} {'min':>8} {'max':>8}  "
          f"{'cpu ms':>8}  (inst/s; SCP CPU per instance, median)")
    # Every run's files stay until the end: deleting thousands of files slows the next run's
    # file creation on ext4 without a journal, which skips inodes freed in the last 1-6
    # minutes (recently_deleted(); 16 us against 120-160 us per create here), and that
    # would bill each receiver for the cleanup of the one before it.
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as workdir:
        for number, (server, assocs) in enumerate(itertools.product(servers, (1, 4))):
            rates, cpu = [], []
            for repeat in range(args.repeat):
                tmp = Path(workdir) / f"run{number}.{repeat}"
                tmp.mkdir()
                port = server.start(tmp)
                try:
                    before = server.cpu_seconds() if isinstance(server, Portal) else 0
                    rates.append(send(files, port, assocs, "PORTAL", tmp))
                    if isinstance(server, Portal):
                        cpu.append((server.cpu_seconds() - before) / len(files) * 1000)
                        assert server.count() == len(files), "not every instance indexed"
                finally:
                    server.stop()
            cpu_text = f"{statistics.median(cpu):8.1f}" if cpu else f"{'':>8}"
            print(f"{server.label:58} {assocs:>5}  {statistics.median(rates):8.0f} "
                  f"{min(rates):8.0f} {max(rates):8.0f}  {cpu_text}", flush=True)


if __name__ == "__main__":
    main()
