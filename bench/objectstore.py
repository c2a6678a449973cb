#!/usr/bin/env python
"""Object storage against local files, in one run: C-STORE ingest (DCMTK storescu, 1 and 4
associations, 2 SCP processes) and whole-study WADO-RS as stored (curl), with the files on
the local disk and in a real S3 object store (Ceph RADOS Gateway, one BlueStore OSD on this
machine's disk, started here by scripts/objectstore.sh).

    .venv/bin/python bench/objectstore.py --count 400 --repeat 3

Ingest: instances/s (median, min, max over the repeats), each repeat into a new archive (and a
new bucket). WADO-RS: the 300-instance CT study, MB/s of the whole multipart answer.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicomweb  # noqa: E402
from ingest import ROOT, Portal, _proc_stat, make_ct_series, send  # noqa: E402

S3_PORT = 17680


def s3_env(endpoint: str) -> dict[str, str]:
    """A new bucket's settings: each measured archive starts empty."""
    return {"PORTAL_STORAGE_URL": f"s3://bench-{uuid.uuid4().hex[:16]}/archive",
            "PORTAL_S3_ENDPOINT_URL": endpoint, "PORTAL_S3_ACCESS_KEY_ID": "portal",
            "PORTAL_S3_SECRET_ACCESS_KEY": "portal-test-secret"}


def ceph_cpu_seconds(ceph: Path) -> float:
    """User + system CPU time so far of the object store's daemons (gateway, OSD, monitor)."""
    ticks = 0
    for name in ("rgw", "osd", "mon"):
        fields = _proc_stat((ceph / f"{name}.pid").read_text().strip())
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def ingest(files: list[Path], endpoint: str, repeat: int, processes: int, ceph: Path) -> None:
    print(f"{'ingest (storescu -> portal, fsync on)':58} {'assoc':>5}  {'median':>8} "
          f"{'min':>8} {'max':>8}  (inst/s; CPU ms per instance: portal, object store)")
    with tempfile.TemporaryDirectory(prefix="objectstore-bench-") as workdir:
        for where in ("local files", "object store"):
            for assocs in (1, 4):
                rates, cpu, store_cpu = [], [], []
                for n in range(repeat):
                    env = s3_env(endpoint) if where == "object store" else {}
                    server = Portal(processes, True, env,
                                    f"portal, {processes} SCP processes, {where}")
                    tmp = Path(workdir) / f"{where[0]}{assocs}.{n}"
                    tmp.mkdir()
                    port = server.start(tmp)
                    try:
                        before, store_before = server.cpu_seconds(), ceph_cpu_seconds(ceph)
                        rates.append(send(files, port, assocs, "PORTAL", tmp))
                        cpu.append((server.cpu_seconds() - before) / len(files) * 1000)
                        store_cpu.append((ceph_cpu_seconds(ceph) - store_before)
                                         / len(files) * 1000)
                        assert server.count() == len(files), "not every instance indexed"
                    finally:
                        server.stop()
                print(f"{server.label:58} {assocs:>5}  {statistics.median(rates):8.0f} "
                      f"{min(rates):8.0f} {max(rates):8.0f}  {statistics.median(cpu):6.1f} "
                      f"{statistics.median(store_cpu):6.1f}", flush=True)


def wado(files: list[Path], endpoint: str, repeat: int) -> None:
    study_uid = dicomweb._study_uid(files[0])
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    for where, env in (("local files", {}), ("object store", s3_env(endpoint))):
        server = dicomweb.Portal(env, f"portal (serve), {where}")
        with tempfile.TemporaryDirectory() as tmpdir:
            dimse, base, headers = server.start(Path(tmpdir))
            try:
                dicomweb.load(dimse, files)
                whole = f"{base}/studies/{study_uid}"
                dicomweb.curl(whole, headers, accept)  # warm-up
                results = [dicomweb.curl(whole, headers, accept) for _ in range(repeat)]
                size = results[0][1]
                rates = sorted(size / r[0] / 1e6 for r in results)
                dicomweb.row(server.label, "WADO-RS whole study, as stored",
                             [r[0] for r in results],
                             f"{size / 1e6:.0f} MB, median {statistics.median(rates):.0f} MB/s "
                             f"(min {rates[0]:.0f}, max {rates[-1]:.0f})")
            finally:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--only", choices=["ingest", "wado"])
    args = parser.parse_args()
    files = make_ct_series(ROOT / "bench" / "out" / "ct512", max(args.count, 300))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="ceph-") as ceph:
        endpoint = subprocess.run([str(ROOT / "scripts" / "objectstore.sh"), "start", ceph,
                                   str(S3_PORT)], check=True, capture_output=True,
                                  text=True).stdout.strip()
        try:
            if args.only != "wado":
                ingest(files[:args.count], endpoint, args.repeat, args.processes, Path(ceph))
            if args.only != "ingest":
                wado(files[:300], endpoint, max(args.repeat, 5))
        finally:
            subprocess.run([str(ROOT / "scripts" / "objectstore.sh"), "stop", ceph])


if __name__ == "__main__":
    main()
