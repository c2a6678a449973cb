"""The study list's search, sorting and selection, and downloads: a ZIP of the stored files
and a DICOM media folder whose DICOMDIR outside readers (pydicom's FileSet, DCMTK) follow."""

from __future__ import annotations

import io
import subprocess
import zipfile

import pytest
from django.urls import reverse
from pydicom import dcmread
from pydicom.fileset import FileSet

from core.models import AuditEvent
from pacs.models import Instance, Study
from pacs.services.ingest import store_instance
from pacs.storage import get_storage
from tests.samples import encoded, sample
from tests.users import user_with

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = "1.2.826.0.1.3680043.8.498.2626"


def _store(study: str, name: str, pid: str, date: str, series: int = 1, count: int = 2,
           kind: str = "CT_small.dcm") -> None:
    for s in range(1, series + 1):
        for n in range(1, count + 1):
            ds = dcmread(sample(kind))
            ds.PatientName, ds.PatientID, ds.StudyDate = name, pid, date
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.StudyInstanceUID = f"{ROOT}.{study}"
            ds.SeriesInstanceUID = f"{ROOT}.{study}.{s}"
            ds.SOPInstanceUID = f"{ROOT}.{study}.{s}.{n}"
            ds.SeriesNumber, ds.InstanceNumber = s, n
            store_instance(data=encoded(ds), received_from="test")


@pytest.fixture
def archive(storage_dir):
    _store("1", "Müller^Hans", "P1", "20240301", series=2)
    _store("2", "MULLER^ANNA", "P2", "20240302")
    _store("3", "Zhang^Wei", "P3", "20230101", kind="MR_small.dcm")


def _names(page) -> list[str]:
    return [s.patient.patient_name for s in page.context["page"]]


def test_name_search_any_part_no_accents_no_case(client, archive):
    client.force_login(user_with("v", "viewer"))
    find = lambda text: sorted(_names(client.get(reverse("study-list"),  # noqa: E731
                                                 {"patient_name": text})))
    assert find("Muller*") == ["MULLER^ANNA", "Müller^Hans"]
    assert find("müller") == ["MULLER^ANNA", "Müller^Hans"]
    assert find("hans") == ["Müller^Hans"]  # the given name alone
    assert find("anna muller") == ["MULLER^ANNA"]  # in any order
    assert find("m?ller hans") == ["Müller^Hans"]
    assert find("wei") == ["Zhang^Wei"]
    assert find("ans") == []  # a word's start, not any substring
    assert find("MULLER^A*") == ["MULLER^ANNA"]  # with ^: the components in their places


def test_sorting_page_size_and_pages(client, archive):
    client.force_login(user_with("v", "viewer"))
    page = client.get(reverse("study-list"), {"sort": "name"})
    assert _names(page) == ["MULLER^ANNA", "Müller^Hans", "Zhang^Wei"]
    page = client.get(reverse("study-list"), {"sort": "-date"})
    assert [s.study_date for s in page.context["page"]] == ["20240302", "20240301", "20230101"]
    page = client.get(reverse("study-list"), {"sort": "date", "size": "25"})
    assert page.context["page"][0].study_date == "20230101"
    assert b"2023-01-01" in page.content  # dates as people read them
    assert client.get(reverse("study-list"), {"sort": "nonsense"}).status_code == 200
    for n in range(4, 31):
        _store(str(n), f"EXTRA^{n:02d}", f"X{n}", "20200101", count=1)
    page = client.get(reverse("study-list"), {"size": "25", "page": "2"})
    assert page.context["page"].number == 2 and len(page.context["page"]) == 5
    assert b"Last &raquo;" not in page.content and b"Go to page" in page.content
    page = client.get(reverse("study-list"), {"size": "50"})
    assert len(page.context["page"]) == 30


