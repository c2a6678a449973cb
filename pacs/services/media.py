"""Downloads: studies, series or a selection as one ZIP of their stored Part 10 files, or as a
DICOM media folder (a DICOMDIR and its files, PS3.10, the General Purpose CD-R profile's
layout of PS3.11) zipped, to burn or to hand over.

Streamed: the archive is a generator of the stored files' bytes (``zipstream-ng``), read in
chunks as the client takes them, never a temporary copy of the study; its size is known
before the first byte (files are stored uncompressed in the ZIP, and the DICOMDIR is built
from the index, not from the files), so the browser shows real progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import zipstream
from django.db.models import QuerySet
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from core.errors import NotFound
from pacs.models import Instance
from pacs.storage import Storage, get_storage

CHUNK = 1 << 20
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# Directory record types of the SOP classes that are not images (PS3.3 F.5, Table F.4-1)
_RECORD_TYPES = (("1.2.840.10008.5.1.4.1.1.88.59", "KEY OBJECT DOC"),
                 ("1.2.840.10008.5.1.4.1.1.88.", "SR DOCUMENT"),
                 ("1.2.840.10008.5.1.4.1.1.11.", "PRESENTATION"),
                 ("1.2.840.10008.5.1.4.1.1.104.", "ENCAP DOC"),
                 ("1.2.840.10008.5.1.4.1.1.481.2", "RT DOSE"),
                 ("1.2.840.10008.5.1.4.1.1.481.3", "RT STRUCTURE SET"),
                 ("1.2.840.10008.5.1.4.1.1.481.5", "RT PLAN"),
                 ("1.2.840.10008.5.1.4.1.1.66", "REGISTRATION"))


@dataclass(frozen=True)
class Download:
    """A ZIP to stream: its name, its exact size, and its bytes as they are made."""

    filename: str
    size: int
    chunks: Iterable[bytes]
    instances: int


def instances_of(*, study_uids: list[str] | None = None, series_uid: str | None = None
                 ) -> QuerySet[Instance]:
    rows = Instance.objects.select_related("series__study__patient").defer("metadata")
    if series_uid:
        rows = rows.filter(series__series_instance_uid=series_uid)
    else:
        rows = rows.filter(series__study__study_instance_uid__in=study_uids or [])
    return rows.order_by("series__study__patient_id", "series__study_id", "series__series_number",
                         "series_id", "instance_number", "id")


def zip_of(instances: QuerySet[Instance], *, name: str, media: bool = False,
           storage: Storage | None = None) -> Download:
    """The ZIP of ``instances``: as a tree of patient/study/series folders of their files, or
    (``media``) as a DICOM media folder with its DICOMDIR."""
    storage = storage or get_storage()
    rows = list(instances)
    if not rows:
        raise NotFound("nothing to download")
    stream = zipstream.ZipStream(sized=True)
    if media:
        paths = _media_paths(rows)
        stream.add(dicomdir(rows, paths), "DICOMDIR")
    else:
        paths = _readable_paths(rows)
    for inst in rows:
        stream.add(_chunks(storage, inst.file_key), paths[inst.pk], size=inst.file_size)
    return Download(filename=f"{name}.zip", size=len(stream), chunks=stream,
                    instances=len(rows))


def _chunks(storage: Storage, key: str) -> Iterator[bytes]:
    with storage.open(key) as file:
        while chunk := file.read(CHUNK):
            yield chunk


def _safe(text: str, limit: int = 40) -> str:
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in (text or "").strip())
    return kept[:limit].strip("._") or "_"


def _readable_paths(rows: list[Instance]) -> dict[int, str]:
    """PatientName_ID/date_description/series number_description/instance number.dcm"""
    paths = {}
    for inst in rows:
        series = inst.series
        study = series.study
        patient = study.patient
        paths[inst.pk] = "/".join((
            _safe(f"{patient.patient_name.split('=')[0]}_{patient.patient_id}"),
            _safe(f"{study.study_date}_{study.study_description or study.accession_number}"),
            _safe(f"{series.series_number if series.series_number is not None else ''}_"
                  f"{series.modality}_{series.series_description}"),
            f"{inst.instance_number if inst.instance_number is not None else inst.pk}_"
            f"{inst.sop_instance_uid[-12:]}.dcm"))
    return paths


def _media_paths(rows: list[Instance]) -> dict[int, str]:
    """PS3.10 file IDs: at most 8 components of at most 8 characters of A-Z, 0-9 and _:
    DICOM/Pnnnnnnn/Snnnnnnn/Snnnnnnn/Innnnnnn, numbered within their parent."""
    numbers: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}

    def number(parent: tuple, key) -> int:
        if (parent, key) not in numbers:
            numbers[parent, key] = counts.get(parent, 0)
            counts[parent] = numbers[parent, key] + 1
        return numbers[parent, key]

    paths = {}
    for inst in rows:
        series = inst.series
        study = series.study
        p = number((), study.patient_id)
        st = number((p,), study.pk)
        se = number((p, st), series.pk)
        im = number((p, st, se), inst.pk)
        paths[inst.pk] = f"DICOM/P{p:07d}/S{st:07d}/S{se:07d}/I{im:07d}"
    return paths


def _record(kind: str, **attributes) -> Dataset:
    item = Dataset()
    item.OffsetOfTheNextDirectoryRecord = 0
    item.RecordInUseFlag = 0xFFFF
    item.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    item.DirectoryRecordType = kind
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def dicomdir(rows: list[Instance], paths: dict[int, str]) -> bytes:
    """The DICOMDIR (PS3.3 F.3, Basic Directory IOD) of the files at ``paths``: a PATIENT,
    STUDY, SERIES and IMAGE (or the SOP class's own) record for each, from the index.
    Offsets are bytes from the file's first byte; all are UL, so the records are written once
    with zeros to learn where each lands, then again with the offsets."""
    tree: dict = {}
    for inst in rows:
        series = inst.series
        study = series.study
        (tree.setdefault(study.patient, {}).setdefault(study, {})
         .setdefault(series, []).append(inst))
    records: list[Dataset] = []
    links: list[tuple[int, list[int]]] = []  # (parent's index or -1: the root, children's)

    def add(record: Dataset) -> int:
        records.append(record)
        return len(records) - 1

    roots = []
    for patient, studies in tree.items():
        p = add(_record("PATIENT", SpecificCharacterSet="ISO_IR 192",
                        PatientName=patient.patient_name, PatientID=patient.patient_id,
                        PatientBirthDate=patient.patient_birth_date,
                        PatientSex=patient.patient_sex))
        roots.append(p)
        study_records = []
        for study, series_map in studies.items():
            s = add(_record("STUDY", SpecificCharacterSet="ISO_IR 192",
                            StudyDate=study.study_date, StudyTime=study.study_time,
                            StudyDescription=study.study_description,
                            StudyInstanceUID=study.study_instance_uid, StudyID=study.study_id,
                            AccessionNumber=study.accession_number))
            study_records.append(s)
            series_records = []
            for series, instances in series_map.items():
                se = add(_record("SERIES", SpecificCharacterSet="ISO_IR 192",
                                 Modality=series.modality or "OT",
                                 SeriesInstanceUID=series.series_instance_uid,
                                 SeriesNumber=series.series_number
                                 if series.series_number is not None else ""))
                series_records.append(se)
                links.append((se, [add(_record(
                    _record_type(inst.sop_class_uid),
                    ReferencedFileID=paths[inst.pk].split("/"),
                    ReferencedSOPClassUIDInFile=inst.sop_class_uid,
                    ReferencedSOPInstanceUIDInFile=inst.sop_instance_uid,
                    ReferencedTransferSyntaxUIDInFile=inst.transfer_syntax_uid,
                    InstanceNumber=inst.instance_number
                    if inst.instance_number is not None else "")) for inst in instances]))
            links.append((s, series_records))
        links.append((p, study_records))
    links.append((-1, roots))

    ds = Dataset()
    ds.FileSetID = "PORTAL"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence(records)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    first = _encode(ds)
    where = [item.seq_item_tell for item in dcmread(DicomBytesIO(first)).DirectoryRecordSequence]
    for parent, children in links:
        offsets = [where[i] for i in children]
        for i, nxt in zip(children, [*offsets[1:], 0], strict=True):
            records[i].OffsetOfTheNextDirectoryRecord = nxt
        if parent < 0:
            ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = offsets[0]
            ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = offsets[-1]
        else:
            records[parent].OffsetOfReferencedLowerLevelDirectoryEntity = offsets[0]
    data = _encode(ds)
    assert len(data) == len(first), "offsets are UL: the length cannot change"
    return data


def _encode(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _record_type(sop_class_uid: str) -> str:
    for prefix, kind in _RECORD_TYPES:
        if sop_class_uid.startswith(prefix):
            return kind
    return "IMAGE"


def download_name(prefix: str) -> str:
    return f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}"
