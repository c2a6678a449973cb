"""A real viewer on our DICOMweb endpoints: OHIF's prebuilt app (npm package @ohif/app,
unchanged but for its app-config.js) served from its own origin, in headless Chromium, against
the real `serve` process. Images arrive over DIMSE (DCMTK storescu) first."""

from __future__ import annotations

import os
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.browser.test_portal_browser import CHROMIUM_ARGS
from tests.portal_process import start_portal
from tests.samples import sample
from tests.screens import shot

pytestmark = [pytest.mark.browser, pytest.mark.interop]

OHIF_VERSION = "3.13.2"
APP_CONFIG = """window.config = {
  routerBasename: '/', showStudyList: true, extensions: [], modes: [],
  maxNumberOfWebWorkers: 1, investigationalUseDialog: {option: 'never'},
  showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false,
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'portal',
    configuration: {
      friendlyName: 'portal', name: 'portal',
      wadoUriRoot: '%(base)s/wado', qidoRoot: '%(base)s', wadoRoot: '%(base)s',
      qidoSupportsIncludeField: true, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: true, supportsWildcard: true,
      staticWado: false, singlepart: 'bulkdata,video', bulkDataURI: {enabled: true},
      omitQuotationForMultipartRequest: true,
    },
  }],
  defaultDataSourceName: 'portal',
};
"""


def ohif_dist() -> Path:
    """The prebuilt viewer from the npm registry: the one scripts/setup.sh installed for the
    portal to serve, or else fetched once into a cache directory."""
    from django.conf import settings

    assert settings.VIEWER_VERSION == OHIF_VERSION
    installed = Path(settings.VIEWER_DIR)
    if (installed / "index.html").exists():
        return installed
    cache = Path(os.environ.get("PORTAL_TEST_CACHE", "/tmp/portal-test-cache"))
    folder = cache / f"ohif-{OHIF_VERSION}"
    dist = folder / "package" / "dist"
    if not (dist / "index.html").exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "--silent", f"@ohif/app@{OHIF_VERSION}"], cwd=folder,
                       check=True, timeout=900, capture_output=True)
        subprocess.run(["tar", "xzf", f"ohif-app-{OHIF_VERSION}.tgz"], cwd=folder, check=True)
    return dist


class _ViewerHandler(SimpleHTTPRequestHandler):
    """The static app, our app-config.js, and index.html for the app's own routes."""

    config = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            self.wfile.write(self.config)
            return
        if not (Path(self.directory) / path.lstrip("/")).is_file():
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def viewer_server():
    dist = ohif_dist()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_ViewerHandler, directory=str(dist)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def portal(tmp_path_factory, viewer_server):
    origin = f"http://127.0.0.1:{viewer_server.server_address[1]}"
    p = start_portal(tmp_path_factory.mktemp("viewer") / "var",
                     PORTAL_CORS_ORIGINS=origin, PORTAL_DICOMWEB_ANONYMOUS_READ="1",
                     PORTAL_DIMSE_ALLOW_UNKNOWN_AE="1")
    _ViewerHandler.config = (APP_CONFIG % {"base": f"{p.url}/dicomweb"}).encode()
    files = [str(sample(name)) for name in ("CT_small.dcm", "emri_small.dcm")]
    sent = subprocess.run(["/usr/bin/storescu", "-aet", "MODALITY", "-aec", "PORTAL",
                           "127.0.0.1", str(p.dimse_port), *files],
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0 and "E:" not in sent.stderr, sent.stderr
    yield p
    p.stop()


def test_ohif_lists_and_displays_a_study_from_our_endpoints(portal, viewer_server):
    from playwright.sync_api import sync_playwright

    viewer = f"http://127.0.0.1:{viewer_server.server_address[1]}"
    listed = dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    study = dcmread(sample("emri_small.dcm"), stop_before_pixels=True)
    answered: list[tuple[int, str]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("response", lambda r: answered.append((r.status, r.url))
                    if r.url.startswith(portal.url) else None)
            # the study list comes from QIDO-RS
            page.goto(f"{viewer}/")
            try:
                # the list shows the name (family name first) and the description
                page.wait_for_selector("text=CompressedSamples", timeout=60_000)
                page.wait_for_selector(f"text={listed.StudyDescription}", timeout=10_000)
            finally:
                page.screenshot(path=str(portal.data_dir / "ohif-list.png"))
            # the viewer loads metadata and pixel data over WADO-RS and draws them
            page.goto(f"{viewer}/viewer?StudyInstanceUIDs={study.StudyInstanceUID}")
            page.wait_for_selector("canvas", timeout=60_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('canvas')].some(c => c.width > 0)",
                timeout=60_000)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(portal.data_dir / "ohif.png"))
        finally:
            browser.close()
    urls = [url for status, url in answered if status == 200]
    assert any("/dicomweb/studies?" in u or u.endswith("/dicomweb/studies") for u in urls)
    assert any(u.endswith("/metadata") for u in urls), answered
    assert any("/frames/" in u or "/bulkdata/" in u for u in urls), answered
    assert not [a for a in answered if a[0] >= 400], answered


