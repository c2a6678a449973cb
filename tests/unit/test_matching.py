from __future__ import annotations

import pytest
from django.db.models import Q

from pacs.matching import date_range_q, prefix_q, single_value_q


def test_universal_matching_is_no_constraint():
    assert single_value_q("f", "") == Q()
    assert single_value_q("f", "*") == Q()


def test_single_value_and_case():
    assert single_value_q("f", "ABC") == Q(f="ABC")
    assert single_value_q("f", "abc", ignore_case=True) == Q(f__iexact="abc")


def test_trailing_star_uses_prefix_lookup():
    assert single_value_q("f", "DOE*") == Q(f__startswith="DOE")


def test_wildcards_become_anchored_regex_with_literals_escaped():
    assert single_value_q("f", "D?E*%") == Q(f__regex=r"^D.E.*%$")
    assert single_value_q("f", "A.B*C") == Q(f__regex=r"^A\.B.*C$")


def test_date_ranges():
    assert date_range_q("d", "20240101") == Q(d="20240101")
    assert date_range_q("d", "20240101-20240131") == Q(d__gte="20240101") & Q(d__lte="20240131")
    assert date_range_q("d", "-20240131") == Q(d__lte="20240131")
    assert date_range_q("d", "20240101-") == Q(d__gte="20240101")


def test_prefix_box():
    assert prefix_q("f", "DOE") == Q(f__startswith="DOE")


# --- matching against a stored DICOM JSON header (PS3.4 C.2.2.2) ---------------------------

def _attr(vr: str, *values) -> dict:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


@pytest.mark.parametrize("vr,key,stored,expected", [
    ("LO", "JFK IMAGING CENTER", _attr("LO", "JFK IMAGING CENTER"), True),  # single value
    ("LO", "jfk imaging center", _attr("LO", "JFK IMAGING CENTER"), False),  # case matters
    ("LO", "JFK*", _attr("LO", "JFK IMAGING CENTER"), True),  # wildcard (C.2.2.2.4)
    ("LO", "J?K*", _attr("LO", "JFK IMAGING CENTER"), True),
    ("LO", "A\\JFK*", _attr("LO", "JFK IMAGING CENTER"), True),  # multiple values (C.2.2.2.8)
    ("CS", "ORIGINAL", _attr("CS", "ORIGINAL", "PRIMARY", "AXIAL"), True),  # any stored value
    ("LO", "X", None, False),  # absent: no match
    ("LO", "*", None, True),  # a lone * is universal
    ("LO", '""', _attr("LO"), True),  # empty value matching (C.2.2.2.1.1)
    ("LO", '""', _attr("LO", "SOMETHING"), False),
    ("UI", "1.2\\1.3", _attr("UI", "1.3"), True),  # list of UIDs (C.2.2.2.2)
    ("UI", "1.*", _attr("UI", "1.3"), False),  # no wildcards on UIDs
    ("DA", "19970101-19971231", _attr("DA", "19970430"), True),  # range (C.2.2.2.5)
    ("DA", "-19961231", _attr("DA", "19970430"), False),
    ("DA", "19970424", _attr("DA", "1997.04.24"), True),  # ACR-NEMA form, the same date
    ("TM", "1200", _attr("TM", "120000.5"), True),
    ("TM", "0800-1200", _attr("TM", "120059"), True),
    ("TM", "0800-1159", _attr("TM", "120000"), False),
    ("DS", "5", _attr("DS", 5.0), True),  # numbers compare as numbers (CP-2305)
    ("IS", "007", _attr("IS", 7), True),
    ("PN", "müller*", _attr("PN", {"Alphabetic": "MÜLLER^JÜRGEN"}), True),
    ("PN", "山田^太郎", _attr("PN", {"Alphabetic": "YAMADA^TARO", "Ideographic": "山田^太郎"}),
     True),  # a key may name one component group
])
def test_header_matching(vr, key, stored, expected):
    from pacs.matching import header_matches

    assert header_matches(vr, key, stored) is expected


def test_header_sequence_matching_needs_one_item_to_match_every_key():
    from pacs.matching import header_matches

    stored = _attr("SQ", {"00100020": _attr("LO", "A1"), "00100021": _attr("LO", "HOSP")},
                   {"00100020": _attr("LO", "B2"), "00100021": _attr("LO", "CLINIC")})
    key = [{"00100020": {"vr": "LO", "key": "B2"}, "00100021": {"vr": "LO", "key": "HOSP"}}]
    assert header_matches("SQ", key, stored) is False  # B2 and HOSP are in different items
    key[0]["00100021"]["key"] = "CLINIC"
    assert header_matches("SQ", key, stored) is True
    assert header_matches("SQ", [{}], stored) is True  # an empty item is universal
    assert header_matches("SQ", key, None) is False


def test_binary_keys_cannot_be_matched():
    from pacs.matching import Unmatchable, header_matches

    with pytest.raises(Unmatchable):
        header_matches("OB", "AQI=", {"vr": "OB", "InlineBinary": "AQI="})
