"""DICOMweb over raw HTTP: content negotiation, authentication, CORS and the error cases
(written from PS3.18, not through a client library)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from pacs.dicomweb import multipart
from pacs.models import Instance
from pacs.services.ingest import store_instance
from tests.samples import encoded, sample
from tests.stored import dataset, left_behind, read

NS = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
DICOM_TYPE = "application/dicom"


@pytest.fixture
def ct(web):
    data = sample("CT_small.dcm").read_bytes()
    store_instance(data=data, received_from="test")
    return dcmread(io.BytesIO(data))


def get(web, path, auth=None, **headers):
    return requests.get(f"{web}/dicomweb{path}", headers={**(auth or {}), **headers},
                        timeout=10)


def stow(web, auth, parts, part_type="application/dicom", path="/studies", **headers):
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream(boundary, (
        (multipart.part_header(boundary, media), [data]) for media, data in parts)))
    return requests.post(
        f"{web}/dicomweb{path}", data=body, timeout=20,
        headers={**auth, "Content-Type": multipart.content_type(boundary, part_type),
                 "Accept": "application/dicom+json", **headers})


def test_anonymous_is_refused_unless_configured(web, ct, settings):
    response = get(web, "/studies")
    assert response.status_code == 401
    assert "Token" in response.headers["WWW-Authenticate"]
    settings.DICOMWEB_ANONYMOUS_READ = True
    assert get(web, "/studies").status_code == 200
    refused = stow(web, {}, [("application/dicom", sample("CT_small.dcm").read_bytes())])
    assert refused.status_code == 401  # storing always needs a user


def test_bearer_token_and_session_both_work(web, ct, token, client_session):
    assert get(web, "/studies", Authorization=f"Bearer {token}").status_code == 200
    assert client_session.get(f"{web}/dicomweb/studies", timeout=10).status_code == 200


def test_qido_percent_encoding_tags_and_bad_parameters(web, auth, ct):
    by_tag = get(web, "/studies?00100010=compressed%2A", auth)
    assert [s["0020000D"]["Value"][0] for s in by_tag.json()] == [ct.StudyInstanceUID]
    assert by_tag.headers["Content-Type"] == "application/dicom+json"
    assert get(web, "/studies?PatientName=nobody%2A", auth).json() == []
    dated = get(web, f"/studies?StudyDate={ct.StudyDate}-&limit=5", auth).json()
    assert len(dated) == 1
    assert get(web, "/studies?StudyDate=-19990101", auth).json() == []
    bad = get(web, "/studies?NoSuchKeyword=1", auth)
    assert bad.status_code == 400 and "NoSuchKeyword" in bad.json()["error"]
    assert get(web, "/studies?limit=ten", auth).status_code == 400
    assert get(web, "/studies?offset=-1", auth).status_code == 400
    uid_list = get(web, f"/studies?StudyInstanceUID={ct.StudyInstanceUID},1.2.3", auth).json()
    assert len(uid_list) == 1


def test_qido_as_xml_multipart(web, auth, ct):
    response = get(web, "/studies", auth, Accept='multipart/related; type="application/dicom+xml"')
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(
        'multipart/related; type="application/dicom+xml"')
    parts = multipart.parse(response.content,
                            multipart.boundary_of(response.headers["Content-Type"]))
    root = ET.fromstring(parts[0].body)
    uid = root.find("d:DicomAttribute[@keyword='StudyInstanceUID']/d:Value", NS)
    assert uid.text == ct.StudyInstanceUID
    family = root.find("d:DicomAttribute[@tag='00100010']/d:PersonName/d:Alphabetic/"
                       "d:FamilyName", NS)
    assert family.text == "CompressedSamples"


def test_not_acceptable_answers_406(web, auth, ct):
    assert get(web, "/studies", auth, Accept="text/html").status_code == 406
    study = f"/studies/{ct.StudyInstanceUID}"
    assert get(web, study, auth, Accept="application/json").status_code == 406
    # JPEG 2000 cannot be produced from this uncompressed CT: nothing acceptable
    refused = get(web, study, auth,
                  Accept='multipart/related; type="application/dicom"; '
                         "transfer-syntax=1.2.840.10008.1.2.4.90")
    assert refused.status_code == 406
    assert "1.2.840.10008.1.2.4.90" in refused.json()["error"]
    frames = f"{study}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}/frames/1"
    assert get(web, frames, auth, Accept='multipart/related; type="image/jpeg"'
               ).status_code == 406
    assert get(web, f"{study}/metadata", auth, Accept="application/dicom").status_code == 406


def test_pixel_data_that_cannot_be_decoded_is_406_unless_taken_as_stored(web, auth):
    ds = dcmread(sample("SC_rgb_jpeg_dcmtk.dcm"))
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
    store_instance(data=encoded(ds), received_from="test")
    path = (f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")
    refused = get(web, path, auth, Accept=DICOM_TYPE)  # Explicit VR Little Endian
    assert refused.status_code == 406
    assert "cannot decode" in refused.json()["error"]
    in_multipart = get(web, path, auth, Accept=f'multipart/related; type="{DICOM_TYPE}"')
    assert in_multipart.status_code == 406
    as_stored = get(web, path, auth, Accept=f"{DICOM_TYPE}; transfer-syntax=*")
    assert as_stored.status_code == 200
    assert dcmread(io.BytesIO(as_stored.content)).PixelData == ds.PixelData


def test_accept_query_parameter_overrides_the_header(web, auth, ct):
    response = get(web, "/studies?accept=application/dicom%2Bjson", auth, Accept="text/html")
    assert response.status_code == 200


def test_retrieve_as_stored_streams_the_stored_bytes(web, auth, ct):
    response = get(web, f"/studies/{ct.StudyInstanceUID}", auth,
                   Accept='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    (part,) = multipart.parse(response.content,
                              multipart.boundary_of(response.headers["Content-Type"]))
    stored = Instance.objects.get(sop_instance_uid=ct.SOPInstanceUID)
    assert part.body == read(stored.file_key)
    assert part.content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"


def test_byte_ranges_of_stored_objects(web, auth, ct):
    """HTTP range requests (RFC 9110 14) on answers sent as stored: a resumed or partial
    download gets 206 with Content-Range and exactly the asked bytes; a range outside the
    object 416; several ranges, or none understood, the whole object."""
    data = read(Instance.objects.get(sop_instance_uid=ct.SOPInstanceUID).file_key)
    inst = (f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
            f"{ct.SOPInstanceUID}")
    bare = {"Accept": f"{DICOM_TYPE}; transfer-syntax=*"}
    whole = get(web, inst, auth, **bare)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["Accept-Ranges"] == "bytes"
    head = get(web, inst, auth, **bare, Range="bytes=0-131")
    assert head.status_code == 206 and head.content == data[:132]
    assert head.headers["Content-Range"] == f"bytes 0-131/{len(data)}"
    rest = get(web, inst, auth, **bare, Range="bytes=1000-")
    assert rest.status_code == 206 and rest.content == data[1000:]
    tail = get(web, inst, auth, **bare, Range="bytes=-100")
    assert tail.status_code == 206 and tail.content == data[-100:]
    outside = get(web, inst, auth, **bare, Range=f"bytes={len(data)}-")
    assert outside.status_code == 416
    assert outside.headers["Content-Range"] == f"bytes */{len(data)}"
    several = get(web, inst, auth, **bare, Range="bytes=0-1,5-6")
    assert several.status_code == 200 and several.content == data
    uri = requests.get(f"{web}/dicomweb/wado", headers={**auth, "Range": "bytes=128-131"},
                       params={"requestType": "WADO", "studyUID": ct.StudyInstanceUID,
                               "seriesUID": ct.SeriesInstanceUID,
                               "objectUID": ct.SOPInstanceUID,
                               "contentType": DICOM_TYPE}, timeout=10)
    assert uri.status_code == 206 and uri.content == b"DICM"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    body = get(web, f"/studies/{ct.StudyInstanceUID}", auth, Accept=accept).content
    middle = get(web, f"/studies/{ct.StudyInstanceUID}", auth, Accept=accept,
                 Range="bytes=500-4999")
    assert middle.status_code == 206 and middle.content == body[500:5000]


def test_single_part_bulk_data_and_frames(web, auth, ct):
    """What OHIF's 'singlepart' option asks: the bytes themselves, not a multipart body."""
    inst = (f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
            f"{ct.SOPInstanceUID}")
    bulk = get(web, f"{inst}/bulkdata/7FE00010", auth, Accept="application/octet-stream")
    assert bulk.headers["Content-Type"].startswith("application/octet-stream")
    assert bulk.content == ct.PixelData
    frame = get(web, f"{inst}/frames/1", auth,
                Accept="multipart/related; type=application/octet-stream; transfer-syntax=*")
    (part,) = multipart.parse(frame.content, multipart.boundary_of(frame.headers["Content-Type"]))
    assert part.body == ct.PixelData


