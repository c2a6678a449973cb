#!/usr/bin/env python
"""C-FIND study-level latency with DCMTK findscu as the client, against our SCP and, in the
same run, Orthanc (Debian package) holding the same studies.

    .venv/bin/python bench/cfind.py --studies 1000 10000 --repeat 7

Studies are one small instance each; about 12% of patient names start with A and about 12%
of study dates fall in the queried range, so those queries match ~1,200 of 10,000 studies.
Reports the median wall time of one findscu run (association + query + all answers), once
with findscu printing every answer (its default) and once with `findscu -q`, which prints
nothing: the difference is findscu's own formatting of ~1 KB of text per answer.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import DCMTK_ENV, ROOT, Orthanc, Portal  # noqa: E402

NAMES_A = ["ADAMS", "ALLEN", "ANDERSON", "ALVAREZ", "ABBOTT", "ATKINS"]
NAMES_OTHER = ["BAKER", "CLARK", "DAVIS", "EVANS", "FISHER", "GARCIA", "HILL", "JONES",
               "KING", "LEWIS", "MILLER", "NELSON", "OWENS", "PARKER", "REED", "SMITH",
               "TAYLOR", "WALKER", "YOUNG", "ZIMMER"]
FIRST = ["ANNA", "BEN", "CARLA", "DAVID", "EVA", "FRANK", "GINA", "HUGO"]
DAYS = 1000  # study dates spread over DAYS days from 2020-01-01; the range below is 120 days


def make_studies(out: Path, count: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if len(list(out.glob("*.dcm"))) >= count:
        return out
    rng = random.Random(11)
    pixels = np.zeros((8, 8), dtype=np.uint16).tobytes()
    start = np.datetime64("2020-01-01")
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        last = rng.choice(NAMES_A) if rng.random() < 0.12 else rng.choice(NAMES_OTHER)
        ds.PatientName = f"{last}^{rng.choice(FIRST)}"
        ds.PatientID = f"PID{i:06d}"
        ds.PatientBirthDate, ds.PatientSex = "19700101", rng.choice("MF")
        day = str(start + np.timedelta64(rng.randrange(DAYS), "D")).replace("-", "")
        ds.StudyDate, ds.StudyTime = day, f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.AccessionNumber, ds.StudyID = f"ACC{i:07d}", "1"
        ds.StudyDescription, ds.ReferringPhysicianName = "CT CHEST", "REF^DOC"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, 1
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels
        ds.save_as(out / f"s{i:06d}.dcm", enforce_file_format=True)
    return out


QUERIES = {
    "PatientName=A*": ["PatientName=A*"],
    "PatientID=PID000042": ["PatientID=PID000042"],
    "StudyDate range (~12%)": ["StudyDate=20200601-20200928"],
    # Rows has no index column: each of the ~1,200 index matches is also matched against its
    # stored header (every one has 8 rows); Orthanc ignores the key at study level
    "PatientName=A* Rows=8": ["PatientName=A*", "Rows=8"],
}
RETURN_KEYS = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "PatientID",
               "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
               "ModalitiesInStudy", "NumberOfStudyRelatedInstances"]


def findscu(port: int, keys: list[str], extract_to: Path | None = None,
            quiet: bool = False) -> float:
    """Wall time of one findscu run. By default findscu prints every answer (about 1 KB of
    text each); with ``quiet`` it runs with ``-q`` and prints only errors. Its output goes to
    a file, as from a shell, so reading a pipe in this process costs nothing here."""
    args = ["/usr/bin/findscu", "-S", "-aet", "BENCH", "-aec", "PORTAL"]
    if quiet:
        args.append("-q")
    if extract_to:
        args += ["-X", "-od", str(extract_to)]
    for key in RETURN_KEYS + keys:
        args += ["-k", key]
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.run([*args, "127.0.0.1", str(port)], stdout=log, stderr=log,
                              env=DCMTK_ENV, timeout=120)
        elapsed = time.perf_counter() - started
        log.seek(0)
        text = log.read().decode(errors="replace")
    if proc.returncode != 0 or "E:" in text:
        raise RuntimeError(text[-2000:])
    return elapsed


def load(port: int, what: Path | list[Path]) -> None:
    """Send a folder's ``*.dcm`` files, or the files listed, over four associations."""
    files = sorted(what.glob("*.dcm")) if isinstance(what, Path) else list(what)
    groups = [files[i::4] for i in range(4)]
    procs = [subprocess.Popen(["/usr/bin/storescu", "-aet", "BENCH", "-aec", "PORTAL",
                               "127.0.0.1", str(port), *map(str, group)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV)
             for group in groups if group]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err.decode()[-2000:])


def measure(server, folder: Path, count: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port = server.start(tmp)
        try:
            load(port, folder)
            for label, keys in QUERIES.items():
                out = tmp / f"x{abs(hash(label))}"
                out.mkdir()
                findscu(port, keys, extract_to=out)  # warm-up, and count the matches
                matches = len(list(out.iterdir()))
                for quiet in (False, True):
                    times = [findscu(port, keys, quiet=quiet) * 1000 for _ in range(repeat)]
                    mode = "-q" if quiet else "prints"
                    print(f"{server.label:52} {count:>6} {label:24} {mode:>6} {matches:>7} "
                          f"{statistics.median(times):8.0f} {min(times):6.0f} "
                          f"{max(times):6.0f}", flush=True)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=["portal", "orthanc"])
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"{'server':52} {'studies':>6} {'query':24} {'findscu':>6} {'matches':>7} {'median':>8} "
          f"{'min':>6} {'max':>6}  ms")
    for count in args.studies:
        folder = make_studies(ROOT / "bench" / "out" / f"studies{count}", count)
        servers = [Portal(1, fsync=False), Orthanc()]
        if args.only:
            servers = [s for s in servers if s.name == args.only]
        for server in servers:
            measure(server, folder, count, args.repeat)


if __name__ == "__main__":
    main()
