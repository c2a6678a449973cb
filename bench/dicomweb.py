#!/usr/bin/env python
"""DICOMweb latency and throughput, our `serve` against Orthanc + its DICOMweb plugin (Debian
packages `orthanc`, `orthanc-dicomweb`) holding the same data, in the same run.

    .venv/bin/python bench/dicomweb.py --repeat 7

Data: the 10,000 one-instance studies of bench/cfind.py (~12% of names start with A) and one
300-instance study of 512x512 CT images (~160 MB, bench/ingest.py), loaded with storescu.
Measured with curl (one process per request, new connection, body discarded):
- QIDO-RS  /studies?PatientName=A*  (all ~1,200 matches, application/dicom+json), and the
  same with Rows=8, a key without an index column (matched against the stored headers)
- WADO-RS  /studies/{uid}/metadata  of the 300-instance study
- WADO-RS  /studies/{uid}  with transfer-syntax=* (as stored): MB/s of the whole body
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cfind import load, make_studies  # noqa: E402
from ingest import DCMTK_ENV, ROOT, free_port, make_ct_series, wait_port  # noqa: E402

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Portal:
    label = "portal (manage.py serve, waitress, SQLite)"

    def __init__(self, extra_env: dict[str, str] | None = None, label: str = "") -> None:
        self.extra_env = extra_env or {}
        self.label = label or self.label

    def start(self, tmp: Path) -> tuple[int, str, dict[str, str]]:
        http, dimse = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DATABASE",
                                                                         "REDIS"))}
        env.update({"PORTAL_DATA_DIR": str(tmp / "portal"), "PORTAL_HTTP_PORT": str(http),
                    "PORTAL_DIMSE_PORT": str(dimse), "PORTAL_DIMSE_HOST": "127.0.0.1",
                    "PORTAL_STORAGE_FSYNC": "0", "PORTAL_HL7_PORT": str(free_port()),
                    "PORTAL_HL7_HOST": "127.0.0.1", "PORTAL_WS_PORT": "-1", **self.extra_env})
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
        out = subprocess.run([*manage, "shell", "-c", (
            "from pacs.models import ApplicationEntity as A;"
            "A.objects.get_or_create(ae_title='BENCH', host='127.0.0.1', port=104);"
            "from django.contrib.auth.models import User;"
            "from rest_framework.authtoken.models import Token;"
            "u, _ = User.objects.get_or_create(username='bench');"
            "from core.roles import grant; grant(u, 'viewer');"
            "print(Token.objects.get_or_create(user=u)[0].key)")],
            env=env, check=True, capture_output=True, text=True).stdout
        token = out.strip().splitlines()[-1]
        log = tmp / "serve.log"
        self.proc = subprocess.Popen([*manage, "serve", "--no-migrate", "--no-hl7"], env=env,
                                     stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            wait_port(http)
        except RuntimeError:
            raise RuntimeError(log.read_text()[-3000:]) from None
        wait_port(dimse)
        return dimse, f"http://127.0.0.1:{http}/dicomweb", {"Authorization": f"Token {token}"}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Orthanc:
    label = "Orthanc 1.10 + DICOMweb plugin (Debian)"

    def start(self, tmp: Path) -> tuple[int, str, dict[str, str]]:
        dimse, http = free_port(), free_port()
        conf = tmp / "orthanc.json"
        conf.write_text(json.dumps({
            "Name": "bench", "StorageDirectory": str(tmp / "orthanc"),
            "IndexDirectory": str(tmp / "orthanc"), "DicomAet": "PORTAL",
            "DicomPort": dimse, "HttpPort": http, "RemoteAccessAllowed": False,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "DicomTcpNoDelay": True, "AuthenticationEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }))
        self.proc = subprocess.Popen(["Orthanc", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=DCMTK_ENV)
        wait_port(dimse)
        wait_port(http)
        return dimse, f"http://127.0.0.1:{http}/dicom-web", {}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def curl(url: str, headers: dict[str, str], accept: str) -> tuple[float, int, int]:
    """(seconds, bytes, HTTP status) of one GET, body discarded."""
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}",
            "-H", f"Accept: {accept}"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    seconds, size, status = out.split()
    if status != "200":  # an error answer is fast: never time it as the real one
        raise RuntimeError(f"GET {url}: HTTP {status}")
    return float(seconds), int(size), int(status)


def count_matches(url: str, headers: dict[str, str]) -> int:
    out = subprocess.run(["curl", "-s", "-H", "Accept: application/dicom+json",
                          *[a for k, v in headers.items() for a in ("-H", f"{k}: {v}")], url],
                         capture_output=True, text=True, check=True).stdout
    answer = json.loads(out or "[]")
    if not isinstance(answer, list):
        raise RuntimeError(f"GET {url}: {out[:200]}")
    return len(answer)


def row(label: str, what: str, times: list[float], extra: str) -> None:
    ms = [t * 1000 for t in times]
    print(f"{label:44} {what:34} {statistics.median(ms):8.1f} {min(ms):8.1f} {max(ms):8.1f}"
          f"  {extra}", flush=True)


def measure(server, studies: Path, big: list[Path], repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        dimse, base, headers = server.start(Path(tmpdir))
        try:
            load(dimse, studies)
            load(dimse, big)  # not the whole folder: bench/ingest.py may have made more
            study_uid = _study_uid(big[0])
            qido = f"{base}/studies?PatientName=A*&limit=100000"
            matches = count_matches(qido, headers)
            json_type = "application/dicom+json"
            curl(qido, headers, json_type)  # warm-up
            times = [curl(qido, headers, json_type)[0] for _ in range(repeat)]
            row(server.label, "QIDO /studies?PatientName=A*", times, f"{matches} matches")
            # Rows has no index column: each index match is matched against its stored header
            header = f"{base}/studies?PatientName=A*&Rows=8&limit=100000"
            curl(header, headers, json_type)
            times = [curl(header, headers, json_type)[0] for _ in range(repeat)]
            row(server.label, "QIDO ...&Rows=8 (header key)", times,
                f"{count_matches(header, headers)} matches")
            meta = f"{base}/studies/{study_uid}/metadata"
            curl(meta, headers, json_type)
            results = [curl(meta, headers, json_type) for _ in range(repeat)]
            row(server.label, f"WADO-RS study /metadata ({len(big)} inst.)",
                [r[0] for r in results], f"{results[0][1] / 1e6:.1f} MB JSON")
            whole = f"{base}/studies/{study_uid}"
            accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
            curl(whole, headers, accept)
            results = [curl(whole, headers, accept) for _ in range(repeat)]
            size = results[0][1]
            rates = sorted(size / r[0] / 1e6 for r in results)
            row(server.label, "WADO-RS whole study, as stored", [r[0] for r in results],
                f"{size / 1e6:.0f} MB, median {statistics.median(rates):.0f} MB/s "
                f"(min {rates[0]:.0f}, max {rates[-1]:.0f})")
        finally:
            server.stop()


def _study_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=10000)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=["portal", "orthanc"])
    args = parser.parse_args()
    studies = make_studies(ROOT / "bench" / "out" / f"studies{args.studies}", args.studies)
    big = make_ct_series(ROOT / "bench" / "out" / "ct512", args.instances)[:args.instances]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; {args.studies} studies + 1 study of "
          f"{len(big)} instances ({sum(p.stat().st_size for p in big) / 1e6:.0f} MB)")
    print(f"{'server':44} {'request':34} {'median':>8} {'min':>8} {'max':>8}  ms")
    servers = []
    if args.only != "orthanc":
        servers.append(Portal())
    if args.only != "portal" and os.path.exists(DICOMWEB_PLUGIN):
        servers.append(Orthanc())
    for server in servers:
        started = time.monotonic()
        measure(server, studies, big, args.repeat)
        print(f"  ({server.label}: {time.monotonic() - started:.0f} s with loading)")


if __name__ == "__main__":
    main()
