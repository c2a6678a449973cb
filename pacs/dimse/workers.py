"""Several SCP processes on one port: one Python process is one core. The children accept on
the parent's listening socket, and the least busy process takes each new association
(core.tcp)."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0


def spawn_scp_processes(count: int, listen_fd: int) -> list[subprocess.Popen]:
    """Start `count` more SCP processes accepting on the listening socket `listen_fd`
    (DimseListener.share()); return once each of them accepts, or has failed to start."""
    manage = Path(settings.BASE_DIR) / "manage.py"
    ready, ready_w = os.pipe()  # each child writes one byte to it once it accepts
    command = [sys.executable, str(manage), "dimse_scp", "--quiet", "--processes", "1",
               "--listen-fd", str(listen_fd), "--ready-fd", str(ready_w)]
    try:
        processes = [subprocess.Popen(command, pass_fds=(listen_fd, ready_w))
                     for _ in range(count)]
    finally:
        os.close(ready_w)
    started, deadline = 0, time.monotonic() + START_TIMEOUT
    try:
        while started < count and select.select([ready], [], [],
                                                max(deadline - time.monotonic(), 0))[0]:
            got = os.read(ready, count)
            if not got:
                break  # every child has exited or closed it
            started += len(got)
    finally:
        os.close(ready)
    if started < count:
        log.error("%d of %d more SCP processes did not start", count - started, count)
    return processes


def report_ready(ready_fd: int | None) -> None:
    """In a child: tell the parent that this process accepts (see spawn_scp_processes)."""
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each (they let running associations finish, PORTAL_SHUTDOWN_GRACE_SECONDS),
    then wait for them a little longer than that before killing one."""
    for proc in processes:
        proc.terminate()
    deadline = time.monotonic() + settings.SHUTDOWN_GRACE_SECONDS + 10
    for proc in processes:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
