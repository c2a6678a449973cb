"""Where Part 10 files live. One small interface (``Storage``), two backends: local files (the
default, here) and an S3-compatible object store (``pacs.objectstore``), chosen by
``PORTAL_STORAGE_URL``.

The store path calls, in this order: ``write_soon`` (or ``write_from``) while the header is
parsed; ``place`` once the key is known, outside the index transaction; ``commit`` inside it
(``uncommit`` if it rolls back); ``discard`` whenever the instance is not kept. Readers use
``open`` (sequential), ``range_reader`` (positioned reads, for multipart answers and HTTP
ranges) or ``local_copy`` (a path, for code that reads files by name).

Local files: writes go to a temporary file under ``.incoming/`` in the storage root (the same
filesystem), are synced to disk (optional, ``PORTAL_STORAGE_FSYNC``), and become visible only by
an atomic rename to their key: no reader ever sees a half-written file. Because the temporary
name needs no
key, the ingest path starts writing before it has parsed the header (``write_soon``).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from django.conf import settings

from core.errors import StorageFull

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class PendingFile:
    """Bytes written durably under a temporary name, waiting for commit() or discard().

    An object store keeps small data sets in memory (``data``) until ``place`` uploads them,
    and records the object's key there (``key``)."""

    temp_path: Path | None
    size: int
    data: bytes | None = None
    key: str | None = None


