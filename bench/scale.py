#!/usr/bin/env python
"""Ingest in scale mode against embedded, in one run: C-STORE (DCMTK storescu, 1 and 4
associations) into

- the embedded portal: `manage.py dimse_scp`, SQLite, 1 and 2 SCP processes;
- scale mode: Celery workers running the DIMSE listener (`celery worker --listeners dimse`),
  PostgreSQL and Redis started here (Debian's packages, default settings: fsync and
  synchronous commit on, which stores set off for themselves under PORTAL_STORAGE_FSYNC=on,
  as SQLite does not sync their commits), 1 and 2 workers sharing the port.

    .venv/bin/python bench/scale.py --count 400 --repeat 5 [--sync full]

Every receiver writes its files with fsync on (`--sync full`: PORTAL_STORAGE_FSYNC=full, so
that both databases sync each store's commit); every run checks that all instances were
indexed. Instances/s, median (min, max) over the repeats, each into a new archive; the
receivers take turns within each repeat.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ROOT, Portal, free_port, make_ct_series, send, wait_port  # noqa: E402

PG_PORT, REDIS_PORT = 54391, 63891


def as_postgres(*command: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *command], check=True, stdout=subprocess.DEVNULL)


class Services:
    """PostgreSQL and Redis on loopback, for the run."""

    def __init__(self, work: Path, pg_options: str = "") -> None:
        self.work = work
        work.mkdir()
        if os.geteuid() == 0:
            subprocess.run(["chown", "postgres", str(work)], check=True)
        self.pgbin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        as_postgres(str(self.pgbin / "initdb"), "-D", str(work / "pg"), "-A", "trust",
                    "-U", "portal")
        as_postgres(str(self.pgbin / "pg_ctl"), "-D", str(work / "pg"), "-l",
                    str(work / "pg.log"), "-w", "-o",
                    f"-p {PG_PORT} -k {work} -c listen_addresses=127.0.0.1 {pg_options}",
                    "start")
        subprocess.run(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--daemonize", "yes",
                        "--pidfile", str(work / "redis.pid")], check=True,
                       stdout=subprocess.DEVNULL)
        self.database = 0

    def new_database(self) -> str:
        self.database += 1
        name = f"bench{self.database}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "portal", "-d",
                        "postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
        return f"postgres://portal@127.0.0.1:{PG_PORT}/{name}"

    def stop(self) -> None:
        as_postgres(str(self.pgbin / "pg_ctl"), "-D", str(self.work / "pg"), "-m", "fast",
                    "stop")
        pid = (self.work / "redis.pid").read_text().strip()
        subprocess.run(["kill", pid])


class Workers(Portal):
    """`workers` Celery workers with the DIMSE listener, on a new PostgreSQL database."""

    def __init__(self, workers: int, services: Services, sync: str = "on") -> None:
        super().__init__(workers, True)
        self.workers, self.services, self.sync = workers, services, sync
        self.label = f"scale mode, {workers} worker(s), PostgreSQL + Redis, fsync={sync}"

    def start(self, tmp: Path) -> int:
        self.port = free_port()
        self.env = {**os.environ, "PORTAL_DATA_DIR": str(tmp / "portal"),
                    "PORTAL_DIMSE_PORT": str(self.port), "PORTAL_DIMSE_HOST": "127.0.0.1",
                    "PORTAL_STORAGE_FSYNC": self.sync,
                    "DATABASE_URL": self.services.new_database(),
                    "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
                    "PORTAL_HL7_PORT": "0"}
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=self.env, check=True)
        subprocess.run([*manage, "shell", "-c", "from pacs.models import ApplicationEntity as A;"
                        "A.objects.get_or_create(ae_title='BENCH', host='127.0.0.1', port=104)"],
                       env=self.env, check=True, capture_output=True)
        self.procs = []
        for n in range(self.workers):
            log = tmp / f"worker{n}.log"
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal", "worker", "--listeners",
                 "dimse", "--concurrency", "1", "--loglevel", "WARNING", "-n",
                 f"bench{n}-{self.port}@%h"], cwd=ROOT, env=self.env, stdout=open(log, "w"),
                stderr=subprocess.STDOUT))
        wait_port(self.port)
        time.sleep(3.0 * self.workers)  # every worker's listener bound before measuring
        self.proc = self.procs[0]
        return self.port

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-options", default="",
                        help='more server settings, e.g. "-c commit_delay=1000"')
    parser.add_argument("--scale-only", action="store_true", help="the workers only")
    parser.add_argument("--sync", choices=("on", "full"), default="on",
                        help="PORTAL_STORAGE_FSYNC of every receiver (full: each store's "
                             "commit is synced too, on both databases)")
    args = parser.parse_args()
    files = make_ct_series(ROOT / "bench" / "out" / "ct512", args.count)
    print(f"{len(files)} CT instances; machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"{'receiver':58} {'assoc':>5}  {'median':>8} {'min':>8} {'max':>8}  (inst/s)")
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as workdir:
        os.chmod(workdir, 0o755)  # PostgreSQL's own account keeps its data in there
        services = Services(Path(workdir) / "services", args.pg_options)
        try:
            sync = {"PORTAL_STORAGE_FSYNC": args.sync}
            receivers = [
                Portal(n, True, sync, f"portal ({n} SCP process(es), fsync={args.sync})")
                for n in (1, 2)] + [Workers(n, services, args.sync) for n in (1, 2)]
            receivers = receivers[2 if args.scale_only else 0:]
            # The receivers take turns within each repeat, so that a slow spell of the machine
            # (its speed varies by 2x from hour to hour) falls on all of them alike.
            for assocs in (1, 4):
                rates: dict[int, list[float]] = {n: [] for n in range(len(receivers))}
                for repeat in range(args.repeat):
                    for number, receiver in enumerate(receivers):
                        tmp = Path(workdir) / f"run{number}.{assocs}.{repeat}"
                        tmp.mkdir()
                        port = receiver.start(tmp)
                        try:
                            rates[number].append(send(files, port, assocs, "PORTAL", tmp))
                            assert receiver.count() == len(files), "not every instance indexed"
                        finally:
                            receiver.stop()
                for number, receiver in enumerate(receivers):
                    got = rates[number]
                    print(f"{receiver.label:58} {assocs:>5}  {statistics.median(got):8.0f} "
                          f"{min(got):8.0f} {max(got):8.0f}", flush=True)
        finally:
            services.stop()


if __name__ == "__main__":
    main()