def test_frames_without_a_preference_come_uncompressed(web, auth):
    """PS3.18: pixel data defaults to uncompressed application/octet-stream. A request with
    no Accept header, or Accept: */* (curl's and requests' default), gets the RLE frames of
    a lossless source decoded, little endian, in a multipart/related body."""
    store_instance(data=sample("MR_small_RLE.dcm").read_bytes(), received_from="test")
    mr = dcmread(sample("MR_small_RLE.dcm"))
    inst = (f"/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}/instances/"
            f"{mr.SOPInstanceUID}")
    for accept in (None, "*/*"):
        answer = requests.get(f"{web}/dicomweb{inst}/frames/1", timeout=10,
                              headers={**auth, "Accept": accept})
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("multipart/related")
        (part,) = multipart.parse(answer.content,
                                  multipart.boundary_of(answer.headers["Content-Type"]))
        assert part.content_type.startswith("application/octet-stream")
        pixels = mr.pixel_array
        assert part.body == pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()


def test_any_type_gives_stored_frames_and_xml_metadata(web, auth):
    store_instance(data=sample("MR_small_RLE.dcm").read_bytes(), received_from="test")
    mr = dcmread(sample("MR_small_RLE.dcm"))
    inst = (f"/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}/instances/"
            f"{mr.SOPInstanceUID}")
    frames = get(web, f"{inst}/frames/1", auth, Accept='multipart/related; type="*/*"')
    (part,) = multipart.parse(frames.content,
                              multipart.boundary_of(frames.headers["Content-Type"]))
    assert part.content_type == "image/x-dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    assert len(part.body) < mr.Rows * mr.Columns * 2  # the RLE segments, not decoded pixels
    xml = get(web, f"{inst}/metadata", auth,
              Accept='multipart/related; type="application/dicom+xml"')
    (doc,) = multipart.parse(xml.content, multipart.boundary_of(xml.headers["Content-Type"]))
    root = ET.fromstring(doc.body)
    bulk = root.find("d:DicomAttribute[@tag='7FE00010']/d:BulkData", NS)
    assert bulk.get("uri").endswith(f"{inst}/bulkdata/7FE00010")


