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
    """The prebuilt viewer from the npm registry, fetched once into a cache directory."""
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