class RangeReader(Protocol):
    """Positioned reads of stored files, for one answer (a multipart body, an HTTP range)."""

    def will_read(self, files: list[tuple[str, int]]) -> None:
        """The (key, size) of the files about to be read, in order: a hint."""

    def read_at(self, key: str, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class Storage(Protocol):
    """What every backend offers. Keys are ``<study>/<series>/<sop>[.<version>].dcm``."""

    #: does ``place`` give every upload a key of its own (no rename, no overwrite)?
    unique_keys: bool

    def write_soon(self, data: bytes) -> Future[PendingFile]: ...

    def write_from(self, prefix: bytes, source: BinaryIO, size: int) -> PendingFile: ...

    def place(self, pending: PendingFile, key: str) -> str: ...

    def commit(self, pending: PendingFile, key: str) -> None: ...

    def publish_new(self, pending: PendingFile, key: str) -> bool: ...

    def uncommit(self, pending: PendingFile, key: str) -> None: ...

    def keep(self, pending: PendingFile) -> None: ...

    def discard(self, pending: PendingFile) -> None: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None: ...

    def open(self, key: str) -> BinaryIO: ...

    def range_reader(self) -> RangeReader: ...

    def local_copy(self, key: str) -> AbstractContextManager[Path]: ...

    def incoming_dir(self) -> Path: ...

    def sweep_incoming(self, older_than: float = ...) -> int: ...

    def ready(self) -> None: ...

    def iter_files(self, open_modes: list[str] | None = None
                   ) -> Iterator[tuple[str, int, float]]: ...


INCOMING = ".incoming"
INCOMING_MAX_AGE = 3600.0  # seconds; see sweep_incoming


class LocalStorage:
    unique_keys = False  # a key names one file; a new version gets a new key from ingest

    def __init__(self, root: Path, fsync: bool = True, sync_folders: bool = False,
                 drop_cache: bool = True) -> None:
        """``fsync``: a written file's bytes are on disk when write_soon's future is done.
        ``sync_folders``: also its name in its folder once commit() returns.
        ``drop_cache`` (with ``fsync``): the written file leaves the page cache at once.

        Why drop it: received images are written once and read later, if ever, and each
        new file otherwise takes fresh page-cache memory, which the kernel copies into at
        several times the cost of memory it reuses. On the CI machine (a VM) a 526 KB
        synced write took 1.2-1.4 ms of system CPU kept in the cache and 0.44 ms dropped;
        the C-STORE benchmark's SCP spent 0.3-0.8 ms less system CPU per instance
        (bench/ingest.py). It also keeps the index database's pages in the
        cache while images stream in. A later read (WADO, C-MOVE, forwarding) reads the
        file from disk once."""
        self.root = Path(root)
        self.fsync = fsync
        self.sync_folders = sync_folders
        self.drop_cache = drop_cache and fsync  # dirty pages would not be dropped anyway

    def path(self, key: str) -> Path:
        return self.root / key

    def incoming_dir(self) -> Path:
        """Where temporary files are written (made if missing): on the storage's filesystem."""
        folder = self.root / INCOMING
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_soon(self, data: bytes) -> Future[PendingFile]:
        """Start writing ``data`` under a temporary name; the future gives the PendingFile
        once the bytes are durable, or raises StorageFull.

        The caller parses the header meanwhile. For that to overlap, the writer thread makes
        one system call, which releases the GIL: a single ``write`` on a file opened with
        O_DSYNC (the data is on disk when it returns, as after fdatasync), and the caller
        yields the GIL once right after handing it over, so the writer does not wait for a
        thread switch while the caller parses. bench/ingest.py's 526 KB CT images: header
        and JSON ~0.4 ms (pacs.dicomscan), write + sync ~2 ms."""
        incoming = self.root / INCOMING
        temp = incoming / f"{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        if self.fsync:
            flags |= os.O_DSYNC
        try:
            # patient data: this service's account only (the umask says so too)
            fd, _ = _in_folder(incoming, lambda: os.open(temp, flags, 0o600))
        except OSError as exc:
            failed: Future[PendingFile] = Future()
            failed.set_exception(StorageFull(f"cannot write file: {exc.strerror}"))
            return failed
        future = _writers.submit(_write_all, fd, temp, data, self.drop_cache)
        time.sleep(0)  # yield the GIL: the writer starts its write now
        return future

    def write_from(self, prefix: bytes, source: BinaryIO, size: int) -> PendingFile:
        """Write ``prefix`` then ``size`` bytes of ``source`` (an open file) under a temporary
        name, copied in the kernel (no copy through memory): for data sets too large to hold
        in memory. Synced like write_soon's files."""
        temp = self.incoming_dir() / f"{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, prefix)
                offset, left = source.tell(), size
                while left > 0:
                    copied = os.copy_file_range(source.fileno(), fd, min(left, 1 << 30),
                                                offset)
                    if copied == 0:
                        raise OSError(0, "the source ended early")
                    offset += copied
                    left -= copied
                if self.fsync:
                    os.fdatasync(fd)
                    if self.drop_cache:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageFull(f"cannot write file: {exc.strerror}") from exc
        return PendingFile(temp_path=temp, size=len(prefix) + size)

    def place(self, pending: PendingFile, key: str) -> str:
        """The key the file will have: ``key`` itself (the rename is ``commit``'s)."""
        return key

    def commit(self, pending: PendingFile, key: str) -> None:
        assert pending.temp_path is not None
        final = self.path(key)
        _, made = _in_folder(final.parent, lambda: os.replace(pending.temp_path, final))
        self._synced(final, made)

    def publish_new(self, pending: PendingFile, key: str) -> bool:
        """``commit``, unless a file is at ``key`` already: then nothing changes, and False.
        For a store that publishes before it knows whether the instance is new (ingest's
        one-statement path): a stored file is never replaced that way. A hard link, then the
        temporary name removed: rename(2) would replace the file that is there."""
        assert pending.temp_path is not None
        final = self.path(key)
        try:
            _, made = _in_folder(final.parent, lambda: os.link(pending.temp_path, final))
        except FileExistsError:
            return False
        os.unlink(pending.temp_path)
        self._synced(final, made)
        return True

    def _synced(self, final: Path, made: bool) -> None:
        if self.sync_folders:
            _sync_folder(final.parent)
            if made:  # and the new folders' own names, up to the storage root
                for folder in final.parent.parents:
                    _sync_folder(folder)
                    if folder == self.root:
                        break

    def uncommit(self, pending: PendingFile, key: str) -> None:
        """Undo commit() when the transaction that published the file did not commit."""
        assert pending.temp_path is not None
        os.replace(self.path(key), pending.temp_path)

    def keep(self, pending: PendingFile) -> None:
        """The published file stays where it is, whatever happens next (``discard`` included):
        for a store whose COMMIT may or may not have happened."""
        pending.temp_path = None

    def discard(self, pending: PendingFile) -> None:
        if pending.temp_path is not None:
            pending.temp_path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self.path(key)).st_size
        except FileNotFoundError:
            return None

    def range_reader(self) -> RangeReader:
        return _FileRanges(self.root)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """The stored file itself: no copy is made."""
        yield self.path(key)

    def ready(self) -> None:
        """Raises when files cannot be stored (the readiness probe asks)."""
        if not os.path.isdir(self.root) or not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError("storage directory missing or not writable")

    def sweep_incoming(self, older_than: float = INCOMING_MAX_AGE) -> int:
        """Delete temporary files last written more than ``older_than`` seconds ago: what a
        crash or a kill left in ``.incoming/`` (a write in progress lasts milliseconds, and
        no row ever points there). The number deleted."""
        cutoff = time.time() - older_than
        removed = 0
        try:
            entries = list(os.scandir(self.root / INCOMING))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # another process swept it first
                continue
            except OSError as exc:
                log.warning("cannot remove stale temporary file %s: %s", entry.path,
                            exc.strerror)
        return removed

    def iter_files(self, open_modes: list[str] | None = None
                   ) -> Iterator[tuple[str, int, float]]:
        """(key, size, mtime) of each stored file: ``*.dcm`` under the root, not the
        temporary files of ``.incoming/``. A file deleted meanwhile is left out.
        ``open_modes``: gets the path of each folder and file that others than this account
        may read (mode & 0o077), in the same walk."""
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if open_modes is not None and _open(entry):
                            open_modes.append(entry.path)
                        if not (folder == self.root and entry.name == INCOMING):
                            stack.append(Path(entry.path))
                    elif entry.name.endswith(".dcm") and entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if open_modes is not None and st.st_mode & 0o077:
                            open_modes.append(entry.path)
                        yield os.path.relpath(entry.path, self.root), st.st_size, st.st_mtime
                except FileNotFoundError:
                    continue