def test_a_study_as_zip_streams_the_stored_files(client, archive):
    client.force_login(user_with("v", "viewer"))
    answer = client.get(reverse("study-download", args=[f"{ROOT}.1"]))
    assert answer.status_code == 200 and answer.streaming
    data = b"".join(answer.streaming_content)
    assert int(answer["Content-Length"]) == len(data)  # the size was known beforehand
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        # patient/study/series folders a person can find their way in
        assert len(names) == 4 and all(n.startswith("Müller_Hans_P1/20240301_") for n in names)
        stored = {i.sop_instance_uid: i for i in Instance.objects.filter(
            series__study__study_instance_uid=f"{ROOT}.1")}
        for name in names:
            body = zf.read(name)
            ds = dcmread(io.BytesIO(body))
            with get_storage().open(stored[ds.SOPInstanceUID].file_key) as file:
                assert body == file.read()  # byte for byte what is stored
    assert AuditEvent.objects.filter(category="access", action="download").exists()


def test_a_selection_as_dicomdir_media(client, archive, tmp_path):
    client.force_login(user_with("v", "viewer"))
    answer = client.post(reverse("studies-download"), {
        "uid": [f"{ROOT}.1", f"{ROOT}.3"], "format": "dicomdir"})
    assert answer.status_code == 200
    data = b"".join(answer.streaming_content)
    assert int(answer["Content-Length"]) == len(data)
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path)
    assert (tmp_path / "DICOMDIR").is_file()
    for path in (tmp_path / "DICOM").rglob("*"):  # PS3.10 file IDs: 8 characters, A-Z 0-9 _
        assert len(path.name) <= 8 and path.name.isupper() and path.name.isalnum()
    # pydicom follows the record offsets from the root to every image
    fs = FileSet(tmp_path / "DICOMDIR")
    assert len(fs) == 6
    uids = set()
    for instance in fs:
        ds = instance.load()
        assert ds.SOPInstanceUID == instance.SOPInstanceUID
        uids.add(ds.SOPInstanceUID)
    assert uids == set(Instance.objects.filter(series__study__study_instance_uid__in=[
        f"{ROOT}.1", f"{ROOT}.3"]).values_list("sop_instance_uid", flat=True))
    assert {p.PatientID for p in fs.find(load=False) if "PatientID" in p} >= {"P1", "P3"}
    # DCMTK reads it as a Media Storage Directory
    dump = subprocess.run(["dcmdump", str(tmp_path / "DICOMDIR")], capture_output=True,
                          text=True)
    assert dump.returncode == 0, dump.stderr
    assert "MediaStorageDirectoryStorage" in dump.stdout and "IMAGE" in dump.stdout


def test_bulk_actions_follow_the_roles(client, archive):
    client.force_login(user_with("v", "viewer"))
    answer = client.post(reverse("studies-bulk"), {"uid": [f"{ROOT}.2"], "action": "delete"})
    assert answer.status_code == 403
    client.force_login(user_with("boss", "admin"))
    answer = client.post(reverse("studies-bulk"), {"uid": [f"{ROOT}.2", f"{ROOT}.3"],
                                                   "action": "delete",
                                                   "back": "https://elsewhere.example/"})
    assert answer.status_code == 302 and answer["Location"] == reverse("study-list")
    assert set(Study.objects.values_list("study_instance_uid", flat=True)) == {f"{ROOT}.1"}
    page = client.get(reverse("study-list"))
    assert b'value="delete"' in page.content
    client.force_login(user_with("t", "technologist"))
    page = client.get(reverse("study-list"))
    assert b'value="delete"' not in page.content and b'value="send"' in page.content


def test_nothing_to_download_is_a_404(client, storage_dir):
    client.force_login(user_with("v", "viewer"))
    assert client.get(reverse("study-download", args=["1.2.3"])).status_code == 404
    assert client.post(reverse("studies-download"), {}).status_code == 400
    assert client.get(reverse("study-download", args=["1.2.3"]),
                      {"format": "tar"}).status_code == 400



def test_pages_past_the_middle_read_from_the_other_end_give_the_same_rows(storage_dir):
    from django.core.paginator import Paginator

    from core.paging import FromBothEnds
    from pacs import selectors

    for n in range(23):
        _store(str(100 + n), f"PAGE^{n % 5}", f"Q{n}", f"2024{1 + n % 12:02d}01", count=1)
    for sort in ("-date", "name", "instances"):
        studies = selectors.study_search(selectors.StudyFilter(sort=sort))
        plain, both = Paginator(studies, 4), FromBothEnds(studies, 4)
        assert both.num_pages == plain.num_pages == 6
        for number in range(1, 7):
            assert [s.pk for s in both.page(number)] == [s.pk for s in plain.page(number)]
