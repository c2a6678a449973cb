#!/usr/bin/env python
"""Modality Worklist C-FIND latency with 10,000 scheduled steps: station + date queries.

    .venv/bin/python bench/mwl.py --steps 10000 --queries 200

Three clients, against our SCP and, in the same run, DCMTK `wlmscpfs` serving the same items
as files:
- a blocking-socket client on one open association (A-ASSOCIATE encoded by pynetdicom, the
  C-FIND written and the answers read with plain socket calls): the time of each C-FIND from
  request to final response, p50/p90 over --queries station/date pairs;
- pynetdicom as SCU on one open association, the same way (its polling reactors add their
  own milliseconds);
- DCMTK `findscu -W`, one process per query (association set-up and process start included),
  median of 15 runs.
Each station+date pair matches ~10 steps (20 stations, 50 days).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import DCMTK_ENV, ROOT, free_port, wait_port  # noqa: E402

STATIONS = [f"CT{i:02d}" for i in range(20)]
DAYS = [f"202612{d:02d}" for d in range(1, 32)] + [f"202701{d:02d}" for d in range(1, 20)]


def items(count: int) -> list[Dataset]:
    rng = random.Random(5)
    out = []
    for i in range(count):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.AccessionNumber = f"B{i:07d}"
        ds.PatientName = f"PATIENT{i:05d}^TEST"
        ds.PatientID = f"MWL{i:06d}"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyInstanceUID = generate_uid()
        ds.RequestedProcedureID, ds.RequestedProcedureDescription = f"RP{i}", "CT CHEST"
        ds.RequestedProcedurePriority = "ROUTINE"
        ds.ReferringPhysicianName = "REF^DOC"
        sps = Dataset()
        sps.Modality = "CT"
        sps.ScheduledStationAETitle = rng.choice(STATIONS)
        sps.ScheduledStationName = sps.ScheduledStationAETitle.lower()
        sps.ScheduledProcedureStepStartDate = rng.choice(DAYS)
        sps.ScheduledProcedureStepStartTime = f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00"
        sps.ScheduledProcedureStepID = f"SPS{i}"
        sps.ScheduledProcedureStepDescription = "CT CHEST"
        sps.ScheduledPerformingPhysicianName = ""
        ds.ScheduledProcedureStepSequence = [sps]
        out.append(ds)
    return out


def query(station: str, day: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    for key in ("AccessionNumber", "PatientName", "PatientID", "PatientBirthDate",
                "PatientSex", "StudyInstanceUID", "RequestedProcedureID",
                "RequestedProcedureDescription"):
        setattr(ds, key, "")
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = day
    for key in ("Modality", "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID",
                "ScheduledProcedureStepDescription", "ScheduledStationName"):
        setattr(sps, key, "")
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def write(ds: Dataset, path: Path) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, implicit_vr=False, little_endian=True)  # a dataset file, as dump2dcm writes


def pynetdicom_latency(port: int, pairs: list[tuple[str, str]]) -> tuple[list[float], float]:
    ae = AE(ae_title="CT00")
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", port, ae_title="PORTAL")
    assert assoc.is_established, "no association"
    times, matches = [], []
    try:
        for station, day in pairs:
            started = time.perf_counter()
            answers = [a for s, a in assoc.send_c_find(query(station, day), MWL)
                       if s and s.Status == 0xFF00]
            times.append((time.perf_counter() - started) * 1000)
            matches.append(len(answers))
    finally:
        assoc.release()
    return times, statistics.mean(matches)


def raw_latency(port: int, pairs: list[tuple[str, str]]) -> tuple[list[float], float]:
    """C-FIND round trips on one association without a polling client library."""
    import socket as socketlib

    from pynetdicom.dsutils import encode
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        ImplementationClassUIDNotification,
        MaximumLengthNotification,
    )
    from pynetdicom.presentation import build_context

    sys.path.insert(0, str(ROOT))
    from dicomnet import wire

    rq = A_ASSOCIATE()
    rq.application_context_name = "1.2.840.10008.3.1.1.1"
    rq.calling_ae_title, rq.called_ae_title = "CT00", "PORTAL"
    context = build_context(MWL, [ExplicitVRLittleEndian])
    context.context_id = 1
    rq.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 0
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.3.4"
    rq.user_information = [max_length, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(rq)
    sock = socketlib.create_connection(("127.0.0.1", port))
    sock.setsockopt(socketlib.IPPROTO_TCP, socketlib.TCP_NODELAY, 1)
    link = wire.PduSocket(sock)
    link.send_raw(pdu.encode())
    pdu_type, _body = link.read_pdu()
    assert pdu_type == wire.A_ASSOCIATE_AC, "association not accepted"
    times, matches = [], []
    for n, (station, day) in enumerate(pairs, start=1):
        command = wire.encode_command({
            wire.AFFECTED_SOP_CLASS_UID: MWL, wire.COMMAND_FIELD: wire.C_FIND_RQ,
            wire.MESSAGE_ID: n, wire.PRIORITY: 0,
            wire.COMMAND_DATA_SET_TYPE: wire.DATASET_PRESENT})
        data = encode(query(station, day), False, True)
        started = time.perf_counter()
        link.send_message(1, command, data, 0)
        answers = 0
        while True:
            message = link.read_message()
            status = message.command[wire.STATUS]
            if status not in (0xFF00, 0xFF01):
                break
            answers += 1
        times.append((time.perf_counter() - started) * 1000)
        matches.append(answers)
    link.send_raw(bytes([wire.A_RELEASE_RQ, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
    link.read_pdu()
    sock.close()
    return times, statistics.mean(matches)


def findscu_times(port: int, query_file: Path, runs: int = 15) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(["/usr/bin/findscu", "-W", "-aet", "CT00", "-aec", "PORTAL",
                               "127.0.0.1", str(port), str(query_file)],
                              capture_output=True, text=True, env=DCMTK_ENV)
        times.append((time.perf_counter() - started) * 1000)
        if proc.returncode != 0 or "E:" in proc.stderr:
            raise RuntimeError(proc.stderr[-2000:])
    return times


def report(label: str, raw: tuple[list[float], float], pyn: tuple[list[float], float],
           scu: list[float]) -> None:
    (raw_t, matches), (pyn_t, _) = raw, pyn
    raw_t.sort()
    pyn_t.sort()
    print(f"{label:30} {matches:7.1f} {statistics.median(raw_t):8.1f} "
          f"{raw_t[int(len(raw_t) * 0.9)]:8.1f} {statistics.median(pyn_t):10.1f} "
          f"{statistics.median(scu):11.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-peers", action="store_true",
                        help="the portal only (wlmscpfs reads every file per query)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; {args.steps} scheduled steps")
    print(f"{'server':30} {'matches':>7} {'raw p50':>8} {'raw p90':>8} {'pynetdicom':>10} "
          f"{'findscu':>11}   (ms)")
    data = items(args.steps)
    rng = random.Random(9)
    pairs = [(rng.choice(STATIONS), rng.choice(DAYS)) for _ in range(args.queries)]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        qfile = tmp / "query.dcm"
        write(query(*pairs[0]), qfile)
        # --- our SCP
        files = tmp / "items"
        files.mkdir()
        for i, ds in enumerate(data):
            write(ds, files / f"{i:06d}.wl")
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        port = free_port()
        env.update(PORTAL_DATA_DIR=str(tmp / "portal"), PORTAL_DIMSE_PORT=str(port),
                   PORTAL_DIMSE_HOST="127.0.0.1")
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
        subprocess.run([*manage, "import_worklist", str(files)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*manage, "shell", "-c", "from pacs.models import ApplicationEntity as A;"
                        "A.objects.create(ae_title='CT00', host='127.0.0.1', port=104, "
                        "may_query_worklist=True)"], env=env, check=True, capture_output=True)
        proc = subprocess.Popen([*manage, "dimse_scp", "--quiet"], env=env)
        try:
            wait_port(port)
            raw_latency(port, pairs[:10])  # warm-up
            report("portal (SQLite)", raw_latency(port, pairs), pynetdicom_latency(port, pairs),
                   findscu_times(port, qfile))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        if args.no_peers:
            return
        # --- DCMTK wlmscpfs on the same items as files
        db = tmp / "wlmdb" / "PORTAL"
        db.mkdir(parents=True)
        for path in files.iterdir():
            shutil.copy(path, db / path.name)
        (db / "lockfile").touch()
        port = free_port()
        proc = subprocess.Popen(["/usr/bin/wlmscpfs", "-dfp", str(tmp / "wlmdb"), str(port)],
                                env=DCMTK_ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            few = pairs[: max(10, args.queries // 10)]  # it reads every file per query
            report("DCMTK wlmscpfs 3.6.7 (files)", raw_latency(port, few),
                   pynetdicom_latency(port, few), findscu_times(port, qfile, runs=7))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
