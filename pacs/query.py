"""The query engine: a DICOM identifier (PS3.4 C.2.2.2 matching) -> Django queryset -> DICOM
answers. C-FIND uses it now; QIDO-RS, MWL and UPS search are meant to reuse it.

An Attribute says which column holds a DICOM keyword and how values match there. Levels list
the attributes they can match and return (own level and, for Study Root, the levels above).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.db.models import Aggregate, Count, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.functions import Cast
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from core.errors import ServiceError
from pacs.dicomfile import is_multi_value
from pacs.matching import (
    UNMATCHABLE_VRS,
    Unmatchable,
    date_range_q,
    datetime_range_q,
    fuzzy_name_q,
    has_value,
    header_matches,
    one_of_q,
    single_value_q,
)
from pacs.models import Instance, Patient, Series, Study


class InvalidQuery(ServiceError):
    """The identifier cannot be used (PS3.4 C.4.1.1.4: 0xA900 identifier does not match)."""

    dimse_status = 0xA900


@dataclass(frozen=True)
class Attribute:
    keyword: str
    field: str  # Django lookup path from the level's model; "" = return-only (computed)
    kind: str = "str"  # str, pn, uid, date, time, int, multi (backslash list), seq
    match_field: str = ""  # upper-cased copy used for case-insensitive matching, if any
    items: tuple[Attribute, ...] = ()  # kind "seq": the attributes of its (one) item


def _attrs(*items: Attribute) -> dict[str, Attribute]:
    return {a.keyword: a for a in items}


def _patient(prefix: str) -> list[Attribute]:
    return [
        Attribute("PatientID", f"{prefix}patient_id"),
        Attribute("IssuerOfPatientID", f"{prefix}issuer_of_patient_id"),
        Attribute("PatientName", f"{prefix}patient_name", "pn", f"{prefix}patient_name_norm"),
        Attribute("PatientBirthDate", f"{prefix}patient_birth_date", "date"),
        Attribute("PatientSex", f"{prefix}patient_sex"),
    ]


def _study(prefix: str) -> list[Attribute]:
    return [
        Attribute("StudyInstanceUID", f"{prefix}study_instance_uid", "uid"),
        Attribute("StudyDate", f"{prefix}study_date", "date"),
        Attribute("StudyTime", f"{prefix}study_time", "time"),
        Attribute("AccessionNumber", f"{prefix}accession_number"),
        Attribute("StudyID", f"{prefix}study_id"),
        Attribute("StudyDescription", f"{prefix}study_description"),
        Attribute("ReferringPhysicianName", f"{prefix}referring_physician_name", "pn"),
        Attribute("ModalitiesInStudy", f"{prefix}modalities_in_study", "multi"),
        Attribute("NumberOfStudyRelatedSeries", f"{prefix}number_of_series", "int"),
        Attribute("NumberOfStudyRelatedInstances", f"{prefix}number_of_instances", "int"),
    ]


def _series(prefix: str) -> list[Attribute]:
    return [
        Attribute("SeriesInstanceUID", f"{prefix}series_instance_uid", "uid"),
        Attribute("Modality", f"{prefix}modality"),
        Attribute("SeriesNumber", f"{prefix}series_number", "int"),
        Attribute("SeriesDescription", f"{prefix}series_description"),
        Attribute("BodyPartExamined", f"{prefix}body_part_examined"),
        Attribute("SeriesDate", f"{prefix}series_date", "date"),
        Attribute("SeriesTime", f"{prefix}series_time", "time"),
        Attribute("NumberOfSeriesRelatedInstances", f"{prefix}number_of_instances", "int"),
        Attribute("RequestAttributesSequence", "", "seq", items=(
            Attribute("RequestedProcedureID", f"{prefix}requested_procedure_id"),
            Attribute("ScheduledProcedureStepID", f"{prefix}scheduled_procedure_step_id"),
        )),
    ]


def _instance(prefix: str) -> list[Attribute]:
    return [
        Attribute("SOPInstanceUID", f"{prefix}sop_instance_uid", "uid"),
        Attribute("SOPClassUID", f"{prefix}sop_class_uid", "uid"),
        Attribute("InstanceNumber", f"{prefix}instance_number", "int"),
        Attribute("Rows", f"{prefix}rows", "int"),
        Attribute("Columns", f"{prefix}columns", "int"),
        Attribute("NumberOfFrames", f"{prefix}number_of_frames", "int"),
    ]


@dataclass(frozen=True)
class Level:
    name: str
    model: type
    attributes: dict[str, Attribute]
    unique: str  # the level's unique key
    annotate: Callable[[QuerySet], QuerySet] | None = None  # computed return keys
    # the stored DICOM JSON header that stands for a row (an instance's own; a series',
    # study's or patient's first instance's): attributes without a column are matched and
    # returned from it. None: the level has no stored headers (the worklist).
    metadata: Callable[[], Any] | None = None
    # columns made by a query only when asked for (field name -> annotation)
    computed: dict[str, Callable[[QuerySet], QuerySet]] = field(default_factory=dict)


def _own_header():
    return Cast("metadata", TextField())


def _first_header(path: str) -> Callable[[], Any]:
    """The stored header of the first instance (by arrival) whose ``path`` is the row."""
    def expression():
        first = Instance.objects.order_by("pk").annotate(
            text=Cast("metadata", TextField())).values("text")
        return Subquery(first.filter(**{path: OuterRef("pk")})[:1])
    return expression


class _UidList(Aggregate):
    """The distinct values of a UID column, backslash-separated (a multi-valued answer)."""

    template = "REPLACE(GROUP_CONCAT(DISTINCT %(expressions)s), ',', '\\')"
    output_field = TextField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection,
                           template="STRING_AGG(DISTINCT %(expressions)s, '\\')", **extra)


def _sop_classes_in_study(qs: QuerySet) -> QuerySet:
    """SOP Classes in Study (0008,0062): computed from the study's instances (C.6.1.1.3)."""
    per_study = (Instance.objects.filter(series__study=OuterRef("pk")).order_by()
                 .values("series__study").annotate(uids=_UidList("sop_class_uid"))
                 .values("uids"))
    return qs.annotate(sop_classes=Subquery(per_study))


