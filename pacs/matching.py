"""DICOM attribute matching (PS3.4 C.2.2.2) turned into Django Q objects over indexed columns.

This is the seed of the shared matching engine: C-FIND, QIDO-RS, MWL and UPS search will all
build on these functions.
"""

from __future__ import annotations

import re

from django.db.models import Q

WILDCARDS = re.compile(r"[*?]")


def single_value_q(field: str, value: str, *, ignore_case: bool = False) -> Q:
    """Single value matching, or wildcard matching when the value has * or ? (C.2.2.2.4).
    An empty value is universal matching: no constraint."""
    value = value.strip()
    if not value or value == "*":
        return Q()
    if not WILDCARDS.search(value):
        return Q(**{f"{field}__iexact" if ignore_case else field: value})
    body = value[:-1]
    if value.endswith("*") and not WILDCARDS.search(body):
        # The common 'prefix*' case: a LIKE 'prefix%' the database can answer from an index.
        return Q(**{f"{field}__istartswith" if ignore_case else f"{field}__startswith": body})
    # Translate to an anchored regex so '%' and '_' in values stay literal (no LIKE escaping).
    pattern = f"^{wildcard_regex(value)}$"
    return Q(**{f"{field}__iregex" if ignore_case else f"{field}__regex": pattern})


def wildcard_regex(value: str) -> str:
    """A DICOM wildcard value as a regex body: * any run, ? one character, the rest literal."""
    return re.escape(value).replace(r"\*", ".*").replace(r"\?", ".")


def one_of_q(field: str, value: str, *, wildcards: bool = True) -> Q:
    """``value`` matches one of the backslash-separated values stored in ``field`` (e.g.
    ModalitiesInStudy, a step's several ScheduledStationAETitles)."""
    item = wildcard_regex(value) if wildcards else re.escape(value)
    return Q(**{f"{field}__regex": rf"(^|\\){item}(\\|$)"})


_DATE = re.compile(r"\d{8}")


def _date(text: str) -> str:
    """YYYYMMDD (the ACR-NEMA form YYYY.MM.DD read as such), or ValueError."""
    text = text.strip()
    if len(text) == 10 and text[4] == text[7] == ".":
        text = text.replace(".", "")
    if not _DATE.fullmatch(text) or not ("01" <= text[4:6] <= "12" and
                                         "01" <= text[6:8] <= "31"):
        raise ValueError(f"{text!r} is not a date (YYYYMMDD)")
    return text


def date_range_q(field: str, value: str) -> Q:
    """DA range matching (C.2.2.2.5): 'D', 'D1-D2', '-D2', 'D1-'. Dates are YYYYMMDD strings;
    anything else raises ValueError (the face refuses the query)."""
    value = value.strip()
    if not value:
        return Q()
    if "-" not in value:
        return Q(**{field: _date(value)})
    start, _, end = value.partition("-")
    start, end = (_date(start) if start else ""), (_date(end) if end else "")
    q = Q()
    if start:
        q &= Q(**{f"{field}__gte": start})
    if end:
        q &= Q(**{f"{field}__lte": end})
    return q


def prefix_q(field: str, value: str) -> Q:
    """Convenience for search boxes on a normalized (upper-cased) column: 'ABC' is 'ABC*'."""
    value = value.strip()
    if not value:
        return Q()
    if not WILDCARDS.search(value):
        value += "*"
    return single_value_q(field, value)


def datetime_range_q(date_field: str, time_field: str, date_value: str, time_value: str) -> Q:
    """Combined date-time range matching (PS3.4 C.2.2.2.5.1, negotiated with extended
    negotiation): StudyDate '20240101-20240131' with StudyTime '0800-1700' means from
    2024-01-01 08:00 to 2024-01-31 17:00, not "between 08:00 and 17:00 on each day"."""
    start_date, end_date = _bounds(date_value.strip())
    start_time, end_time = _bounds(time_value.strip().replace(":", ""))
    q = Q()
    if start_date:
        q &= Q(**{f"{date_field}__gt": start_date}) | (
            Q(**{date_field: start_date}) & Q(**{f"{time_field}__gte": start_time or ""}))
    if end_date:
        # "\x7f" sorts after any digit or fraction: 1700 includes 170000.5
        q &= Q(**{f"{date_field}__lt": end_date}) | (
            Q(**{date_field: end_date}) & Q(**{f"{time_field}__lte": (end_time or "99") + "\x7f"}))
    return q


def _bounds(value: str) -> tuple[str, str]:
    if "-" not in value:
        return value, value
    start, _, end = value.partition("-")
    return start, end


def fuzzy_name_q(field: str, value: str, *, upper: bool) -> Q:
    """Fuzzy person-name matching (PS3.18 8.3.4.1 fuzzymatching=true): every word of the
    value, case-insensitively, starts some name component or word of the stored name, in any
    order ('joh do' finds 'DOE^JOHN'). Wildcards inside a word keep their meaning."""
    q = Q()
    for word in re.split(r"[\s^=,]+", value.strip()):
        word = word.strip("*")
        if not word:
            continue
        body = wildcard_regex(word.upper() if upper else word)
        lookup = f"{field}__regex" if upper else f"{field}__iregex"
        q &= Q(**{lookup: rf"(^|[\^ =\-]){body}"})
    return q