def _ct_series(count: int) -> list[bytes]:
    """A CT series of ``count`` 256x256 slices, each a disc of another size (so that each
    slice looks different), with the geometry a viewer stacks slices by."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from tests.samples import encoded

    study, series, frame = (generate_uid() for _ in range(3))
    y, x = np.mgrid[0:256, 0:256]
    out = []
    for n in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.Modality = "VIEW-1", "VIEWER^CT", "CT"
        ds.StudyDate, ds.StudyDescription, ds.SeriesNumber, ds.InstanceNumber = (
            "20261207", "CT VIEWER TEST", 1, n + 1)
        ds.ImagePositionPatient = [0, 0, n * 5.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 5
        ds.Rows = ds.Columns = 256
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        radius = 20 + n * 10
        disc = ((x - 128) ** 2 + (y - 128) ** 2 < radius ** 2) * 1064
        ds.PixelData = (disc + 24).astype(np.uint16).tobytes()
        out.append(encoded(ds))
    return out


def test_the_portal_serves_the_viewer_same_origin_same_login(tmp_path_factory):
    """OHIF from /viewer/ of the portal itself: opened from a study page after logging in,
    its DICOMweb requests ride the login session; the image is drawn, not blank, and the
    mouse wheel moves to another slice. No console error."""
    from io import BytesIO

    from PIL import Image, ImageStat
    from playwright.sync_api import sync_playwright

    dist = ohif_dist()
    p = start_portal(tmp_path_factory.mktemp("viewer-same") / "var",
                     PORTAL_VIEWER_DIR=str(dist), DJANGO_SUPERUSER_USERNAME="chief",
                     DJANGO_SUPERUSER_PASSWORD="Xr4y-s3cret!")
    try:
        slices = _ct_series(12)
        folder = tmp_path_factory.mktemp("ct")
        for n, data in enumerate(slices):
            (folder / f"ct{n:02d}.dcm").write_bytes(data)
        p.shell("import glob\nfrom pacs.services.ingest import store_instance\n"
                f"for f in sorted(glob.glob('{folder}/*.dcm')):\n"
                "    store_instance(data=open(f, 'rb').read(), received_from='test')\n")
        study = dcmread(BytesIO(slices[0]), stop_before_pixels=True).StudyInstanceUID
        errors: list[str] = []
        answered: list[tuple[int, str]] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda m: errors.append(m.text)
                        if m.type == "error" else None)
                page.on("response", lambda r: answered.append((r.status, r.url)))
                page.goto(f"{p.url}/viewer/")
                assert "/login/" in page.url  # the viewer is behind the login too
                page.fill("input[name=username]", "chief")
                page.fill("input[name=password]", "Xr4y-s3cret!")
                page.click("button[type=submit]")
                page.goto(f"{p.url}/studies/{study}/")
                page.click("#open-viewer")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('canvas')].some(c => c.width > 0)",
                    timeout=90_000)
                viewport = page.locator(".cornerstone-viewport-element, "
                                        "[data-viewport-uid]").first
                viewport.wait_for(timeout=30_000)
                page.wait_for_timeout(3000)

                def grab() -> Image.Image:
                    return Image.open(BytesIO(viewport.screenshot())).convert("L")

                before = grab()
                box = viewport.bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                for _ in range(6):
                    page.mouse.wheel(0, 120)
                    page.wait_for_timeout(300)
                page.wait_for_timeout(1500)
                after = grab()
                shot(page, "viewer", p.data_dir, full_page=False)
            finally:
                browser.close()
        # drawn: the disc is bright on a dark background, so the image is not one grey
        assert ImageStat.Stat(before).stddev[0] > 10, "the viewport is blank"
        # scrolled: another slice, another disc
        diff = ImageStat.Stat(Image.frombytes("L", before.size, bytes(
            abs(a - b) for a, b in zip(before.tobytes(), after.tobytes(), strict=True))))
        assert diff.mean[0] > 1, "the mouse wheel did not change the image"
        ours = [(s, u) for s, u in answered if u.startswith(p.url)]
        assert any("/dicomweb/studies" in u and s == 200 for s, u in ours), ours
        assert not [a for a in ours if a[0] >= 400], ours
        assert errors == []
    finally:
        p.stop()