class _FileRanges:
    """``os.pread`` on one open descriptor per file in turn: no Python file object, no
    buffer, and the WSGI server's reads of a long multipart answer go straight to the kernel."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd: tuple[str, int] | None = None

    def will_read(self, files: list[tuple[str, int]]) -> None:
        """The kernel reads ahead in each file; nothing to do here."""

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        if self._fd is None or self._fd[0] != key:
            self.close()
            self._fd = (key, os.open(self.root / key, os.O_RDONLY))
        return os.pread(self._fd[1], length, offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd[1])
            self._fd = None


def _open(entry: os.DirEntry) -> bool:
    """May others than this account read or enter it?"""
    return bool(entry.stat(follow_symlinks=False).st_mode & 0o077)


_writers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="file-writer")


def _in_folder(folder: Path, act: Callable[[], T]) -> tuple[T, bool]:
    """``act()``, which makes or moves a file into ``folder``, and whether the folder had to be
    made: only when ``act`` says it is missing (the first file of a series), not with a
    ``mkdir`` each time."""
    try:
        return act(), False
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        return act(), True


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, temp: Path, data: bytes, drop_cache: bool) -> PendingFile:
    try:
        with os.fdopen(fd, "wb", buffering=0) as fh:
            view = memoryview(data)
            while view:
                view = view[fh.write(view):]
            if drop_cache:  # the pages are clean (O_DSYNC): the kernel frees them now
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise StorageFull(f"cannot write file: {exc.strerror}") from exc
    return PendingFile(temp_path=temp, size=len(data))


def get_storage() -> Storage:
    """The configured backend: an object store when PORTAL_STORAGE_URL names one."""
    if settings.STORAGE_URL.startswith("s3://"):
        from pacs import objectstore  # boto3 is imported only where it is used

        return objectstore.configured()
    return LocalStorage(settings.STORAGE_DIR, fsync=settings.STORAGE_FSYNC,
                        sync_folders=settings.STORAGE_FSYNC_FULL,
                        drop_cache=settings.STORAGE_DROP_CACHE)
