#!/usr/bin/env bash
# Install what the tests need (DCMTK, Orthanc, PostgreSQL, Redis, Ceph, Chromium, npm, nginx,
# openssl, Python packages),
# run:
#   1. ruff and the import layers, 2. the embedded suite (SQLite), 3. the scale slice against real PostgreSQL,
#   Redis and a Celery worker process, 4. the store and read paths on a real S3 object store.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v /usr/bin/storescu >/dev/null || need+=(dcmtk)
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v /usr/bin/chromium >/dev/null || need+=(chromium)
command -v /usr/sbin/Orthanc >/dev/null || need+=(orthanc)  # a third-party peer for the SCU tests
# its DICOMweb plugin: the differential test compares QIDO-RS answers with it
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v npm >/dev/null || need+=(npm)  # fetches the prebuilt OHIF viewer (tests/browser)
command -v /usr/sbin/nginx >/dev/null || need+=(nginx)  # the TLS reverse proxy of the HTTPS test
command -v openssl >/dev/null || need+=(openssl)  # makes the tests' certificate authority
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
scripts/setup.sh requirements-dev.txt
PY=.venv/bin/python

echo "== ruff"
.venv/bin/ruff check .

echo "== import layers (pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports --no-cache

echo "== embedded suite (SQLite)"
export PORTAL_DATA_DIR="$(mktemp -d)/var"
# examples per fuzz target (tests/fuzz): about half a minute in all on the CI machine
export FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-2000}"
set +e
$PY -m pytest -p no:cacheprovider "$@"
embedded=$?
set -e

echo "== scale slice (PostgreSQL + Redis + Celery worker)"
work="$(mktemp -d)"
chown postgres "$work" 2>/dev/null || true
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
pgport=54329; redisport=63799
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$pgbin/initdb" -D "$work/pg" -A trust -U portal >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $pgport -k $work -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
redis-server --port "$redisport" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --logfile "$work/redis.log" --pidfile "$work/redis.pid"
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  scripts/objectstore.sh stop "$work/ceph" 2>/dev/null || true
}
trap cleanup EXIT
set +e
DATABASE_URL="postgres://portal@127.0.0.1:$pgport/portal" \
REDIS_URL="redis://127.0.0.1:$redisport/0" \
  $PY -m pytest -p no:cacheprovider tests/scale
scale=$?
set -e

echo "== object store (Ceph RADOS Gateway): the archive's store and read paths on S3"
# a real S3 server (scripts/objectstore.sh installs and starts it); the protocol tests of
# storing, retrieving, sending, forwarding, deleting and exporting run again with their files
# in a bucket (tests/stored.py); with PostgreSQL, the backend's own tests and a site of a web
# node and two worker nodes sharing nothing but the database, Redis and the bucket
s3_endpoint="$(scripts/objectstore.sh start "$work/ceph" 17480)"
set +e
PORTAL_TEST_S3_ENDPOINT="$s3_endpoint" $PY -m pytest -p no:cacheprovider -q \
  tests/service/test_ingest.py tests/service/test_deletion.py \
  tests/service/test_import_export.py tests/service/test_patients_and_modify.py \
  tests/service/test_anonymize.py tests/service/test_study_list_and_downloads.py \
  tests/protocol/dicomweb/test_http.py \
  tests/protocol/dimse/test_retrieve.py tests/protocol/dimse/test_forwarding.py \
  tests/protocol/dimse/test_scu.py tests/protocol/dimse/test_scp_dcmtk.py \
  tests/protocol/dimse/test_limits.py tests/protocol/test_access_audit.py
on_s3=$?
DATABASE_URL="postgres://portal@127.0.0.1:$pgport/portal" \
REDIS_URL="redis://127.0.0.1:$redisport/0" PORTAL_TEST_S3_ENDPOINT="$s3_endpoint" \
  $PY -m pytest -p no:cacheprovider -q tests/scale/test_object_storage.py \
  tests/scale/test_multi_host.py
backend=$?
set -e
echo "embedded suite exit $embedded, scale slice exit $scale, on S3 exit $on_s3 and $backend"
[ "$embedded" = 0 ] && [ "$scale" = 0 ] && [ "$on_s3" = 0 ] && [ "$backend" = 0 ]
