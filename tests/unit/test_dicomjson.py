from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files

from pacs.dicomjson import BULK_THRESHOLD, _bulk_uri, _drop_empty_sequences, header_json
from tests.samples import COMPRESSED, UNCOMPRESSED, sample

CHARSET_FILES = sorted(get_charset_files("chr*.dcm"))


@pytest.mark.parametrize("name", list(COMPRESSED) + UNCOMPRESSED + ["rtdose.dcm", "priv_SQ.dcm"]
                         + CHARSET_FILES)
def test_fast_json_equals_pydicom(name):
    """Equal to pydicom's own output, incl. person names and text in every character set,
    except that an empty sequence has no "Value" (pydicom writes ``[]``; PS3.18 F.2.5)."""
    path = name if name in CHARSET_FILES else sample(name)
    ds = dcmread(path, stop_before_pixels=True)
    fast = header_json(ds, has_pixel_data=False)
    reference = dcmread(path, stop_before_pixels=True).to_json_dict(
        BULK_THRESHOLD, _bulk_uri
    )
    # group lengths never go into DICOM JSON (PS3.18 F.2.2); pydicom writes them
    reference = {k: v for k, v in reference.items() if not k.endswith("0000")}
    for element in reference.values():
        if element["vr"] == "SQ":
            _drop_empty_sequences(element)
    assert fast.keys() == reference.keys()
    for key in reference:
        assert fast[key] == reference[key], key


def test_pixel_data_is_a_bulk_reference():
    ds = dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    assert header_json(ds, has_pixel_data=True)["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"
