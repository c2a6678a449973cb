#!/usr/bin/env python
"""Ingest into archives made beforehand, taking turns: is a large archive slower to store into
than an empty one, measured in the same minutes?

    .venv/bin/python bench/ingest_turns.py --rounds 2 --runs 3 \\
        --archive empty=/tmp/empty/var@postgres://portal@127.0.0.1/portal_empty \\
        --archive 1M=/tmp/big/var@postgres://portal@127.0.0.1/portal

Each archive is a data dir (PORTAL_DATA_DIR), with its PostgreSQL database after the @ (none:
the data dir's embedded SQLite). Make one of N instances with bench/growth.py's fillers, e.g.
``PORTAL_DATA_DIR=/tmp/big/var DATABASE_URL=... bench/growth.py --fill 0 0 1`` (the tables),
then ``--fill N 0 2`` and ``--fill N 1 2`` at once; an empty one with ``--fill 0 0 1`` alone.

bench/growth.py measures each size in turn, half an hour apart at 1,000,000 instances, and
the machine's speed drifts more than that (docs/benchmarks.md). Here each round starts
`manage.py serve` on each archive in turn and sends --runs pairs of storescu runs (200 new
CT images of 512x512 over 1 association, 200 over 4, as growth.py does); instances/s, the
median of each archive's runs over all rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import growth  # noqa: E402
from ingest import make_ct_series  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", action="append", required=True,
                        help="LABEL=DATA_DIR[@DATABASE_URL]")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="pairs of runs per round")
    args = parser.parse_args()
    archives = []
    for spec in args.archive:
        label, _, where = spec.partition("=")
        data_dir, _, database = where.partition("@")
        env = growth.server_env(data_dir)
        env.pop("DATABASE_URL", None)
        if database:
            env["DATABASE_URL"] = database
        archives.append((label, env))
    rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ingest-turns-") as tmp:
        for round_ in range(args.rounds):
            for label, env in archives:
                # new images for every run: a re-sent one would be a duplicate
                images = make_ct_series(Path(tmp) / f"ct-{round_}-{label}", 400 * args.runs)
                server = growth.Serve(env)
                try:
                    got = growth.ingest_runs(images, server.dimse, args.runs, Path(tmp))
                finally:
                    server.stop()
                for associations, runs in got.items():
                    rates.setdefault((label, associations), []).extend(runs)
                print(f"round {round_ + 1}, {label}: done", flush=True)
    print(f"{'archive':12} {'assoc':>5}  {'median':>7} {'min':>7} {'max':>7}  (inst/s)")
    for (label, associations), runs in sorted(rates.items(), key=lambda item: item[0][1]):
        print(f"{label:12} {associations:>5}  {statistics.median(runs):>7.0f} "
              f"{min(runs):>7.0f} {max(runs):>7.0f}")


if __name__ == "__main__":
    main()