def _patient_counts(qs: QuerySet) -> QuerySet:
    return qs.annotate(
        n_studies=Count("studies", distinct=True),
        n_series=Count("studies__series", distinct=True),
        n_instances=Count("studies__series__instances", distinct=True),
    )


# computed at study level only, and only when asked for (Level.computed)
_SOP_CLASSES = Attribute("SOPClassesInStudy", "sop_classes", "multi")

LEVELS = {
    "PATIENT": Level("PATIENT", Patient, _attrs(
        *_patient(""),
        Attribute("NumberOfPatientRelatedStudies", "n_studies", "int"),
        Attribute("NumberOfPatientRelatedSeries", "n_series", "int"),
        Attribute("NumberOfPatientRelatedInstances", "n_instances", "int"),
    ), "PatientID", annotate=_patient_counts,
        metadata=_first_header("series__study__patient_id")),
    "STUDY": Level("STUDY", Study, _attrs(*_patient("patient__"), *_study(""), _SOP_CLASSES),
                   "StudyInstanceUID", metadata=_first_header("series__study_id"),
                   computed={"sop_classes": _sop_classes_in_study}),
    "SERIES": Level("SERIES", Series, _attrs(
        *_series(""), Attribute("StudyInstanceUID", "study__study_instance_uid", "uid"),
        Attribute("PatientID", "study__patient__patient_id"),
    ), "SeriesInstanceUID", metadata=_first_header("series_id")),
    "IMAGE": Level("IMAGE", Instance, _attrs(
        *_instance(""),
        Attribute("SeriesInstanceUID", "series__series_instance_uid", "uid"),
        Attribute("StudyInstanceUID", "series__study__study_instance_uid", "uid"),
        Attribute("PatientID", "series__study__patient__patient_id"),
    ), "SOPInstanceUID", metadata=_own_header),
}
# Patient Root at STUDY level has the same attributes as Study Root.

# Levels whose rows also match and return every attribute of the levels above them, as
# QIDO-RS searches them (PS3.18 10.6: /series and /instances search across studies).
FLAT_LEVELS = {
    "STUDY": LEVELS["STUDY"],
    "SERIES": Level("SERIES", Series, _attrs(
        *_patient("study__patient__"), *_study("study__"), *_series("")),
        "SeriesInstanceUID", metadata=_first_header("series_id")),
    "IMAGE": Level("IMAGE", Instance, _attrs(
        *_patient("series__study__patient__"), *_study("series__study__"),
        *_series("series__"), *_instance("")), "SOPInstanceUID", metadata=_own_header),
}
ANSWER_CHARSETS = ("ISO_IR 100", "ISO_IR 192")


