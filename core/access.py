"""Who read which patient data: one audit row (category ``access``) per request, whatever it
returns (a study page, a search, a download, a DICOMweb search or retrieval; C-FIND, C-MOVE
and C-GET are recorded by their DIMSE handlers with ``record``).

One row per request, not per instance: a C-MOVE of a 300-image study, or a page listing 25
studies, is one row naming what was asked for. Preview images are left out: the series page
that shows them is recorded."""

from __future__ import annotations

import re

from core import audit

# The pages and routes that return patient data (GET/HEAD): what each request is called.
READS = [
    (re.compile(r"^/(dicomweb|wado)(/|$)"), "DICOMweb"),
    (re.compile(r"^/studies/?$"), "study search"),
    (re.compile(r"^/studies/[^/]+/$"), "study page"),
    (re.compile(r"^/series/[^/]+/$"), "series page"),
    (re.compile(r"^/instances/[^/]+/file$"), "download"),
    (re.compile(r"^/(studies|series)/[^/]+/download/$"), "download"),
    (re.compile(r"^/instances/[^/]+/tags/$"), "tag viewer"),
    (re.compile(r"^/patients/?$"), "patient search"),
    (re.compile(r"^/patients/[^/]+/$"), "patient page"),
    (re.compile(r"^/worklist/(orders|workitems)/[^/]+/$"), "worklist page"),
]


def record(*, actor: str, source: str, action: str, detail: str,
           outcome: str = "success") -> None:
    audit.record(category="access", action=action[:64], outcome=outcome, actor=actor,
                 source=source, detail=detail[:2000])


def _outcome(status: int) -> str:
    if status in (401, 403):
        return "refused"
    return "success" if status < 400 else "failure"


class AccessAuditMiddleware:
    """After the view: a row for each read of patient data, with the caller (user, token's
    user, or anonymous), its address, the path with its query, and the answer's status."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method in ("GET", "HEAD"):
            action = next((name for pattern, name in READS
                           if pattern.match(request.path_info)), None)
            if action is not None:
                user = getattr(request, "user", None)
                query = request.META.get("QUERY_STRING", "")
                record(actor=user.get_username() if user is not None and user.is_authenticated
                       else "anonymous", source=request.META.get("REMOTE_ADDR", ""),
                       action=action, outcome=_outcome(response.status_code),
                       detail=f"{request.method} {request.path}{'?' + query if query else ''} "
                              f"-> {response.status_code}")
        return response
