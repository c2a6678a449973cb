"""Where a page's form sends the user back to."""

from __future__ import annotations

from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme


def back_to(request, field: str, default: str) -> str:
    """The address the form sent in ``field`` when it is a page of ours (the list with its
    filters, say), else ``default`` (a URL name or path): never another site's address, which
    would make the form an open redirect."""
    back = request.POST.get(field, "")
    if back and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                                require_https=request.is_secure()):
        return back
    return resolve_url(default)
