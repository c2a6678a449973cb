"""Start the real `manage.py serve` as a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.samples import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class PortalProcess:
    proc: subprocess.Popen
    http_port: int
    dimse_port: int
    hl7_port: int
    ws_port: int
    data_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        return self.log.read_text()

    def shell(self, code: str) -> str:
        """Run Python in `manage.py shell` against this portal's data dir (what it prints)."""
        done = subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
                              cwd=ROOT, env=portal_env(self.data_dir), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def portal_env(data_dir: Path) -> dict[str, str]:
    """This environment without the portal's own settings, the data dir ``data_dir``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PORTAL_", "DJANGO_", "DATABASE_URL", "REDIS_URL"))}
    env["PORTAL_DATA_DIR"] = str(data_dir)
    env["PORTAL_CONFIG_CACHE_SECONDS"] = "0"  # a change to the AE table applies at once
    return env


def start_portal(data_dir: Path, **extra_env: str) -> PortalProcess:
    http_port, dimse_port, hl7_port, ws_port = free_port(), free_port(), free_port(), free_port()
    env = portal_env(data_dir)
    env.update({
        "PORTAL_HTTP_PORT": str(http_port),
        "PORTAL_DIMSE_PORT": str(dimse_port),
        "PORTAL_DIMSE_HOST": "127.0.0.1",
        "PORTAL_HL7_PORT": str(hl7_port),
        "PORTAL_HL7_HOST": "127.0.0.1",
        "PORTAL_WS_PORT": str(ws_port),
        "PORTAL_STORAGE_FSYNC": "0",
        **extra_env,
    })
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve"],
        cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )
    portal = PortalProcess(proc, http_port, dimse_port, hl7_port, ws_port, data_dir, log)
    try:
        wait_until(lambda: "Stop with Ctrl+C" in portal.output(), 60, 0.2,
                   "serve to start", alive=proc)
    except AssertionError as exc:
        portal.stop()
        raise RuntimeError(f"serve did not start:\n{portal.output()}") from exc
    return portal


def process_tree(pid: int) -> list[int]:
    """`pid` and its child processes (one level: the SCP processes `serve` starts)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *children]


def connections_by_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections to local `port` each process holds (/proc)."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                established.add(fields[9])  # the socket's inode
    counts = {}
    for pid in pids:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        counts[pid] = sum(link[8:-1] in established for link in links
                          if link.startswith("socket:["))
    return counts