def test_unknown_resources_are_404(web, auth, ct):
    assert get(web, "/studies/1.2.3", auth).status_code == 404
    assert get(web, "/studies/1.2.3/metadata", auth).status_code == 404
    inst = (f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
            f"{ct.SOPInstanceUID}")
    assert get(web, f"{inst}/frames/2", auth).status_code == 404  # one frame only
    assert get(web, f"{inst}/frames/0", auth).status_code == 400
    assert get(web, f"{inst}/frames/a,b", auth).status_code == 400
    assert get(web, f"{inst}/bulkdata/00100010", auth).status_code == 404


def test_a_path_that_names_no_resource_gets_a_dicomweb_error(web, auth, ct):
    """PS3.18 8.6: an error response's body describes the error; the site's HTML 404 page
    is no answer for a DICOMweb client (a STOW to a study path that is not a UID, say)."""
    for method, path in (("POST", "/studies/not-a-uid"), ("GET", "/studies/x/series"),
                         ("GET", "/nothing-here"), ("DELETE", "/workitems/1.2/x")):
        answer = requests.request(method, f"{web}/dicomweb{path}", headers=auth, timeout=10,
                                  data=b"" if method == "POST" else None)
        assert answer.status_code == 404, (method, path)
        assert answer.headers["Content-Type"] == "application/json"
        assert "no DICOMweb resource at /dicomweb" + path in answer.json()["error"]


