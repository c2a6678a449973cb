"""STOW-RS (PS3.18 10.5): the parts of a store request go through the one ingest service,
each with its own outcome; the response lists what was stored and what failed, and why.

Two request forms: Part 10 files (``application/dicom`` parts), or DICOM JSON metadata
(``application/dicom+json``) with bulk data in the other parts, referenced by BulkDataURI =
the part's Content-Location.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian

from core import audit
from core.errors import BadRequest, InvalidDicom, ServiceError
from pacs.services.ingest import Outcome, store_instance
from pacs.services.wado import FRAME_MEDIA_TYPES

# PS3.18 10.5.3 failure reasons (PS3.4 status codes)
PROCESSING_FAILURE = 0x0110
STUDY_MISMATCH = 0xA900  # the instance does not belong to the study of the target resource
UNSUPPORTED_PART = 0xC000  # cannot understand: a part that is not application/dicom
WARNING = 0xB000  # stored (or kept) with a warning: the comment says which

# Default transfer syntax of a compressed bulk data part that names none
_DEFAULT_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
}
assert set(_DEFAULT_SYNTAX) <= set(FRAME_MEDIA_TYPES.values())


@dataclass
class InstanceOutcome:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    failure: int | None = None  # a failure reason, None when stored
    comment: str = ""
    warning: int | None = None  # a warning reason (PS3.18 Warning Reason, 0008,1196)


@dataclass
class StowResult:
    outcomes: list[InstanceOutcome] = field(default_factory=list)

    @property
    def stored(self) -> list[InstanceOutcome]:
        return [o for o in self.outcomes if o.failure is None]

    @property
    def failed(self) -> list[InstanceOutcome]:
        return [o for o in self.outcomes if o.failure is not None]

    def response(self, base_url: str, study_uid: str | None) -> dict[str, Any]:
        """The Store Instances Response Module (PS3.18 Table 10.5.3-2) as DICOM JSON."""
        base = base_url.rstrip("/")
        result: dict[str, Any] = {}
        studies = {o.study_instance_uid for o in self.stored}
        target = study_uid or (studies.pop() if len(studies) == 1 else "")
        if target:
            result["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{target}"]}
        if self.failed:
            result["00081198"] = {"vr": "SQ", "Value": [
                {**_refs(o), "00081197": {"vr": "US", "Value": [o.failure]}}
                for o in self.failed]}
        if self.stored:
            result["00081199"] = {"vr": "SQ", "Value": [
                {**_refs(o), "00081190": {"vr": "UR", "Value": [
                    f"{base}/studies/{o.study_instance_uid}/series/{o.series_instance_uid}"
                    f"/instances/{o.sop_instance_uid}"]},
                 **({"00081196": {"vr": "US", "Value": [o.warning]}} if o.warning else {})}
                for o in self.stored]}
        return result


def record(result: StowResult, *, actor: str, source: str) -> None:
    """The audit trail's rows for a STOW-RS request: one per study stored, with its count,
    and one counting the failures (as for a DICOM association)."""
    studies: dict[str, int] = {}
    for outcome in result.stored:
        studies[outcome.study_instance_uid] = studies.get(outcome.study_instance_uid, 0) + 1
    for study_uid, count in studies.items():
        audit.record(category="store", action="instances stored", actor=actor, source=source,
                     detail=f"{count} instance(s) of study {study_uid} over STOW-RS")
    if result.failed:
        audit.record(category="store", action="instances refused", outcome="failure",
                     actor=actor, source=source,
                     detail=f"{len(result.failed)} instance(s) of a STOW-RS request refused")


@dataclass(frozen=True)
class StowPart:
    """One part of a STOW-RS request body, as the HTTP face read it."""

    media_type: str  # lower case, without parameters ("" when the part has none)
    body: bytes
    location: str = ""  # Content-Location (or Content-ID): what a BulkDataURI names
    transfer_syntax: str = ""  # the media type's transfer-syntax parameter, if any


def _refs(o: InstanceOutcome) -> dict[str, Any]:
    return {
        "00081150": {"vr": "UI", "Value": [o.sop_class_uid]} if o.sop_class_uid else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [o.sop_instance_uid]} if o.sop_instance_uid
        else {"vr": "UI"},
    }


def store_parts(parts: Iterable[StowPart], *, study_uid: str | None, origin: str) -> StowResult:
    """Store each instance of a STOW-RS request body. ``parts`` may be read as they come
    (the face parses them one by one): Part 10 parts are stored one by one, so the request is
    never in memory whole. If the body turns out to be cut off, the instances before the cut stay
    stored and the cut is one failure of the response; with none before it, BadRequest."""
    result = StowResult()
    parts = iter(parts)
    first = next(parts, None)
    if first is None:
        raise BadRequest("the request has no parts")
    if first.media_type == "application/dicom+json":
        # the metadata refer to bulk data parts that come after them: all are needed
        for data, error in _from_json([first, *parts]):
            result.outcomes.append(_store_one(data, error, study_uid, origin))
        return result
    try:
        for part in itertools.chain([first], parts):
            result.outcomes.append(_store_one(*_instance_of(part), study_uid, origin))
    except BadRequest as exc:
        result.outcomes.append(InstanceOutcome("", "", failure=UNSUPPORTED_PART,
                                               comment=f"{exc}: the rest is lost"))
    return result


def _instance_of(part: StowPart) -> tuple[bytes, InstanceOutcome | None]:
    if part.media_type in ("application/dicom", ""):
        return part.body, None
    return b"", InstanceOutcome("", "", failure=UNSUPPORTED_PART,
                                comment=f"a part of type {part.media_type!r}")


def _store_one(data: bytes, error: InstanceOutcome | None, study_uid: str | None,
               origin: str) -> InstanceOutcome:
    if error is not None:
        return error
    ids = _identifiers(data)
    if study_uid and ids.study_instance_uid and ids.study_instance_uid != study_uid:
        ids.failure = STUDY_MISMATCH
        ids.comment = "the instance belongs to another study than the target resource"
        return ids
    try:
        stored = store_instance(data=data, received_from=origin)
    except ServiceError as exc:
        ids.failure, ids.comment = exc.dimse_status, str(exc)
        return ids
    except Exception as exc:  # a bug must fail this instance, not the whole request
        ids.failure, ids.comment = PROCESSING_FAILURE, type(exc).__name__
        return ids
    return InstanceOutcome(stored.sop_class_uid, stored.sop_instance_uid,
                           stored.study_instance_uid, stored.series_instance_uid,
                           comment=stored.warning or ("already stored" if stored.outcome is
                                                      Outcome.DUPLICATE else ""),
                           warning=WARNING if stored.warning else None)


def _identifiers(data: bytes) -> InstanceOutcome:
    """SOP class/instance and study UIDs for the response, read leniently (even from a
    file that the ingest service will refuse)."""
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(data), force=True, stop_before_pixels=True,
                     specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])
        return InstanceOutcome(str(ds.get("SOPClassUID", "") or ""),
                               str(ds.get("SOPInstanceUID", "") or ""),
                               str(ds.get("StudyInstanceUID", "") or ""))
    except Exception:
        return InstanceOutcome("", "")


def _from_json(parts: list[StowPart]) -> list[tuple[bytes, InstanceOutcome | None]]:
    """Part 10 bytes for each dataset of a metadata + bulk data request."""
    try:
        datasets = orjson.loads(parts[0].body)
    except orjson.JSONDecodeError as exc:
        raise InvalidDicom(f"the application/dicom+json part is not JSON: {exc}") from exc
    if isinstance(datasets, dict):
        datasets = [datasets]
    bulk = {p.location: p for p in parts[1:] if p.location}
    out: list[tuple[bytes, InstanceOutcome | None]] = []
    for item in datasets:
        try:
            out.append((_part10_from_json(item, bulk), None))
        except Exception as exc:
            uid = _json_value(item, "00080018")
            cls = _json_value(item, "00080016")
            status = exc.dimse_status if isinstance(exc, ServiceError) else 0xC000
            out.append((b"", InstanceOutcome(cls, uid, failure=status, comment=str(exc))))
    return out


def _json_value(item: Any, tag: str) -> str:
    try:
        return str(item[tag]["Value"][0])
    except (KeyError, IndexError, TypeError):
        return ""


def _part10_from_json(item: dict[str, Any], bulk: dict[str, StowPart]) -> bytes:
    syntax = {"value": ExplicitVRLittleEndian}

    def load(tag: str, vr: str, uri: str) -> bytes:
        part = bulk.get(uri)
        if part is None:
            raise InvalidDicom(f"no part has the Content-Location {uri!r} of BulkDataURI "
                               f"of {tag}")
        if tag.upper() == "7FE00010" and part.media_type in _DEFAULT_SYNTAX:
            syntax["value"] = part.transfer_syntax or _DEFAULT_SYNTAX[part.media_type]
            return encapsulate([part.body])
        return part.body

    ds = Dataset.from_json(item, bulk_data_uri_handler=load)
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if keyword not in ds:
            raise InvalidDicom(f"{keyword} is missing")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax["value"])
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
