"""Several SCP processes on one port (SO_REUSEPORT): one Python process is one core."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings


def spawn_scp_processes(count: int, port: int) -> list[subprocess.Popen]:
    manage = Path(settings.BASE_DIR) / "manage.py"
    env = {**os.environ, "PORTAL_DIMSE_PORT": str(port), "PORTAL_DIMSE_PROCESSES": "1"}
    return [
        subprocess.Popen([sys.executable, str(manage), "dimse_scp", "--quiet"], env=env)
        for _ in range(count)
    ]


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
