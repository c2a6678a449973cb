#!/usr/bin/env bash
# Install everything and start the whole portal in embedded mode (SQLite, files under ./var).
# Configuration: environment variables (see README), e.g. PORTAL_HTTP_PORT=8080 scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
exec .venv/bin/python manage.py serve "$@"
