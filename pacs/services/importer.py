"""Import files and folders (incl. DICOMDIR) through the one ingest path; export them back."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread

from core import audit
from core.errors import ServiceError
from pacs.dicomfile import to_part10
from pacs.services.ingest import store_instance
from pacs.storage import get_storage

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass
class ImportSummary:
    counts: Counter = field(default_factory=Counter)
    reasons: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, outcome: str, path: Path | None = None, reason: str | None = None) -> None:
        self.counts[outcome] += 1
        if reason is not None:
            self.reasons[reason].append(str(path))

    def counts_line(self) -> str:
        c = self.counts
        return (f"{c['stored']} stored, {c['duplicate']} duplicate, {c['replaced']} replaced, "
                f"{c['rejected']} rejected, {c['skipped']} skipped")

    def reason_lines(self, shown: int = 3) -> list[str]:
        """A line per reason: the first ``shown`` files it was given for."""
        return [f"  {reason}: " + ", ".join(where[:shown])
                + (f" (+{len(where) - shown} more)" if len(where) > shown else "")
                for reason, where in sorted(self.reasons.items())]


def collect_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files to import: folders walked recursively, DICOMDIR files expanded to what they
    reference (PS3.10 8.6 ReferencedFileID), each file once."""
    seen: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, _dirs, files in os.walk(path):
                for name in sorted(files):
                    seen.setdefault(Path(root) / name)
        elif path.is_file():
            seen.setdefault(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    result: list[Path] = []
    for path in seen:
        if path.name.upper() == "DICOMDIR":
            result.extend(p for p in _dicomdir_references(path) if p not in seen)
        else:
            result.append(path)
    return list(dict.fromkeys(result))


def _dicomdir_references(path: Path) -> Iterator[Path]:
    try:
        ds = dcmread(path)
    except Exception:
        return
    for record in ds.get("DirectoryRecordSequence", []):
        ref = record.get("ReferencedFileID")
        if ref:
            parts = [ref] if isinstance(ref, str) else list(ref)
            yield path.parent.joinpath(*parts)


def import_files(
    files: Iterable[Path], *, actor: str = "cli", progress: Callable[[], None] | None = None
) -> ImportSummary:
    summary = ImportSummary()
    for path in files:
        _import_one(path, actor, summary)
        if progress:
            progress()
    audit.record(
        category="import",
        action="import",
        actor=actor,
        detail=", ".join(f"{k}: {v}" for k, v in sorted(summary.counts.items())),
    )
    return summary


def _import_one(path: Path, actor: str, summary: ImportSummary) -> None:
    if path.name.upper() == "DICOMDIR" or _is_dicomdir(path):
        summary.add("skipped", path, "DICOMDIR (directory, not an instance)")
        return
    try:
        data = to_part10(path.read_bytes())
        result = store_instance(data=data, received_from=f"import:{actor}")
    except ServiceError as exc:
        summary.add("rejected", path, str(exc))
    except OSError as exc:
        summary.add("rejected", path, f"cannot read: {exc.strerror}")
    else:
        summary.add(result.outcome.value, path if result.warning else None,
                    result.warning or None)


def _is_dicomdir(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    return MEDIA_STORAGE_DIRECTORY.encode() in head


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def path_component(text: str, fallback: str) -> str:
    """A file or folder name made from data (a patient ID, a UID): letters, digits, '.', '_'
    and '-' only, never empty and never '.' or '..' or hidden, so that nothing it names can
    leave the folder it is put in."""
    name = _UNSAFE.sub("_", text)[:128]
    if not name.strip("."):
        return fallback if not name else "_" * len(name)
    return "_" + name[1:] if name.startswith(".") else name


def export_instances(
    instances, out_dir: Path, *, progress: Callable[[], None] | None = None
) -> int:
    """Copy stored files as Patient/Study/Series/SOP.dcm under ``out_dir``; return the count.
    Every name is made from data by ``path_component``, and each target is checked to lie
    under ``out_dir`` before it is written."""
    storage = get_storage()
    root = out_dir.resolve()
    count = 0
    for inst in instances.iterator(chunk_size=500):
        series = inst.series
        target = (
            root / path_component(series.study.patient.patient_id, "NO_ID")
            / path_component(series.study.study_instance_uid, "NO_STUDY")
            / path_component(series.series_instance_uid, "NO_SERIES")
            / (path_component(inst.sop_instance_uid, "NO_UID") + ".dcm")
        )
        if not target.resolve().is_relative_to(root):
            raise ValueError(f"{target} would lie outside {root}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with storage.open(inst.file_key) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        count += 1
        if progress:
            progress()
    return count
