"""Query a remote AE (C-FIND SCU, Study Root) for the portal's remote search pages."""

from __future__ import annotations

from django.conf import settings
from pydicom.dataset import Dataset

from dicomnet import scu
from pacs.dicomfile import is_multi_value
from pacs.models import ApplicationEntity

STUDY_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "StudyTime",
              "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_KEYS = ("SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription",
               "NumberOfSeriesRelatedInstances")
MAX_RESULTS = 500


def _peer(remote: ApplicationEntity) -> scu.Peer:
    return scu.Peer.of(remote)


def _text(value: object) -> str:
    if value is None:
        return ""
    if is_multi_value(value):
        return "\\".join(str(v) for v in value)  # type: ignore[union-attr]
    return str(value)


def _rows(answers: list[Dataset], keys: tuple[str, ...]) -> list[dict[str, str]]:
    return [{key: _text(answer.get(key, "")) for key in keys} for answer in answers]


def find_studies(remote: ApplicationEntity, *, patient_name: str = "", patient_id: str = "",
                 date_range: str = "", modality: str = "", accession_number: str = "",
                 ) -> list[dict[str, str]]:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.SpecificCharacterSet = "ISO_IR 192"
    for key in STUDY_KEYS:
        setattr(ds, key, "")
    ds.PatientName, ds.PatientID, ds.StudyDate = patient_name, patient_id, date_range
    ds.ModalitiesInStudy, ds.AccessionNumber = modality, accession_number
    answers = scu.find(_peer(remote), ds, calling_aet=settings.DIMSE_AET, limit=MAX_RESULTS)
    rows = _rows(answers, STUDY_KEYS)
    return sorted(rows, key=lambda r: (r["StudyDate"], r["StudyTime"]), reverse=True)


def find_series(remote: ApplicationEntity, study_uid: str) -> list[dict[str, str]]:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = study_uid
    for key in SERIES_KEYS:
        setattr(ds, key, "")
    answers = scu.find(_peer(remote), ds, calling_aet=settings.DIMSE_AET, limit=MAX_RESULTS)
    return sorted(_rows(answers, SERIES_KEYS),
                  key=lambda r: int(r["SeriesNumber"]) if r["SeriesNumber"].isdigit() else 0)