def attribute_q(attr: Attribute, value: object, *, fuzzy: bool = False) -> Q:
    """PS3.4 C.2.2.2 matching of one attribute; empty values are universal matching.
    ``fuzzy`` person-name matching (QIDO-RS fuzzymatching=true) is ``fuzzy_name_q``."""
    if is_multi_value(value):  # a backslash-separated list
        value = "\\".join(str(v) for v in value)
    if value is None or value == "":
        return Q()
    _check_size(attr, str(value))
    if attr.kind == "uid":  # list of UID matching (C.2.2.2.2)
        uids = [v.strip() for v in str(value).split("\\") if v.strip()]
        if not uids:
            return Q()
        return Q(**{f"{attr.field}__in": uids}) if len(uids) > 1 else Q(**{attr.field: uids[0]})
    text = str(value).strip()
    if attr.kind == "date":
        try:
            return date_range_q(attr.field, text)
        except ValueError as exc:
            raise InvalidQuery(f"{attr.keyword}: {exc}") from exc
    if attr.kind == "time":
        return _time_range_q(attr.field, text)
    if attr.kind == "int":
        try:
            return Q(**{attr.field: int(text)})
        except ValueError as exc:
            raise InvalidQuery(f"{attr.keyword}: not a number") from exc
    if attr.kind == "multi":  # one of the stored backslash-separated values
        q = Q()
        for item in text.split("\\"):
            q |= one_of_q(attr.field, item)
        return q
    if "\\" in text:  # multiple value matching (C.2.2.2.8): any one of the values
        q = Q()
        for item in text.split("\\"):
            q |= _one_value_q(attr, item.strip(), fuzzy)
        return q
    return _one_value_q(attr, text, fuzzy)


def _one_value_q(attr: Attribute, text: str, fuzzy: bool) -> Q:
    if fuzzy and attr.kind == "pn":
        return fuzzy_name_q(attr.match_field or attr.field, text, upper=bool(attr.match_field))
    # Person names match case-insensitively, as Orthanc and dcm4chee do by default.
    if attr.match_field:
        return single_value_q(attr.match_field, text.upper())
    return single_value_q(attr.field, text, ignore_case=attr.kind == "pn")


# A key's values in one query: beyond these a query is refused, not run. Each value of a list
# becomes one more term of an OR (SQLite's expressions nest at most 1000 deep), and no real
# key holds more than a few dozen values or a few kilobytes.
MAX_VALUES = 500
MAX_VALUE_CHARS = 16 * 1024


def _check_size(attr: Attribute, value: str) -> None:
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidQuery(f"{attr.keyword}: a matching value of {len(value)} characters "
                           f"(at most {MAX_VALUE_CHARS})")
    if value.count("\\") >= MAX_VALUES:
        raise InvalidQuery(f"{attr.keyword}: {value.count(chr(92)) + 1} values "
                           f"(at most {MAX_VALUES})")


def sequence_q(attr: Attribute, items: object) -> Q:
    """Sequence matching (C.2.2.2.6): the keys of the query's one item must all match (one
    related record); an empty sequence or an empty item is universal matching."""
    if not items:
        return Q()
    item = items[0]  # type: ignore[index]
    nested = {a.keyword: a for a in attr.items}
    q = Q()
    for element in item:
        sub = nested.get(element.keyword)
        if sub is None:
            continue
        if sub.kind == "seq":
            q &= sequence_q(sub, element.value)
        elif sub.field and element.VR != "SQ":
            q &= attribute_q(sub, element.value)
    return q


def _combined_datetime(level: Level, identifier: Dataset) -> tuple[Q, set[str]]:
    q, done = Q(), set()
    for date_kw, time_kw in DATETIME_PAIRS:
        date_attr, time_attr = level.attributes.get(date_kw), level.attributes.get(time_kw)
        date_value = str(identifier.get(date_kw, "") or "").strip()
        time_value = str(identifier.get(time_kw, "") or "").strip()
        if date_attr and time_attr and date_value and time_value:
            q &= datetime_range_q(date_attr.field, time_attr.field, date_value, time_value)
            done |= {date_kw, time_kw}
    return q, done


def _time_range_q(field: str, value: str) -> Q:
    """TM range matching: compare on HHMMSS; stored fractions sort after their second."""
    start, sep, end = value.partition("-")
    if not sep:
        return Q(**{f"{field}__startswith": value.split(".")[0]})
    q = Q()
    if start:
        q &= Q(**{f"{field}__gte": start.replace(":", "")})
    if end:
        q &= Q(**{f"{field}__lte": end.replace(":", "") + "\x7f"})
    return q


# Date/time pairs matched as one date-time when combined matching is negotiated (C.2.2.2.5.1)
DATETIME_PAIRS = (("StudyDate", "StudyTime"), ("SeriesDate", "SeriesTime"))


