from __future__ import annotations

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