def test_wado_uri(web, auth, ct):
    query = (f"requestType=WADO&studyUID={ct.StudyInstanceUID}&seriesUID="
             f"{ct.SeriesInstanceUID}&objectUID={ct.SOPInstanceUID}")
    jpeg = requests.get(f"{web}/wado?{query}", headers=auth, timeout=10)
    assert jpeg.headers["Content-Type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
    dicom = requests.get(f"{web}/dicomweb/wado?{query}&contentType=application%2Fdicom",
                         headers=auth, timeout=10)
    assert dicom.headers["Content-Type"] == "application/dicom"
    assert dcmread(io.BytesIO(dicom.content)).SOPInstanceUID == ct.SOPInstanceUID
    png = requests.get(f"{web}/wado?{query}&contentType=image/png&windowCenter=40&"
                       "windowWidth=400&rows=32", headers=auth, timeout=10)
    assert png.headers["Content-Type"] == "image/png" and png.content[:4] == b"\x89PNG"
    rendered = get(web, f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/"
                   f"instances/{ct.SOPInstanceUID}/rendered?window=40,400,linear-exact", auth)
    assert rendered.status_code == 200
    assert get(web, f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
               f"{ct.SOPInstanceUID}/rendered?window=40", auth).status_code == 400
    assert requests.get(f"{web}/wado?{query}&contentType=text/html", headers=auth,
                        timeout=10).status_code == 406
    assert requests.get(f"{web}/wado?studyUID=1", headers=auth, timeout=10).status_code == 400


def test_stow_partial_failure_is_409_with_reasons_and_keeps_nothing_bad(web, auth, storage_dir):
    good = sample("MR_small.dcm").read_bytes()
    truncated = sample("CT_small.dcm").read_bytes()[:3000]
    response = stow(web, auth, [("application/dicom", good), ("application/dicom", truncated),
                                ("application/dicom", b"not dicom at all")])
    assert response.status_code == 409
    body = response.json()
    assert len(body["00081199"]["Value"]) == 1
    failed = body["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0xC000, 0xC000]
    assert failed[0]["00081155"]["Value"] == [dcmread(sample("CT_small.dcm")).SOPInstanceUID]
    assert "truncated" in response.headers["Warning"]
    assert Instance.objects.count() == 1
    assert len(left_behind(storage_dir)) == 1  # no orphan file
    # the audit trail: the study stored (with its count), and the refusals counted
    from core.models import AuditEvent

    rows = {r.action: r.detail for r in AuditEvent.objects.filter(category="store")}
    study = dcmread(sample("MR_small.dcm")).StudyInstanceUID
    assert rows == {"instances stored": f"1 instance(s) of study {study} over STOW-RS",
                    "instances refused": "2 instance(s) of a STOW-RS request refused"}


def test_stow_into_a_study_refuses_other_studies(web, auth):
    mr = dcmread(sample("MR_small.dcm"))
    ok = stow(web, auth, [("application/dicom", sample("MR_small.dcm").read_bytes())],
              path=f"/studies/{mr.StudyInstanceUID}")
    assert ok.status_code == 200
    wrong = stow(web, auth, [("application/dicom", sample("CT_small.dcm").read_bytes())],
                 path=f"/studies/{mr.StudyInstanceUID}")
    assert wrong.status_code == 409
    assert wrong.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


def test_stow_media_type_errors(web, auth):
    data = sample("CT_small.dcm").read_bytes()
    plain = requests.post(f"{web}/dicomweb/studies", data=data, timeout=10,
                          headers={**auth, "Content-Type": "application/dicom"})
    assert plain.status_code == 415
    assert stow(web, auth, [("text/plain", b"x")], part_type="text/plain").status_code == 415
    no_boundary = requests.post(f"{web}/dicomweb/studies", data=data, timeout=10, headers={
        **auth, "Content-Type": 'multipart/related; type="application/dicom"'})
    assert no_boundary.status_code == 400
    assert stow(web, auth, [("application/dicom", data)], Accept="text/html").status_code == 406
    cut = requests.post(f"{web}/dicomweb/studies", data=b"--abc\r\n\r\nxyz", timeout=10,
                        headers={**auth, "Content-Type": "multipart/related; boundary=abc"})
    assert cut.status_code == 400 and "incomplete" in cut.json()["error"]


def test_stow_metadata_and_bulk_data(web, auth):
    ct = dcmread(sample("CT_small.dcm"))
    pixels = ct.PixelData
    del ct.PixelData
    metadata = ct.to_json_dict()
    metadata["7FE00010"] = {"vr": "OW", "BulkDataURI": "pixels-1"}
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream(boundary, [
        (multipart.part_header(boundary, "application/dicom+json"),
         [json.dumps([metadata]).encode()]),
        (multipart.part_header(boundary, "application/octet-stream", location="pixels-1"),
         [pixels]),
    ]))
    response = requests.post(
        f"{web}/dicomweb/studies", data=body, timeout=10, headers={
            **auth, "Content-Type": multipart.content_type(boundary, "application/dicom+json")})
    assert response.status_code == 200, response.content
    stored = Instance.objects.get(sop_instance_uid=ct.SOPInstanceUID)
    back = dataset(stored.file_key)
    assert back.PixelData == pixels and back.PatientName == ct.PatientName
    missing = dict(metadata, **{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
                                "7FE00010": {"vr": "OW", "BulkDataURI": "nowhere"}})
    body = b"".join(multipart.stream(boundary, [
        (multipart.part_header(boundary, "application/dicom+json"),
         [json.dumps([missing]).encode()])]))
    refused = requests.post(
        f"{web}/dicomweb/studies", data=body, timeout=10, headers={
            **auth, "Content-Type": multipart.content_type(boundary, "application/dicom+json")})
    assert refused.status_code == 409
    assert "nowhere" in refused.headers["Warning"]


def test_qido_warns_when_the_server_maximum_cuts_results(web, auth, settings):
    for name in ("CT_small.dcm", "MR_small.dcm", "reportsi.dcm"):
        store_instance(data=sample(name).read_bytes(), received_from="test")
    settings.QIDO_MAX_RESULTS = 2
    response = get(web, "/studies", auth)
    assert len(response.json()) == 2 and "Additional results" in response.headers["Warning"]
    assert len(get(web, "/studies?offset=2", auth).json()) == 1


def test_cors_for_a_configured_viewer_origin(web, auth, ct, settings):
    settings.CORS_ALLOWED_ORIGINS = ["http://viewer.example"]
    preflight = requests.options(f"{web}/dicomweb/studies", timeout=10, headers={
        "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
    other = get(web, "/studies", auth, Origin="http://elsewhere.example")
    assert "Access-Control-Allow-Origin" not in other.headers


def test_openapi_schema_lists_the_dicomweb_paths(web, client_session):
    schema = client_session.get(f"{web}/api/schema/?format=json", timeout=10).json()
    assert "/dicomweb/studies" in schema["paths"]
    assert "post" in schema["paths"]["/dicomweb/studies"]


def _ct_copies(count: int, size: int) -> list[bytes]:
    """``count`` CT instances of about ``size`` bytes each, with new UIDs."""
    from pydicom.uid import generate_uid

    ds = dcmread(sample("CT_small.dcm"))
    ds.PixelData = bytes(size)
    ds.Rows, ds.Columns = 1000, size // 2000  # 16-bit pixels
    out = []
    for _ in range(count):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer)
        out.append(buffer.getvalue())
    return out


def test_stow_stores_a_large_body_part_by_part(web, auth):
    """40 MB of instances: the server holds about one part at a time, not the body."""
    import tracemalloc

    datasets = _ct_copies(21, 2_000_000)
    assert stow(web, auth, [("application/dicom", datasets.pop())]).status_code == 200  # warm
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream(boundary, (
        (multipart.part_header(boundary, "application/dicom"), [data]) for data in datasets)))
    tracemalloc.start()
    try:
        response = requests.post(
            f"{web}/dicomweb/studies", data=body, timeout=60,
            headers={**auth, "Content-Type": multipart.content_type(boundary, DICOM_TYPE),
                     "Accept": "application/dicom+json"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.content
    assert len(response.json()["00081199"]["Value"]) == 20
    assert Instance.objects.count() == 21
    assert peak < 16_000_000, peak  # a few parts' worth; reading the body whole took > 80 MB


def test_stow_limits_the_body_and_keeps_what_came_before_a_cut(web, auth, settings):
    first, second = _ct_copies(2, 20_000)
    settings.UPLOAD_MAX_BYTES = 30_000
    large = stow(web, auth, [("application/dicom", first), ("application/dicom", second)])
    assert large.status_code == 413 and "PORTAL_UPLOAD_MAX_BYTES" in large.json()["error"]
    assert Instance.objects.count() == 0
    settings.UPLOAD_MAX_BYTES = 1 << 30
    boundary = "cut"
    body = b"".join(multipart.stream(boundary, [
        (multipart.part_header(boundary, "application/dicom"), [first])]))
    body = body[:-len(multipart.closing(boundary))] + b"--cut\r\n\r\n" + second[:5000]
    cut = requests.post(f"{web}/dicomweb/studies", data=body, timeout=10, headers={
        **auth, "Content-Type": multipart.content_type(boundary, DICOM_TYPE)})
    assert cut.status_code == 409
    assert len(cut.json()["00081199"]["Value"]) == 1  # the complete part is stored
    (failed,) = cut.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    assert "incomplete" in cut.headers["Warning"]
    assert Instance.objects.count() == 1


def test_qido_multiple_values_match_any_of_them(web, auth):
    """PS3.4 C.2.2.2.8 multiple value matching; PS3.18 8.3.4.1 lists values with commas."""
    for name in ("CT_small.dcm", "MR_small.dcm", "reportsi.dcm"):
        store_instance(data=sample(name).read_bytes(), received_from="test")

    def modalities(query: str) -> set[str]:
        found = get(web, f"/series?{query}", auth).json()
        return {s["00080060"]["Value"][0] for s in found}

    assert modalities("Modality=CT,MR") == {"CT", "MR"}
    assert modalities("Modality=CT%5CSR") == {"CT", "SR"}  # a backslash, as in DICOM
    assert modalities("Modality=CT") == {"CT"}
    studies = get(web, "/studies?ModalitiesInStudy=MR,SR", auth).json()
    assert len(studies) == 2


def test_a_long_text_is_bulk_data_in_the_metadata(web, auth):
    """A 20 MB private UT element: a BulkDataURI in /metadata (PS3.18 10.4.1.1.2), its bytes
    from the bulk data resource, and not in the index."""
    ds = dcmread(sample("CT_small.dcm"))
    block = ds.private_block(0x0011, "PORTAL TEST", create=True)
    text = ("report line " * 2_000_000)[:20_000_000]
    block.add_new(0x01, "UT", text)
    ds.ImageComments = "short text stays inline"
    store_instance(data=encoded(ds), received_from="test")
    stored = Instance.objects.get()
    tag = f"{block.get_tag(0x01):08X}"
    assert stored.metadata[tag] == {"vr": "UT", "BulkDataURI": f"bulkdata/{tag}"}
    assert len(json.dumps(stored.metadata)) < 100_000
    base = (f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}")
    meta = get(web, base + "/metadata", auth).json()[0]
    assert meta[tag]["BulkDataURI"].endswith(f"{base}/bulkdata/{tag}")
    assert meta["00204000"]["Value"] == ["short text stays inline"]
    bulk = get(web, f"{base}/bulkdata/{tag}", auth, Accept="application/octet-stream")
    assert bulk.status_code == 200 and bulk.content == text.encode()


def test_includefield_takes_a_private_tag(web, auth):
    """PS3.18 8.3.4.3: includefield names any attribute by keyword or tag; a private tag
    comes back as it was stored (its VR and value from the instance's header)."""
    ds = dcmread(sample("CT_small.dcm"))
    block = ds.private_block(0x0077, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "kept as stored")
    store_instance(data=encoded(ds), received_from="test")
    answer = get(web, "/instances?includefield=00771001", auth)
    assert answer.status_code == 200, answer.text
    (found,) = answer.json()
    assert found["00771001"] == {"vr": "LO", "Value": ["kept as stored"]}
    studies = get(web, "/studies?includefield=00771001", auth)
    assert studies.status_code == 200


def test_every_link_follows_the_base_url_setting(web, auth, ct, settings):
    """PORTAL_DICOMWEB_BASE_URL (a proxy that serves the archive under another host and
    path) is where every link in an answer points: QIDO RetrieveURL, metadata BulkDataURI,
    frame and bulk data Content-Location."""
    settings.DICOMWEB_BASE_URL = "https://pacs.example.org:8443/archive/dicomweb"
    base = settings.DICOMWEB_BASE_URL
    inst = (f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
            f"{ct.SOPInstanceUID}")
    (study,) = get(web, "/studies", auth).json()
    assert study["00081190"]["Value"] == [f"{base}/studies/{ct.StudyInstanceUID}"]
    (metadata,) = get(web, f"{inst}/metadata", auth).json()
    assert metadata["7FE00010"]["BulkDataURI"].startswith(f"{base}{inst}/")
    frame = get(web, f"{inst}/frames/1", auth)
    (part,) = multipart.parse(frame.content, multipart.boundary_of(frame.headers["Content-Type"]))
    assert part.location == f"{base}{inst}/frames/1"
    bulk = get(web, f"{inst}/bulkdata/7FE00010", auth, Accept="application/octet-stream")
    assert bulk.headers["Content-Location"] == f"{base}{inst}/bulkdata/7FE00010"


def _with_item_bulk_data() -> Dataset:
    """A CT with two items of a private sequence, each holding its own bulk value, and an
    icon image (pixel data inside an item)."""
    ds = dcmread(sample("CT_small.dcm"))
    ds.SOPInstanceUID += ".77"
    ds.private_block(0x6003, "BULK TEST", create=True)
    items = []
    for size, fill in ((12_288, 1), (92_160, 2)):
        item = Dataset()
        item.private_block(0x6003, "BULK TEST", create=True).add_new(0x11, "OB",
                                                                      bytes([fill]) * size)
        items.append(item)
    ds.add_new(0x60031010, "SQ", items)
    icon = Dataset()
    icon.Rows = icon.Columns = 64
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit, icon.PixelRepresentation = 7, 0
    icon.PixelData = bytes(range(64)) * 64
    ds.IconImageSequence = [icon]
    return ds


def test_bulk_data_in_sequence_items_has_one_uri_per_value(web, auth):
    """PS3.18 F.2.6: every bulk value has a BulkDataURI that retrieves it, inside sequence
    items too (a private sequence of two items, an icon image's pixel data)."""
    ds = _with_item_bulk_data()
    store_instance(data=encoded(ds), received_from="test")
    inst = (f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}")
    (metadata,) = get(web, f"{inst}/metadata", auth).json()
    items = metadata["60031010"]["Value"]
    uris = [item["60031011"]["BulkDataURI"] for item in items]
    assert len(set(uris)) == 2
    for uri, item in zip(uris, ds[0x60031010].value, strict=True):
        answer = requests.get(uri, headers={**auth, "Accept": "application/octet-stream"},
                              timeout=10)
        assert answer.status_code == 200
        assert answer.content == item[0x60031011].value
    icon_uri = metadata["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    icon = requests.get(icon_uri, headers={**auth, "Accept": "application/octet-stream"},
                        timeout=10)
    assert icon.content == ds.IconImageSequence[0].PixelData
    assert get(web, f"{inst}/bulkdata/60031010/2/60031011", auth).status_code == 404
    assert get(web, f"{inst}/bulkdata/60031010/x/60031011", auth).status_code == 400


PDF = (b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
       b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
       b"% " + b"padding " * 200 + b"\ntrailer <</Root 1 0 R>>\n%%EOF\n")


def _encapsulated_pdf() -> Dataset:
    ds = dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID + ".104"
    ds.SeriesInstanceUID += ".104"
    ds.Modality = "DOC"
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = PDF
    return ds


def test_encapsulated_documents_come_in_their_own_media_type(web, auth):
    """PS3.18 8.7.3/8.7.4: an encapsulated PDF's bulk data in application/pdf, and its
    rendered form the PDF itself; a type it is not is refused."""
    ds = _encapsulated_pdf()
    store_instance(data=encoded(ds), received_from="test")
    inst = (f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}")
    (metadata,) = get(web, f"{inst}/metadata", auth).json()
    uri = metadata["00420011"]["BulkDataURI"]
    in_multipart = requests.get(uri, headers={**auth, "Accept":
                                              'multipart/related; type="application/pdf"'},
                                timeout=10)
    assert in_multipart.status_code == 200
    (part,) = multipart.parse(in_multipart.content,
                              multipart.boundary_of(in_multipart.headers["Content-Type"]))
    # the attribute's value: the document padded to even length (PS3.5 7.1.1)
    assert part.content_type == "application/pdf" and part.body == PDF + b"\x00"
    single = requests.get(uri, headers={**auth, "Accept": "application/pdf"}, timeout=10)
    assert single.headers["Content-Type"] == "application/pdf"
    assert single.content == PDF + b"\x00"
    octets = requests.get(uri, headers={**auth, "Accept": "application/octet-stream"},
                          timeout=10)
    assert octets.headers["Content-Type"] == "application/octet-stream"
    refused = requests.get(uri, headers={**auth, "Accept": 'multipart/related; type="text/xml"'},
                           timeout=10)
    assert refused.status_code == 406
    rendered = get(web, f"{inst}/rendered", auth, Accept="application/pdf")
    assert rendered.status_code == 200
    assert rendered.headers["Content-Type"] == "application/pdf"
    assert rendered.content == PDF  # the document itself, without the padding byte
    assert get(web, f"{inst}/rendered", auth, Accept="image/jpeg").status_code == 406


def test_study_and_series_rendered_give_every_instance(web, auth, ct):
    """PS3.18 10.4.1.1.3: /rendered of a study or series is every instance rendered, in a
    multipart/related body; an image type alone still gets the one representative image."""
    second = dcmread(sample("CT_small.dcm"))
    second.SOPInstanceUID += ".2"
    store_instance(data=encoded(second), received_from="test")
    pdf = _encapsulated_pdf()
    store_instance(data=encoded(pdf), received_from="test")
    study = f"/studies/{ct.StudyInstanceUID}"
    answer = get(web, f"{study}/rendered", auth,
                 Accept='multipart/related; type="image/png"')
    assert answer.status_code == 200
    parts = multipart.parse(answer.content, multipart.boundary_of(answer.headers["Content-Type"]))
    assert [p.content_type for p in parts] == ["image/png", "image/png"]
    assert all(p.body.startswith(b"\x89PNG") for p in parts)
    assert {p.location.split("/instances/")[1].split("/")[0] for p in parts} == {
        ct.SOPInstanceUID, second.SOPInstanceUID}
    everything = get(web, f"{study}/rendered", auth, Accept="multipart/related; type=*/*")
    types = [p.content_type for p in multipart.parse(
        everything.content, multipart.boundary_of(everything.headers["Content-Type"]))]
    assert sorted(types) == ["application/pdf", "image/jpeg", "image/jpeg"]
    series = get(web, f"{study}/series/{ct.SeriesInstanceUID}/rendered", auth)  # no Accept
    assert len(multipart.parse(series.content,
                               multipart.boundary_of(series.headers["Content-Type"]))) == 2
    one = get(web, f"{study}/rendered", auth, Accept="image/jpeg")
    assert one.headers["Content-Type"] == "image/jpeg" and one.content[:2] == b"\xff\xd8"


def test_qido_matches_attributes_without_an_index_column(web, auth, ct):
    """PS3.18 8.3.4 / PS3.4 C.2.2.2: a matching key the index has no column for is matched
    against the stored header, not ignored; one that cannot be matched (binary) is ignored
    with a Warning 299 naming it, so the client knows the answer may be wider."""
    store_instance(data=sample("rtplan.dcm").read_bytes(), received_from="test")
    store_instance(data=sample("MR_small.dcm").read_bytes(), received_from="test")
    assert len(get(web, "/studies", auth).json()) == 3
    (study,) = get(web, "/studies?Rows=128", auth).json()
    assert study["0020000D"]["Value"] == [ct.StudyInstanceUID]
    assert "Warning" not in get(web, "/studies?Rows=128", auth).headers
    (series,) = get(web, "/series?InstitutionName=TOSHIBA", auth).json()
    assert series["00080060"]["Value"] == ["MR"]
    assert get(web, "/instances?SliceThickness=0.8", auth).json()[0]["00080060"]["Value"] == \
        ["MR"]
    assert get(web, "/studies?InstitutionName=NOWHERE", auth).json() == []
    binary = get(web, "/instances?RedPaletteColorLookupTableData=AAE", auth)
    assert binary.status_code == 200 and len(binary.json()) == 3
    assert "not supported for matching: RedPaletteColorLookupTableData" in \
        binary.headers["Warning"]
    # paging counts matches, after the header keys are applied (the plan lies between)
    both = "/instances?InstitutionName=TOSHIBA%5CJFK*"
    (second,) = get(web, f"{both}&limit=1&offset=1", auth).json()
    assert second["00080060"]["Value"] == ["MR"]
    assert get(web, f"{both}&offset=2", auth).json() == []


def _post_xml(web, auth, parts):
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream(boundary, [
        (multipart.part_header(boundary, media, location=location), [data])
        for media, data, location in parts]))
    return requests.post(f"{web}/dicomweb/studies", data=body, timeout=10, headers={
        **auth, "Content-Type": multipart.content_type(boundary, "application/dicom+xml"),
        "Accept": "application/dicom+json"})


def test_stow_xml_metadata_and_bulk_data(web, auth):
    """PS3.18 10.5.1.2 with PS3.19 A.1 metadata, as dcm4chee's curl samples send it: an XML
    part per instance (written here by hand, from PS3.19's schema) and a bulk data part its
    BulkData uri names."""
    ct = dcmread(sample("CT_small.dcm"))
    def attribute(tag: str, vr: str, *values: object) -> str:
        numbered = "".join(f'<Value number="{n}">{v}</Value>'
                           for n, v in enumerate(values, start=1))
        return f'<DicomAttribute tag="{tag}" vr="{vr}">{numbered}</DicomAttribute>'

    xml = "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">',
        attribute("00080005", "CS", "ISO_IR 192"),
        attribute("00080016", "UI", ct.SOPClassUID),
        attribute("00080018", "UI", ct.SOPInstanceUID),
        attribute("00080060", "CS", "CT"),
        '<DicomAttribute tag="00081032" vr="SQ" keyword="ProcedureCodeSequence">',
        '<Item number="1">', attribute("00080100", "SH", "CTHEAD"),
        attribute("00080102", "SH", "99LOCAL"), "</Item></DicomAttribute>",
        '<DicomAttribute tag="00100010" vr="PN" keyword="PatientName"><PersonName number="1">',
        "<Alphabetic><FamilyName>Yamada</FamilyName><GivenName>Tarou</GivenName></Alphabetic>",
        "<Ideographic><FamilyName>山田</FamilyName><GivenName>太郎</GivenName></Ideographic>",
        "</PersonName></DicomAttribute>",
        attribute("00100020", "LO", "XML1"),
        attribute("0020000D", "UI", ct.StudyInstanceUID),
        attribute("0020000E", "UI", ct.SeriesInstanceUID),
        attribute("00280002", "US", 1), attribute("00280004", "CS", "MONOCHROME2"),
        attribute("00280010", "US", ct.Rows), attribute("00280011", "US", ct.Columns),
        attribute("00280030", "DS", "0.661468", "0.661468"),
        attribute("00280100", "US", 16), attribute("00280101", "US", 16),
        attribute("00280102", "US", 15), attribute("00280103", "US", 1),
        '<DicomAttribute tag="7FE00010" vr="OW">'
        '<BulkData uri="http://example.org/pixels/1"/></DicomAttribute>',
        "</NativeDicomModel>"])
    response = _post_xml(web, auth, [("application/dicom+xml", xml.encode(), ""),
                                     ("application/octet-stream", ct.PixelData,
                                      "http://example.org/pixels/1")])
    assert response.status_code == 200, response.content
    stored = dataset(Instance.objects.get(sop_instance_uid=ct.SOPInstanceUID).file_key)
    assert stored.PixelData == ct.PixelData and stored.Rows == ct.Rows
    assert stored.PatientName.ideographic == "山田^太郎"
    assert stored.ProcedureCodeSequence[0].CodeValue == "CTHEAD"
    assert list(stored.PixelSpacing) == [0.661468, 0.661468]


