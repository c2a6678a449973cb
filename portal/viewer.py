"""The OHIF viewer, served by the portal itself: same origin, same login, so its DICOMweb
requests carry the user's session and ask the same permission check as every other face.

The app is the prebuilt `@ohif/app` package from the npm registry, as scripts/setup.sh
installs it (scripts/viewer.sh), unchanged on disk. It is built to live at the site's root;
here it lives under /viewer/, so what names the root is rewritten as it is served: the
absolute paths of its index.html, the public path each webpack runtime loads chunks from,
the fonts of its style sheets and its service worker's precache list. Its
configuration (app-config.js) is written here: the portal's own DICOMweb endpoints.
"""

from __future__ import annotations

import json
import mimetypes
from functools import lru_cache
from pathlib import Path

from csp.decorators import csp_replace
from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import render

from core.roles import permission_required

PREFIX = "/viewer/"
# The viewer compiles WebAssembly codecs, runs web workers from blob: URLs and sets inline
# styles; its own page only (the portal's pages keep the strict policy).
VIEWER_CSP = {
    "script-src": ["'self'", "'unsafe-inline'", "'unsafe-eval'", "'wasm-unsafe-eval'",
                   "blob:"],
    "worker-src": ["'self'", "blob:"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "font-src": ["'self'", "data:"],
    "connect-src": ["'self'", "data:", "blob:"],
    "img-src": ["'self'", "data:", "blob:"],
}
CONFIG = """window.config = %s;
"""


def installed() -> bool:
    return (Path(settings.VIEWER_DIR) / "index.html").is_file()


def study_url(study_uid: str) -> str:
    return f"{PREFIX}viewer?StudyInstanceUIDs={study_uid}"


# What the app's files say of where they live, as the build wrote it for the site root
_ROOTED = {
    ".html": [('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{PREFIX}"'),
              ('src="/', f'src="{PREFIX}'), ('href="/', f'href="{PREFIX}')],
    # each webpack runtime (the app's and its workers') loads chunks from its public path
    ".js": [('__webpack_require__.p = "/";', f'__webpack_require__.p = "{PREFIX}";'),
            ('{"url":"/', f'{{"url":"{PREFIX}')],  # the service worker's precache list
    ".css": [("url(/", f"url({PREFIX}")],  # fonts
}


@lru_cache(maxsize=256)
def _patched(path: str, mtime: float) -> bytes | None:
    """A file of the app made to live under /viewer/, or None when nothing in it needs to
    change (then it is sent from the disk as it is)."""
    rules = _ROOTED.get(Path(path).suffix)
    if not rules:
        return None
    text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    changed = text
    for old, new in rules:
        changed = changed.replace(old, new)
    return None if changed == text else changed.encode("utf-8", errors="surrogateescape")


def _config(request) -> bytes:
    base = request.build_absolute_uri("/dicomweb")
    config = {
        "routerBasename": PREFIX.rstrip("/"), "showStudyList": True, "extensions": [],
        "modes": [], "maxNumberOfWebWorkers": 2,
        "investigationalUseDialog": {"option": "never"},
        "showWarningMessageForCrossOrigin": False, "showCPUFallbackMessage": False,
        # no guided tour over the first image each user opens
        "customizationService": {"ohif.tours": {"$set": []}},
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "portal",
            "configuration": {
                "friendlyName": "portal", "name": "portal", "wadoUriRoot": f"{base}/wado",
                "qidoRoot": base, "wadoRoot": base, "qidoSupportsIncludeField": True,
                "imageRendering": "wadors", "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True, "supportsFuzzyMatching": True,
                "supportsWildcard": True, "staticWado": False,
                "singlepart": "bulkdata,video", "bulkDataURI": {"enabled": True},
                "omitQuotationForMultipartRequest": True,
            },
        }],
        "defaultDataSourceName": "portal",
    }
    return (CONFIG % json.dumps(config, indent=1)).encode()


@permission_required("archive.view")
@csp_replace(VIEWER_CSP)
def viewer(request, path: str = ""):
    if not installed():
        return render(request, "portal/viewer_missing.html",
                      {"folder": settings.VIEWER_DIR}, status=404)
    if path == "app-config.js":
        response = HttpResponse(_config(request), content_type="application/javascript")
        response["Cache-Control"] = "no-store"
        return response
    root = Path(settings.VIEWER_DIR).resolve()
    file = (root / path).resolve() if path else root / "index.html"
    if not file.is_relative_to(root):
        raise Http404("not in the viewer")
    if not file.is_file():
        if "." in Path(path).name:  # a missing asset, not one of the app's own routes
            raise Http404("no such file in the viewer")
        file = root / "index.html"  # the app's routes (/viewer/viewer?...) are its page
    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if file.suffix == ".wasm":
        kind = "application/wasm"
    patched = _patched(str(file), file.stat().st_mtime)
    if patched is not None:
        response = HttpResponse(patched, content_type=f"{kind}; charset=utf-8")
    else:
        response = FileResponse(open(file, "rb"), content_type=kind)
    # the bundles' names carry their content hash; the page and its config do not
    hashed = ".bundle." in file.name or file.suffix == ".wasm"
    response["Cache-Control"] = ("private, max-age=86400" if hashed else "no-cache")
    response["X-Frame-Options"] = "SAMEORIGIN"
    return response
