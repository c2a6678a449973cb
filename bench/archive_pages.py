#!/usr/bin/env python
"""The archive's pages at size: the study list with N studies, and ZIP downloads.

    .venv/bin/python bench/archive_pages.py --studies 100000

A fresh data dir (embedded SQLite) is filled with ``--studies`` one-instance studies through
the real ingest code in-process (bench/growth.py's archive: 12% of names start with A, dates
over 1,000 days), then `manage.py serve` is started on it, a user logs in through the login
page, and from outside, on one keep-alive connection:

- the study list page, whole (HTML rendered), with its default sort (newest first), sorted by
  patient name, searched by a name word (``adams``: any part, accents and case aside), and its
  last page at 100 a page;
- the 300-image CT study of bench/ingest.py (512x512, 158 MB), sent by storescu, downloaded
  as a ZIP and as a DICOMDIR media folder, MB/s of ZIP bytes read by the client.

With --orthanc, Orthanc (Debian's package) holds the same CT study and is asked for its ZIP
(``/studies/{id}/archive``) and its media folder (``/studies/{id}/media``) the same way.
Medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import growth  # noqa: E402
from ingest import make_ct_series, send  # noqa: E402

ROOT = HERE.parent


def fill(count: int, part: int, parts: int) -> None:
    growth.PER_STUDY, growth.BIG_STUDY = 1, 0  # one instance a study: N studies
    growth.populate(count, part, parts)


def _login(base: str):
    import requests

    session = requests.Session()
    session.get(f"{base}/login/", timeout=30)
    answer = session.post(f"{base}/login/", data={
        "username": "bench", "password": "Bench-pass-2026!",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]}, timeout=30)
    answer.raise_for_status()
    return session


def _throughput(session, url: str, repeat: int) -> tuple[float, int]:
    """MB/s of the body as the client reads it (1 MiB reads), median of ``repeat``."""
    rates, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        size = 0
        with session.get(url, stream=True, timeout=300) as answer:
            answer.raise_for_status()
            for chunk in answer.iter_content(1 << 20):
                size += len(chunk)
        rates.append(size / (time.perf_counter() - started) / 1e6)
    return statistics.median(rates), size


def line(what: str, value: str) -> None:
    print(f"{what:58} {value}", flush=True)


def _downloads(session, downloads: list[tuple[str, str]], repeat: int) -> None:
    """Each (label, URL) downloaded, its MB/s printed: the portal's and the peer's alike."""
    for label, url in downloads:
        rate, size = _throughput(session, url, max(3, repeat // 3))
        line(label, f"{rate:.0f} MB/s ({size / 1e6:.0f} MB)")


def measure(studies: int, repeat: int, images: list[Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DJANGO_"))}
        env.update({"PORTAL_DATA_DIR": str(Path(tmp) / "var"), "PORTAL_STORAGE_FSYNC": "0"})
        env.pop("REDIS_URL", None)
        env.pop("DATABASE_URL", None)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--fill", "0", "0", "1"], env=env,
                       check=True, cwd=ROOT)
        fillers = [subprocess.Popen([sys.executable, __file__, "--fill", str(studies),
                                     str(part), "2"], env=env, cwd=ROOT) for part in (0, 1)]
        if any(p.wait() for p in fillers):
            raise RuntimeError("a filling process failed")
        line("populate (in-process store_instance)",
             f"{studies} studies in {time.perf_counter() - started:.0f} s")
        serve = growth.Serve(env)
        try:
            base = f"http://127.0.0.1:{serve.http}"
            session = _login(base)
            for label, query in (("study list, newest first", ""),
                                 ("study list, sorted by patient name", "?sort=name"),
                                 ("study list, name word 'adams'", "?patient_name=adams"),
                                 ("study list, last page at 100 a page", "?size=100&page=")):
                if query.endswith("page="):
                    first = session.get(f"{base}/studies/?size=100", timeout=300).text
                    pages = re.search(r"Page 1 of (\d+)", first)
                    query += pages.group(1) if pages else "1"
                times, size = growth._http_times(session, f"{base}/studies/{query}", repeat)
                line(f"{label} ({studies} studies)", f"{statistics.median(times) * 1000:.1f} ms "
                     f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}), "
                     f"{size} bytes")
            send(images, serve.dimse, 4, "PORTAL", Path(tmp))
            from pydicom import dcmread

            study = dcmread(images[0], stop_before_pixels=True).StudyInstanceUID
            url = f"{base}/studies/{study}/download/"
            _downloads(session, [("ZIP of the 300-image CT study", url),
                                 ("DICOMDIR media ZIP of the CT study", url + "?format=dicomdir")],
                       repeat)
        finally:
            serve.stop()


def measure_orthanc(repeat: int, images: list[Path]) -> None:
    import requests

    with tempfile.TemporaryDirectory() as tmp:
        peer = growth.OrthancPeer(Path(tmp))
        peer.start()
        try:
            send(images, peer.dimse, 4, "PORTAL", Path(tmp))
            base = f"http://127.0.0.1:{peer.http}"
            session = requests.Session()
            study = session.get(f"{base}/studies", timeout=30).json()[0]
            url = f"{base}/studies/{study}"
            _downloads(session, [("Orthanc: ZIP of the CT study", f"{url}/archive"),
                                 ("Orthanc: media ZIP (DICOMDIR) of the CT study",
                                  f"{url}/media")], repeat)
        finally:
            peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--orthanc", action="store_true")
    parser.add_argument("--fill", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill is not None:
        fill(*args.fill)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    images = make_ct_series(ROOT / "bench" / "out" / "ct512", 300)
    measure(args.studies, args.repeat, images)
    if args.orthanc:
        measure_orthanc(args.repeat, images)


if __name__ == "__main__":
    main()