def search(level_name: str, identifier: Dataset, *, combine_datetime: bool = False,
           fuzzy: bool = False) -> tuple[Level, QuerySet]:
    level = LEVELS.get(level_name)
    if level is None:
        raise InvalidQuery(f"unsupported QueryRetrieveLevel {level_name!r}")
    return level, search_level(level, identifier, combine_datetime=combine_datetime,
                               fuzzy=fuzzy)


def search_level(level: Level, identifier: Dataset, *, combine_datetime: bool = False,
                 fuzzy: bool = False) -> QuerySet:
    """The queryset of ``level``'s rows matching ``identifier`` (PS3.4 C.2.2.2)."""
    q, done = Q(), set()
    if combine_datetime:
        q, done = _combined_datetime(level, identifier)
    for element in identifier:
        attr = level.attributes.get(element.keyword)
        if attr is None or element.keyword in done:
            continue  # matched from the stored headers (header_keys), or not at all
        if attr.kind == "seq":
            q &= sequence_q(attr, element.value)
        elif attr.field and not attr.field.startswith("n_") and element.VR != "SQ" \
                and attr.field not in level.computed:
            q &= attribute_q(attr, element.value, fuzzy=fuzzy)
    qs = level.model.objects.filter(q)
    if level.annotate:
        qs = level.annotate(qs)
    return qs.order_by("pk")


def requested_keywords(identifier: Dataset) -> list[str]:
    """The keys an answer holds: exactly those of the request (C.4.1.1.3.2)."""
    return [e.keyword for e in identifier if e.keyword]


def first_item(ds: Dataset, keyword: str) -> Dataset | None:
    """The (only meaningful) item of a sequence key in a query, if it has one."""
    items = ds.get(keyword) or []
    return items[0] if len(items) else None


def rows(qs: QuerySet, columns: list[str]) -> Iterator[tuple]:
    """The matches' values of ``columns``, streamed in chunks (no model instances)."""
    if not columns:
        return (() for _ in qs.values_list("pk").iterator(chunk_size=2000))
    return qs.values_list(*columns).iterator(chunk_size=2000)


def charset_of(identifier: Dataset) -> str:
    """The character set a request declares (its last value when it names several)."""
    value = identifier.get("SpecificCharacterSet", "")
    if is_multi_value(value):
        value = value[-1] if value else ""
    return str(value or "").strip()


def answer_charset(requested: str) -> str:
    """Answer in the request's character set when it is one we write, else UTF-8; "" for a
    request that named none: the default repertoire where the answer is ASCII, and UTF-8
    only for an answer that needs it (the encoder decides per answer)."""
    if not requested.strip():
        return ""
    return requested if requested in ANSWER_CHARSETS else "ISO_IR 192"


# Instance paths of each level's unique key, for retrieval (C-MOVE/C-GET, later WADO-RS).
_RETRIEVE_KEYS = {
    "PatientID": "series__study__patient__patient_id",
    "StudyInstanceUID": "series__study__study_instance_uid",
    "SeriesInstanceUID": "series__series_instance_uid",
    "SOPInstanceUID": "sop_instance_uid",
}


def retrieve_instances(level_name: str, identifier: Dataset) -> QuerySet:
    """The instances a C-MOVE/C-GET identifier names (PS3.4 C.4.2.2.1): the unique keys of
    the retrieve level and above, UID lists allowed. The level's own key is required."""
    level = LEVELS.get(level_name)
    if level is None:
        raise InvalidQuery(f"unsupported QueryRetrieveLevel {level_name!r}")
    if not str(identifier.get(level.unique, "") or "").strip():
        raise InvalidQuery(f"{level.unique} is required at the {level_name} level")
    q = Q()
    for keyword, path in _RETRIEVE_KEYS.items():
        value = identifier.get(keyword)
        if value is None or value == "":
            continue
        values = list(value) if is_multi_value(value) else [value]
        uids = [str(v).strip() for v in values if str(v).strip()]
        q &= Q(**{f"{path}__in": uids})
    return Instance.objects.filter(q).order_by("series__study_id", "series_id", "pk")


# --- keys matched against the stored headers ---------------------------------------------------

# Keys that say how to query or what to return, never matched against an object (PS3.4
# C.4.1.1.3, C.6): besides these, the computed counts of each level.
NOT_MATCHED = frozenset({
    "QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability",
    "TimezoneOffsetFromUTC", "StorageMediaFileSetID", "StorageMediaFileSetUID", "RetrieveURL",
    "QueryRetrieveView", "ModalitiesInStudy", "SOPClassesInStudy",
    "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
})


