"""DICOM attribute matching (PS3.4 C.2.2.2) turned into Django Q objects over indexed columns.

This is the seed of the shared matching engine: C-FIND, QIDO-RS, MWL and UPS search will all
build on these functions.
"""

from __future__ import annotations

import re

from django.db.models import Q

from pacs.dicomfile import as_date
from pacs.identity import person_name

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
    text = as_date(text)
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
    lookup = f"{field}__regex" if upper else f"{field}__iregex"
    for word in _fuzzy_words(value):
        q &= Q(**{lookup: _FUZZY_WORD.format(wildcard_regex(word.upper() if upper else word))})
    return q


# a fuzzy word starts a name component or a word of one
_FUZZY_WORD = r"(^|[\^ =\-]){}"


def _fuzzy_words(value: str) -> list[str]:
    return [w.strip("*") for w in re.split(r"[\s^=,]+", value.strip()) if w.strip("*")]


# --- matching against a stored DICOM JSON header (attributes without an index column) ---------

# VRs whose values are never matched (PS3.4 C.2.2.2: binary and sequence-free bulk types);
# a key of one of these with a value cannot be matched.
UNMATCHABLE_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
# wildcards apply to these (C.2.2.2.4); elsewhere * and ? are literal characters
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


class Unmatchable(ValueError):
    """A key whose value cannot be matched against what is stored (binary data)."""


def header_matches(vr: str, key: object, stored: dict | None, *, fuzzy: bool = False) -> bool:
    """PS3.4 C.2.2.2 matching of one key (``vr``, its value as a string, or a list of
    datasets-as-dicts for a sequence) against one stored DICOM JSON attribute (or None when
    the object has none). An empty key is universal matching."""
    if vr == "SQ":
        return _sequence_matches(key, stored, fuzzy)  # type: ignore[arg-type]
    text = "" if key is None else str(key).strip()
    if not text or text == "*":
        return True
    if vr in UNMATCHABLE_VRS:
        raise Unmatchable("binary values are not matched")
    if stored is not None and ("BulkDataURI" in stored or "InlineBinary" in stored):
        return False  # a value kept as bulk data (a long text) is not matched
    if text == '""':  # empty value matching (C.2.2.2.1.1): the attribute is empty
        return stored is None or not stored.get("Value")
    values = [] if stored is None else stored.get("Value") or []
    if not values:
        return False
    if vr == "PN" or (stored is not None and stored.get("vr") == "PN"):
        names = [person_name(v) for v in values]
        if fuzzy:
            pattern = re.compile(fuzzy_name_regex(text), re.IGNORECASE)
            return any(pattern.search(name) for name in names)
        return any(_one_of(text, name, vr="PN") for name in names for name in _pn_forms(name))
    strings = [str(v).strip() for v in values]
    if vr == "UI":
        uids = {u.strip() for u in text.split("\\")}
        return any(s in uids for s in strings)
    if vr in ("DA", "TM", "DT"):
        return any(_range_matches(vr, item.strip(), s) for item in text.split("\\")
                   for s in strings)
    if vr in _NUMERIC_VRS:
        return any(_same_number(item, v) for item in text.split("\\") for v in values)
    return any(_one_of(text, s, vr=vr) for s in strings)


def _one_of(key: str, value: str, *, vr: str) -> bool:
    """Single value, wildcard or multiple value matching (C.2.2.2.1, .4, .8) of a text
    value; person names case-insensitively, as the indexed columns match them."""
    flags = re.IGNORECASE if vr == "PN" else 0
    for item in key.split("\\") if vr not in ("LT", "ST", "UT") else [key]:
        item = item.strip()
        if vr in _WILDCARD_VRS and WILDCARDS.search(item):
            if re.fullmatch(wildcard_regex(item), value, flags | re.DOTALL):
                return True
        elif (value.upper() == item.upper()) if flags else value == item:
            return True
    return False


def _pn_forms(name: str) -> list[str]:
    """A stored name as a whole and each of its component groups (a key may name one)."""
    groups = [g for g in name.split("=") if g]
    return [name, *groups] if len(groups) > 1 else [name]


def fuzzy_name_regex(value: str) -> str:
    """``fuzzy_name_q``'s rule as one Python regex (every word, in any order)."""
    return "".join(f"(?=.*{_FUZZY_WORD.format(wildcard_regex(w))})"
                   for w in _fuzzy_words(value))


def _range_matches(vr: str, key: str, value: str) -> bool:
    """DA, TM and DT single value and range matching (C.2.2.2.5), on normalized strings:
    dates YYYYMMDD (ACR-NEMA YYYY.MM.DD read as such), times without colons."""
    def norm(text: str) -> str:
        text = text.strip()
        if vr == "DA":
            return as_date(text)
        return text.replace(":", "") if vr == "TM" else text

    value = norm(value)
    if "-" not in key:
        single = norm(key)
        if vr == "DA":
            return value == single
        return value.startswith(single.split(".")[0])  # 1200 matches 120000.5
    start, _, end = key.partition("-")
    start, end = norm(start), norm(end)
    if start and value < start:
        return False
    return not end or value <= (end if vr == "DA" else end + "\x7f")


def _same_number(key: str, value: object) -> bool:
    try:
        return float(key) == float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(key).strip() == str(value).strip()


def _sequence_matches(items: list[dict] | None, stored: dict | None, fuzzy: bool) -> bool:
    """Sequence matching (C.2.2.2.6): some stored item matches every key of the query's
    (one) item; no item, or an empty one, is universal matching."""
    if not items or not any(has_value(k) for k in items[0].values()):
        return True
    for stored_item in (stored or {}).get("Value") or []:
        if all(header_matches(k["vr"], k.get("key"), stored_item.get(tag), fuzzy=fuzzy)
               for tag, k in items[0].items()):
            return True
    return False


def has_value(key: dict) -> bool:
    """Is a query key (``{"vr", "key"}``, a sequence's items as dicts of keys) other than
    universal matching?"""
    if key["vr"] == "SQ":
        items = key.get("key") or []
        return bool(items) and any(has_value(k) for k in items[0].values())
    value = key.get("key")
    return value is not None and str(value).strip() not in ("", "*")


def name_words_q(field: str, text: str) -> Q:
    """The pages' name search over a column of folded name words (pacs.identity.name_words):
    each word typed must start a word of the name, accents and case aside, in any order;
    * and ? are wildcards. 'Muller*' finds 'Müller^Hans', 'hans' finds him too."""
    from pacs.identity import fold

    q = Q()
    for word in fold(text).replace("^", " ").replace(",", " ").split():
        word = word.rstrip("*")
        if not word:
            continue
        if WILDCARDS.search(word):
            q &= Q(**{f"{field}__regex": " " + wildcard_regex(word)})
        else:
            q &= Q(**{f"{field}__contains": " " + word})
    return q