def test_stow_xml_round_trips_our_own_metadata_and_refuses_hostile_xml(web, auth):
    """The XML /metadata answers (PS3.19) stored again give the same header; XML with entity
    declarations (a billion-laughs bomb, an external entity) is refused, 400, not expanded."""
    from pacs.dicomweb.xml import dataset_xml

    mr = dcmread(sample("MR_small.dcm"))
    document = mr.to_json_dict(bulk_data_threshold=1024,
                               bulk_data_element_handler=lambda e: "bulk:pixels")
    answer = _post_xml(web, auth, [("application/dicom+xml", dataset_xml(document), ""),
                                   ("application/octet-stream", mr.PixelData, "bulk:pixels")])
    assert answer.status_code == 200, answer.content
    back = dataset(Instance.objects.get(sop_instance_uid=mr.SOPInstanceUID).file_key)
    for element in mr:
        if element.tag != 0x7FE00010:
            assert back[element.tag].value == element.value, element.keyword
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            b'<NativeDicomModel>&lol2;</NativeDicomModel>')
    external = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                b'<NativeDicomModel>&e;</NativeDicomModel>')
    for hostile in (bomb, external, b"<NativeDicomModel><unclosed>"):
        refused = _post_xml(web, auth, [("application/dicom+xml", hostile, "")])
        assert refused.status_code == 400 and "XML" in refused.json()["error"]
