"""Where Part 10 files live. One small interface; the local filesystem is the default backend.

Writes go to a temporary file in the destination folder, are fsync'ed (optional), and become
visible only by an atomic rename: no reader ever sees a half-written file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from pacs.errors import StorageFull


@dataclass
class PendingFile:
    """Bytes written durably under a temporary name, waiting for commit() or discard()."""

    temp_path: Path
    size: int


class LocalStorage:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync

    def path(self, key: str) -> Path:
        return self.root / key

    def write_pending(self, key: str, data: bytes) -> PendingFile:
        final = self.path(key)
        temp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            temp.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageFull(f"cannot write file: {exc.strerror}") from exc
        return PendingFile(temp_path=temp, size=len(data))

    def commit(self, pending: PendingFile, key: str) -> None:
        os.replace(pending.temp_path, self.path(key))

    def uncommit(self, pending: PendingFile, key: str) -> None:
        """Undo commit() when the transaction that published the file did not commit."""
        os.replace(self.path(key), pending.temp_path)

    def discard(self, pending: PendingFile) -> None:
        pending.temp_path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def iter_keys(self) -> Iterator[str]:
        for path in self.root.rglob("*.dcm"):
            yield str(path.relative_to(self.root))


def get_storage() -> LocalStorage:
    return LocalStorage(settings.STORAGE_DIR, fsync=settings.STORAGE_FSYNC)
