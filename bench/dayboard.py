#!/usr/bin/env python
"""The day planner with a full day: --steps steps across --stations stations.

    .venv/bin/python bench/dayboard.py --steps 500 --stations 20

A fresh embedded data dir gets the stations and the orders (today, 07:00 to 19:00, some
STAT and HIGH, some overlapping) through the scheduler's own service
(`worklist.services.create_order`), then `manage.py serve` is started, a scheduler logs in
through the login page, and from outside, on one keep-alive connection: the whole planner
page, the grid alone (what the page fetches every 15 s), and the week. Medians of --repeat.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import growth  # noqa: E402
from archive_pages import _login  # noqa: E402

ROOT = HERE.parent

FILL = """
import datetime as dt, random
from django.utils import timezone
from worklist import services
from worklist.models import Procedure, Station
rng = random.Random(7)
stations = [Station.objects.create(ae_title=f"ROOM{{n:02d}}", name=f"room{{n}}", modality="CT")
            for n in range({stations})]
procedures = [Procedure.objects.create(code_value=f"P{{m}}", code_meaning=f"CT {{m}} min",
                                       modality="CT", duration_minutes=m) for m in (15, 20, 30)]
today = timezone.localdate()
for n in range({steps}):
    room = stations[n % len(stations)]
    start = dt.datetime.combine(today, dt.time(7)) + dt.timedelta(
        minutes=rng.randrange(0, 720, 5))
    priority = rng.choice(["ROUTINE"] * 8 + ["HIGH", "STAT"])
    services.create_order(
        patient=services.PatientData(f"DB{{n:05d}}", f"PLANNER^PATIENT{{n}}"),
        procedure=rng.choice(procedures), step=services.station_step(room, start),
        actor="bench", priority=priority)
print(Station.objects.count(), "stations")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DJANGO_"))}
        env.update({"PORTAL_DATA_DIR": str(Path(tmp) / "var")})
        env.pop("REDIS_URL", None)
        env.pop("DATABASE_URL", None)
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
        subprocess.run([*manage, "shell", "-c", FILL.format(steps=args.steps,
                                                            stations=args.stations)],
                       env=env, check=True, cwd=ROOT)
        serve = growth.Serve(env)
        try:
            base = f"http://127.0.0.1:{serve.http}"
            session = _login(base)
            for label, query in (("planner page, the day", ""),
                                 ("the grid alone (the 15-second update)", "?fragment=1"),
                                 ("the week", "?view=week")):
                times, size = growth._http_times(session, f"{base}/worklist/{query}", args.repeat)
                print(f"{label} ({args.steps} steps, {args.stations} stations)".ljust(62),
                      f"{statistics.median(times) * 1000:.1f} ms (min {min(times) * 1000:.1f},"
                      f" max {max(times) * 1000:.1f}), {size} bytes", flush=True)
        finally:
            serve.stop()


if __name__ == "__main__":
    main()
