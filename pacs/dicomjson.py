"""DICOM JSON (PS3.18 F.2) of an instance's header, without bulk data."""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

BULK_THRESHOLD = 1024  # binary values larger than this become BulkDataURI references


def _bulk_uri(element: DataElement) -> str:
    # Relative reference resolved by WADO-RS against the instance URL (PS3.18 F.2.6).
    return f"bulkdata/{element.tag:08X}"


def header_json(ds: Dataset, *, has_pixel_data: bool) -> dict[str, Any]:
    """The dataset as DICOM JSON; bulk values (and pixel data) become BulkDataURI entries."""
    try:
        result = ds.to_json_dict(BULK_THRESHOLD, _bulk_uri, suppress_invalid_tags=True)
    except Exception:  # one bad element must not reject the file; keep what converts
        result = {}
        for element in ds:
            try:
                result[f"{element.tag:08X}"] = element.to_json_dict(_bulk_uri, BULK_THRESHOLD)
            except Exception:
                continue
    if has_pixel_data:
        result["7FE00010"] = {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
    return result
