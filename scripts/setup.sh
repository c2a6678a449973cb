#!/usr/bin/env bash
# Create .venv and install the pinned Python dependencies (used by run.sh and test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(cat "$req" requirements.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
  touch "$stamp"
fi
scripts/viewer.sh
