"""ER7 field access (hl7gw.er7): repetitions, components, subcomponents and escapes."""

from __future__ import annotations

from hl7gw.er7 import Encoding, Segment, encoding_of


def test_components_repetitions_and_escapes():
    seg = Segment(r"OBR|1|A\T\B&NS^C\S\D~R2|x\F\y\R\z\E\|", Encoding())
    assert seg.get(2) == "A&B"  # escaped & is data; the real subcomponent is dropped
    assert seg.get(2, 2) == "C^D" and seg.get(2, 1, 1) == "R2"
    assert seg.repetitions(2) == ["A&B", "R2"]
    assert seg[2] == [["A&B&NS", "C^D"], ["R2"]]
    assert seg.get(3) == "x|y~z\\"
    assert seg.get(2, 5) == "" and seg.get(2, 1, 7) == "" and seg.get(40) == ""


def test_msh_counts_the_field_separator_as_msh_1_and_custom_encoding():
    text = "MSH#$%@!#APP$ONE!TWO#FAC"
    enc = encoding_of(text)
    assert (enc.field, enc.component, enc.repetition, enc.escape, enc.subcomponent) == (
        "#", "$", "%", "@", "!")
    msh = Segment(text, enc)
    assert msh.get(1) == "#" and msh.raw(2) == "$%@!"
    assert msh.get(3) == "APP" and msh.get(3, 2) == "ONE" and msh.get(4) == "FAC"
