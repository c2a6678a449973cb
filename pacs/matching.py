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
    pattern = "^" + "".join(
        ".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in value
    ) + "$"
    return Q(**{f"{field}__iregex" if ignore_case else f"{field}__regex": pattern})


def date_range_q(field: str, value: str) -> Q:
    """DA range matching (C.2.2.2.5): 'D', 'D1-D2', '-D2', 'D1-'. Dates are YYYYMMDD strings."""
    value = value.strip()
    if not value:
        return Q()
    if "-" not in value:
        return Q(**{field: value})
    start, _, end = value.partition("-")
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
