"""Part 10 files in an S3-compatible object store (AWS S3, Ceph RADOS Gateway, MinIO...), so
that every node of a scale-out site reads what any other stored, with no shared file system.

The same ``Storage`` interface as local files (pacs.storage), with two differences that the
object store's semantics force:
- S3 has no rename, and a PUT to an existing key replaces the object. So each upload gets a key
  of its own (``<study>/<series>/<sop>.<random>.dcm``): the upload happens once the header is
  parsed and before the index transaction (``place``), a kept duplicate deletes its upload,
  and nothing already stored is ever overwritten. The index row names the object; an object
  no row names (a process killed between upload and commit) is an orphan that
  ``check_storage`` reports, as with local files.
- Readers get the object's bytes as a stream (``open``), by ranged GETs (``range_reader``) or,
  for code that reads files by name (DCMTK-style senders, the renderer), in a temporary local
  copy that is removed afterwards (``local_copy``).

Data sets too large to hold in memory (``write_from``) are spooled to a local temporary file
first, then uploaded in parts by boto3's transfer manager.

boto3 is the client: the AWS SDK, kept by AWS, thread-safe clients with a connection pool,
retries with back-off, multipart uploads and ranged GETs, and tested against every S3-protocol
server. obstore measured ~2 ms faster per PUT of a 526 KB image against Ceph RGW here but
slower per GET; not enough to take a second, younger client (docs/architecture.md).
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from core.errors import StorageFull
from pacs.storage import INCOMING_MAX_AGE, LocalStorage, PendingFile

log = logging.getLogger(__name__)

_MISSING = {"404", "NoSuchKey", "NotFound"}
# multipart above 64 MiB, in 16 MiB parts: large multi-frame objects and videos
_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20,
                           max_concurrency=4)


class ObjectStorage:
    unique_keys = True

    def __init__(self, client, bucket: str, prefix: str, spool_dir: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # large uploads and local copies are staged here (never synced: the object store
        # holds the durable copy)
        self.spool = LocalStorage(spool_dir, fsync=False)

    def __repr__(self) -> str:
        return f"ObjectStorage(s3://{self.bucket}/{self.prefix})"

    def _name(self, key: str) -> str:
        return self.prefix + key

    # --- writing ---------------------------------------------------------------------------

    def write_soon(self, data: bytes) -> Future[PendingFile]:
        """Held in memory until ``place`` knows its key."""
        held: Future[PendingFile] = Future()
        held.set_result(PendingFile(temp_path=None, size=len(data), data=data))
        return held

    def write_from(self, prefix: bytes, source: BinaryIO, size: int) -> PendingFile:
        return self.spool.write_from(prefix, source, size)

    def place(self, pending: PendingFile, key: str) -> str:
        """Upload under a key of its own, derived from ``key``; the object is durable in the
        store when this returns (S3 answers a PUT once it is). Raises StorageFull when the
        store cannot take it."""
        unique = f"{key.removesuffix('.dcm')}.{secrets.token_hex(6)}.dcm"
        try:
            if pending.data is not None:
                self.client.put_object(Bucket=self.bucket, Key=self._name(unique),
                                       Body=pending.data, ContentType="application/dicom")
            else:
                assert pending.temp_path is not None
                self.client.upload_file(str(pending.temp_path), self.bucket, self._name(unique),
                                        ExtraArgs={"ContentType": "application/dicom"},
                                        Config=_TRANSFER)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StorageFull(f"the object store did not take the file: {_why(exc)}") from exc
        pending.key = unique
        return unique

    def commit(self, pending: PendingFile, key: str) -> None:
        assert key == pending.key, "commit the key place() gave"
        if pending.temp_path is not None:  # uploaded: the spooled copy is not needed
            pending.temp_path.unlink(missing_ok=True)
            pending.temp_path = None
        pending.data = None

    def publish_new(self, pending: PendingFile, key: str) -> bool:
        """``commit``: the key ``place`` gave is the upload's own, so nothing else is there."""
        self.commit(pending, key)
        return True

    def uncommit(self, pending: PendingFile, key: str) -> None:
        """Nothing to undo: the upload stays until ``discard`` deletes it."""

    def keep(self, pending: PendingFile) -> None:
        """The upload stays, whatever happens next (``discard`` included): for a store whose
        COMMIT may or may not have happened."""
        pending.key = None

    def discard(self, pending: PendingFile) -> None:
        if pending.key is not None:
            self.delete(pending.key)
            pending.key = None
        if pending.temp_path is not None:
            pending.temp_path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as exc:  # left as an orphan for check_storage
            log.warning("cannot delete object %s: %s", key, _why(exc))

    # --- reading ---------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket,
                                               Key=self._name(key))["ContentLength"])
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise

    def open(self, key: str) -> BinaryIO:
        """The object as a stream (read sequentially; botocore's StreamingBody)."""
        return self._get(key)["Body"]

    def _get(self, key: str, offset: int = 0) -> dict:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._name(key), **extra)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(2, "no such object", key) from exc
            raise

    def range_reader(self) -> _ObjectRanges:
        return _ObjectRanges(self)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A temporary local file with the object's bytes, named as the object, removed when
        the block ends."""
        folder = Path(tempfile.mkdtemp(dir=self.spool.incoming_dir()))
        try:
            path = folder / key.rsplit("/", 1)[-1]
            with self.open(key) as body, open(path, "wb") as out:
                shutil.copyfileobj(body, out, 1 << 20)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def iter_files(self, open_modes: list[str] | None = None
                   ) -> Iterator[tuple[str, int, float]]:
        """(key, size, last modified) of each stored object; the bucket's ACLs are the object
        store's business, so ``open_modes`` gets nothing."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for entry in page.get("Contents", []):
                key = entry["Key"][len(self.prefix):]
                if key.endswith(".dcm"):
                    yield key, int(entry["Size"]), entry["LastModified"].timestamp()

    def incoming_dir(self) -> Path:
        """Where large data sets are spooled before their upload (a local folder)."""
        return self.spool.incoming_dir()

    def sweep_incoming(self, older_than: float = INCOMING_MAX_AGE) -> int:
        return self.spool.sweep_incoming(older_than)

    def ready(self) -> None:
        """Raises when the bucket cannot be reached (the readiness probe asks)."""
        self.client.head_bucket(Bucket=self.bucket)

    def ensure_bucket(self) -> None:
        """Make the bucket when it does not exist yet (a new site's first start)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in _MISSING | {"NoSuchBucket"}:
                raise
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as made:  # another node made it meanwhile
                if _code(made) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise
            log.info("made bucket %s in the object store", self.bucket)


# Read-ahead of a multipart answer's objects: GETs in flight at once, and what they may hold.
# One GET of a 526 KB image takes ~4 ms (~130 MB/s); several at once fill the connection.
READ_AHEAD_OBJECTS = 8
READ_AHEAD_BYTES = 64 << 20
_SMALL = 16 << 20  # larger objects are streamed by ranged GETs, never held whole
_fetchers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3-read-ahead")


class _ObjectRanges:
    """Positioned reads by GETs. The objects of a multipart answer (``will_read``) are fetched
    ahead, several at once, while the answer is sent (a bounded number and size); anything
    else is read from one open stream while the reads follow each other, opened again from the
    asked offset when a read jumps (an HTTP range)."""

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage
        self._key: str | None = None
        self._body = None
        self._pos = 0
        self._plan: list[tuple[str, int]] = []
        self._where: dict[str, int] = {}
        self._ahead: dict[str, Future[bytes]] = {}
        self._reading: str | None = None  # the planned object read last

    def will_read(self, files: list[tuple[str, int]]) -> None:
        """The (key, size) of the objects about to be read, in order."""
        self._plan = list(files)
        self._where = {key: n for n, (key, _) in enumerate(self._plan)}

    def _fetch(self, key: str) -> bytes:
        with self.storage.open(key) as body:
            return body.read()

    def _read_ahead(self, index: int) -> None:
        """Keep GETs running for the objects from ``index`` on; forget those before it."""
        for key in [k for k in self._ahead if self._where[k] < index]:
            self._ahead.pop(key).cancel()
        budget = READ_AHEAD_BYTES - sum(self._plan[self._where[k]][1] for k in self._ahead)
        for key, size in self._plan[index:index + READ_AHEAD_OBJECTS]:
            if key in self._ahead or size > _SMALL:
                continue
            if size > budget and self._ahead:
                break
            self._ahead[key] = _fetchers.submit(self._fetch, key)
            budget -= size

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        index = self._where.get(key)
        if index is not None and self._plan[index][1] <= _SMALL:
            if key != self._reading:  # the window moves once per object, not once per read
                self._reading = key
                self._read_ahead(index)
            if key not in self._ahead:  # the budget went to the objects after it
                self._ahead[key] = _fetchers.submit(self._fetch, key)
            data = self._ahead[key].result()
            return data[offset:offset + length]
        if self._body is None or self._key != key or self._pos != offset:
            self._close_body()
            self._body = self.storage._get(key, offset)["Body"]
            self._key, self._pos = key, offset
        chunks, left = [], length
        while left > 0:
            chunk = self._body.read(left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        self._pos += len(data)
        return data

    def _close_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._close_body()
        for pending in self._ahead.values():
            pending.cancel()
        self._ahead.clear()
        self._reading = None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _why(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix)."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket (s3://bucket/prefix)")
    return bucket, prefix


def configured() -> ObjectStorage:
    """The object store PORTAL_STORAGE_URL names, one client per process and settings. The
    process id is part of the key: a process forked after its parent made a client (the
    DIMSE listener's SCP processes) must not share the parent's pooled connections."""
    return _storage(settings.STORAGE_URL, settings.S3_ENDPOINT_URL, settings.S3_REGION,
                    settings.S3_ACCESS_KEY_ID, settings.S3_SECRET_ACCESS_KEY,
                    settings.S3_MAX_CONNECTIONS, str(settings.STORAGE_DIR), os.getpid())


@functools.lru_cache(maxsize=8)
def _storage(url: str, endpoint: str, region: str, key_id: str, secret: str,
             connections: int, spool_dir: str, pid: int) -> ObjectStorage:
    bucket, prefix = parse_url(url)
    credentials = {"aws_access_key_id": key_id, "aws_secret_access_key": secret} \
        if key_id else {}
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None, region_name=region, **credentials,
        config=Config(max_pool_connections=connections, connect_timeout=5, read_timeout=60,
                      retries={"mode": "standard", "max_attempts": 4},
                      # S3-compatible servers name buckets in the path, not the host
                      s3={"addressing_style": "path" if endpoint else "auto"}))
    storage = ObjectStorage(client, bucket, prefix, Path(spool_dir))
    try:
        storage.ensure_bucket()
    except (BotoCoreError, ClientError) as exc:  # not up yet: each store says so until it is
        log.warning("object store s3://%s not reachable yet: %s", bucket, _why(exc))
    return storage