@dataclass
class HeaderKeys:
    """The keys of a query that no index column holds, matched against each row's stored
    header (``Level.metadata``), and those that cannot be matched at all (binary values)."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # tag hex -> key
    unmatchable: list[str] = field(default_factory=list)  # their names

    def match(self, header: dict[str, Any], *, fuzzy: bool = False) -> bool:
        try:
            return all(header_matches(key["vr"], key.get("key"), header.get(tag), fuzzy=fuzzy)
                       for tag, key in self.keys.items())
        except Unmatchable:
            return False


def header_keys(level: Level, identifier: Dataset) -> HeaderKeys:
    """Which keys of ``identifier`` are matched from the stored headers at ``level``: those
    with a value (not universal) that name no attribute of the level's index."""
    found = HeaderKeys()
    if level.metadata is None:
        return found
    for element in identifier:
        group = element.tag >> 16
        if group in (0x0000, 0x0002) or element.keyword in NOT_MATCHED:
            continue
        if element.keyword and element.keyword in level.attributes:
            continue
        if group & 1 and (element.tag & 0xFFFF) < 0x1000:
            continue  # a private creator: it names a block, it is not matched
        key = _key(element)
        if not has_value(key):
            continue
        name = element.keyword or f"({group:04X},{element.tag & 0xFFFF:04X})"
        if _binary(key):
            found.unmatchable.append(name)
            continue
        found.keys[f"{element.tag:08X}"] = key
    return found


def _key(element: DataElement) -> dict[str, Any]:
    if element.VR == "SQ":
        return {"vr": "SQ", "key": [{f"{e.tag:08X}": _key(e) for e in item}
                                    for item in element.value or []]}
    value = element.value
    if isinstance(value, bytes):
        value = value.decode("latin-1").strip(" \x00")
    elif is_multi_value(value):
        value = "\\".join(str(v) for v in value)
    return {"vr": element.VR, "key": "" if value is None else str(value)}


def _binary(key: dict[str, Any]) -> bool:
    if key["vr"] == "SQ":
        return any(_binary(k) for item in key["key"][:1] for k in item.values() if has_value(k))
    return key["vr"] in UNMATCHABLE_VRS and key["vr"] != "UN"


def matching_rows(level: Level, qs: QuerySet, columns: list[str], *,
                  header: HeaderKeys | None = None, fuzzy: bool = False,
                  with_metadata: bool = False, offset: int = 0, limit: int | None = None
                  ) -> Iterator[tuple]:
    """The rows of ``qs`` (the index's matches) whose stored header also matches the
    ``header`` keys, as the values of ``columns``, from ``offset``, at most ``limit``; with
    the parsed header last when ``with_metadata``. Computed columns are added as asked."""
    for column in columns:
        if column in level.computed:
            qs = level.computed[column](qs)
    keys = header.keys if header is not None else {}
    if level.metadata is None:  # no stored headers at this level (the worklist)
        keys, with_metadata = {}, False
    every = columns
    if keys or with_metadata:
        qs = qs.annotate(_metadata=level.metadata())
        every = [*columns, "_metadata"]
    if not keys:  # the index decides alone: the database pages
        window = qs[offset:offset + limit] if limit is not None else qs[offset:]
        if not with_metadata:
            yield from rows(window, columns)
            return
        for row in rows(window, every):
            yield (*row[:-1], _parsed(row[-1]))
        return
    skipped = sent = 0
    for row in rows(qs, every):
        stored = _parsed(row[-1])
        if not header.match(stored, fuzzy=fuzzy):  # type: ignore[union-attr]
            continue
        if skipped < offset:
            skipped += 1
            continue
        if limit is not None and sent >= limit:
            return
        sent += 1
        yield (*row[:-1], stored) if with_metadata else row[:-1]


def _parsed(text: str | None) -> dict[str, Any]:
    return orjson.loads(text) if text else {}


def find(level: Level, qs: QuerySet, identifier: Dataset, columns: list[str], *,
         fuzzy: bool = False, with_metadata: bool = False) -> Iterator[tuple]:
    """C-FIND's matches (``matching_rows``). A key that cannot be matched refuses the query
    (0xA900), since ignoring it would widen the answer."""
    header = header_keys(level, identifier)
    if header.unmatchable:
        raise InvalidQuery(f"{', '.join(header.unmatchable)}: binary values cannot be "
                           "matched (PS3.4 C.2.2.2); send the key empty to have it returned")
    return matching_rows(level, qs, columns, header=header, fuzzy=fuzzy,
                         with_metadata=with_metadata)
