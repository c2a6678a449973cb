"""TLS for the DICOM and HL7 listeners and for our DICOM SCU side (PS3.15 B.9, the BCP 195
TLS Secure Transport Connection Profile: TLS 1.2 or newer, Python's default cipher suites,
which are those of BCP 195).

One certificate and key (PORTAL_TLS_CERT, PORTAL_TLS_KEY) serve both directions: as server on
the TLS listeners, as client certificate when we call a peer over TLS. PORTAL_TLS_CA names the
certificate authorities we trust: the peers' server certificates are always verified against
it, and with PORTAL_TLS_VERIFY_CLIENT a caller must present a certificate it signed."""

from __future__ import annotations

import ssl
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def configured() -> bool:
    return bool(settings.TLS_CERT and settings.TLS_KEY)


@lru_cache(maxsize=1)
def server_context() -> ssl.SSLContext:
    """For the TLS listeners (built once per process)."""
    if not configured():
        raise ImproperlyConfigured("a TLS listener needs PORTAL_TLS_CERT and PORTAL_TLS_KEY")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.TLS_CERT, settings.TLS_KEY)
    if settings.TLS_VERIFY_CLIENT:
        if not settings.TLS_CA:
            raise ImproperlyConfigured("PORTAL_TLS_VERIFY_CLIENT needs PORTAL_TLS_CA")
        context.load_verify_locations(settings.TLS_CA)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@lru_cache(maxsize=1)
def client_context() -> ssl.SSLContext:
    """For calling a peer over TLS: its certificate must chain to PORTAL_TLS_CA (or the
    system's authorities without it); ours is offered when configured. Peers are named by the
    AE table's host, often an address their certificate does not carry, so the chain is
    checked and the host name is not (as DCMTK does)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if settings.TLS_CA:
        context.load_verify_locations(settings.TLS_CA)
    else:
        context.load_default_certs()
    if configured():
        context.load_cert_chain(settings.TLS_CERT, settings.TLS_KEY)
    return context


def forget() -> None:
    """Build the contexts again at next use (tests change the settings)."""
    server_context.cache_clear()
    client_context.cache_clear()
