"""What is stored, seen by the tests the same way on either backend: local files under the
test's storage folder, or a bucket of the object store (PORTAL_TEST_S3_ENDPOINT)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from pacs.storage import LocalStorage, get_storage


def object_store() -> bool:
    """Do the tests store into an object store (PORTAL_TEST_S3_ENDPOINT)?"""
    return bool(os.environ.get("PORTAL_TEST_S3_ENDPOINT"))


#: a test of local files as such (modes, renames, mtimes), not of what any backend does
local_files_only = pytest.mark.skipif(object_store(), reason="a property of local files")


def keys() -> list[str]:
    """The keys of every stored file."""
    return sorted(key for key, _, _ in get_storage().iter_files())


def left_behind(storage_dir: Path) -> list[str]:
    """Every stored file and every temporary file left (local, or spooled beside an object
    store): what a refused or duplicate store must not add to."""
    local = sorted(p.relative_to(storage_dir).as_posix() for p in storage_dir.rglob("*")
                   if p.is_file()) if storage_dir.exists() else []
    return sorted(local + ([] if isinstance(get_storage(), LocalStorage) else keys()))


def read(key: str) -> bytes:
    with get_storage().open(key) as file:
        return file.read()


def dataset(key: str) -> Dataset:
    return dcmread(io.BytesIO(read(key)))


def put(key: str, data: bytes) -> None:
    """Write a file behind the portal's back (a test's orphan, a damaged copy)."""
    storage = get_storage()
    if isinstance(storage, LocalStorage):
        path = storage.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        storage.client.put_object(Bucket=storage.bucket, Key=storage._name(key), Body=data)


def remove(key: str) -> None:
    get_storage().delete(key)
