#!/usr/bin/env python
"""HL7 ORM^O01 NW throughput and ACK latency over MLLP against `manage.py hl7_listener`.

    .venv/bin/python bench/hl7_orders.py --messages 1000 --repeat 5

Each message is a new order (distinct accession numbers) that the gateway stores raw, parses,
writes into the worklist and acknowledges. Clients: python-hl7's MLLPClient, one message at a
time per connection (send, wait for the ACK), over 1 and 4 connections. Each run is repeated
(``--repeat``, interleaved) on the same listener and database: one row per run and the median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hl7.client import MLLPClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ROOT, free_port, wait_port  # noqa: E402


def message(n: int, run: str) -> bytes:
    obr = ["OBR", "1", f"P{run}{n}", "", "CTCHEST^CT chest^L"] + [""] * 20
    obr[18], obr[19], obr[20] = f"{run}{n:06d}", f"RP{n}", f"SPS{n}"  # IHE RAD-4
    obr[24] = "CT"
    segments = [
        f"MSH|^~\\&|BENCH_RIS|H|PORTAL|H|20261122120000||ORM^O01|{run}{n}|P|2.3.1",
        f"PID|||PAT{n % 500:05d}^^^H||DOE^PATIENT{n % 500}||19700101|F",
        "PV1||O|||||4711^HOUSE^GREGORY",
        f"ORC|NW|P{run}{n}|||SC||^^^20261201{8 + n % 10:02d}00",
        "|".join(obr),
    ]
    return ("\r".join(segments) + "\r").encode()


def run_client(port: int, payloads: list[bytes], latencies: list[float]) -> None:
    with MLLPClient("127.0.0.1", port) as client:
        for payload in payloads:
            started = time.perf_counter()
            reply = client.send_message(payload)
            while b"\x1c\r" not in reply:
                reply += client.socket.recv(65536)
            latencies.append((time.perf_counter() - started) * 1000)
            if b"MSA|AA" not in reply:
                raise RuntimeError(reply.decode("latin-1"))


# the benchmark's RIS, registered as an admin would (senders must be, PORTAL_HL7_*)
REGISTER_SENDER = ("from hl7gw.models import Sender; Sender.objects.create("
                   "sending_application='BENCH_RIS', sending_facility='H', "
                   "addresses='127.0.0.1', may_order=True)")


def measure(port: int, count: int, connections: int, run: str) -> tuple[float, list[float]]:
    payloads = [message(n, run) for n in range(count)]
    latencies: list[float] = []
    threads = [threading.Thread(target=run_client,
                                args=(port, payloads[i::connections], latencies))
               for i in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.perf_counter() - started), sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; ORM^O01 NW, {args.messages} per run")
    print(f"{'connections':>11} {'run':>6} {'msg/s':>8} {'ACK p50 ms':>11} {'p90 ms':>8} "
          f"{'p99 ms':>8}")
    with tempfile.TemporaryDirectory() as tmpdir:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(PORTAL_DATA_DIR=str(Path(tmpdir) / "portal"), PORTAL_HL7_HOST="127.0.0.1")
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
        subprocess.run([*manage, "shell", "-c", REGISTER_SENDER], env=env, check=True)
        proc = subprocess.Popen([*manage, "hl7_listener", "--port", str(port), "--quiet"],
                                env=env)
        try:
            wait_port(port)
            measure(port, 50, 1, "W")  # warm-up
            rows: dict[int, list[tuple[float, float, float, float]]] = {1: [], 4: []}
            for repeat in range(args.repeat):
                for connections in rows:
                    rate, lat = measure(port, args.messages, connections,
                                        f"{'AB'[connections > 1]}{repeat}-")
                    row = (rate, statistics.median(lat), lat[int(len(lat) * 0.9)],
                           lat[int(len(lat) * 0.99)])
                    rows[connections].append(row)
                    print(f"{connections:>11} {repeat + 1:>6} {row[0]:8.0f} {row[1]:11.2f} "
                          f"{row[2]:8.2f} {row[3]:8.2f}", flush=True)
            for connections, found in rows.items():
                median = [statistics.median(column) for column in zip(*found, strict=True)]
                print(f"{connections:>11} {'median':>6} {median[0]:8.0f} {median[1]:11.2f} "
                      f"{median[2]:8.2f} {median[3]:8.2f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
