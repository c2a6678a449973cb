"""ER7 field access (hl7gw.er7): repetitions, components, subcomponents and escapes."""

from __future__ import annotations

import pytest

from hl7gw.er7 import Encoding, Segment, encoding_of, unescape
from hl7gw.errors import Hl7Error


def test_components_repetitions_and_escapes():
    seg = Segment(r"OBR|1|A\T\B&NS^C\S\D~R2|x\F\y\R\z\E\|", Encoding())
    assert seg.get(2) == "A&B"  # escaped & is data; the real subcomponent is dropped
    assert seg.get(2, 2) == "C^D" and seg.get(2, 1, 1) == "R2"
    assert seg.repetitions(2) == ["A&B", "R2"]
    assert seg[2] == [["A&B&NS", "C^D"], ["R2"]]
    assert seg.get(3) == "x|y~z\\"
    going_to_dicom = Segment(seg.text, Encoding(), for_dicom=True)
    with pytest.raises(Hl7Error) as refused:  # a backslash would split a DICOM value
        going_to_dicom.get(3)
    assert refused.value.location == "OBR-3" and refused.value.code == 102
    assert seg.get(2, 5) == "" and seg.get(2, 1, 7) == "" and seg.get(40) == ""


def test_msh_counts_the_field_separator_as_msh_1_and_custom_encoding():
    text = "MSH#$%@!#APP$ONE!TWO#FAC"
    enc = encoding_of(text)
    assert (enc.field, enc.component, enc.repetition, enc.escape, enc.subcomponent) == (
        "#", "$", "%", "@", "!")
    msh = Segment(text, enc)
    assert msh.get(1) == "#" and msh.raw(2) == "$%@!"
    assert msh.get(3) == "APP" and msh.get(3, 2) == "ONE" and msh.get(4) == "FAC"


def test_hexadecimal_and_formatting_escapes():
    """HL7 v2.5 2.7.5: \\Xhh..\\ is hexadecimal data, in the message's character set;
    2.7.4/2.7.6: highlighting and formatting commands, which a DICOM value cannot hold."""
    latin1, utf8 = Encoding(codec="latin_1"), Encoding(codec="utf_8")
    assert unescape(r"M\XC9\LANIE", latin1) == "MÉLANIE"
    assert unescape(r"M\XC389\LANIE", utf8) == "MÉLANIE"
    assert unescape("\\H\\bold\\N\\ text\\.br\\next\\.sp\\", latin1) == "bold text next"
    assert unescape(r"a\Zlocal\b", latin1) == r"a\Zlocal\b"  # unknown: left as it came
    seg = Segment(r"PID|1||ID1||SMITH&WESSON^M\XC9\LANIE^^MRS", latin1)
    assert seg.get(5) == "SMITH" and seg.get(5, 2) == "MÉLANIE" and seg.get(5, 4) == "MRS"
    with pytest.raises(Hl7Error):
        Segment(r"PID|1||ID1||A\Zlocal\B", latin1, for_dicom=True).get(5)
