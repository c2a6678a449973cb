from __future__ import annotations

import os
import threading
import uuid

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from pacs.models import ApplicationEntity


@pytest.fixture
def storage_dir(settings, tmp_path):
    """Where this test's files go: local files under the folder this returns, or, when
    PORTAL_TEST_S3_ENDPOINT names an object store (scripts/objectstore.sh), a bucket of the
    test's own there (the folder then holds only spooled and temporary copies)."""
    settings.STORAGE_DIR = tmp_path / "dicom"
    settings.STORAGE_FSYNC = False
    endpoint = os.environ.get("PORTAL_TEST_S3_ENDPOINT", "")
    if endpoint:
        settings.STORAGE_URL = f"s3://test-{uuid.uuid4().hex[:20]}/archive"
        settings.S3_ENDPOINT_URL = endpoint
        settings.S3_ACCESS_KEY_ID = os.environ.get("PORTAL_TEST_S3_ACCESS_KEY_ID", "portal")
        settings.S3_SECRET_ACCESS_KEY = os.environ.get("PORTAL_TEST_S3_SECRET_ACCESS_KEY",
                                                       "portal-test-secret")
    return settings.STORAGE_DIR


@pytest.fixture
def dimse_listener(transactional_db, storage_dir):
    """The real DIMSE SCP on a free loopback port, in this process."""
    from pacs.dimse.scp import DimseListener

    listener = DimseListener(host="127.0.0.1", port=0, ae_title="PORTAL")
    listener.start()
    yield listener
    listener.stop()


@pytest.fixture
def known_aes(transactional_db):
    """The calling AE titles our clients use, allowed to store."""
    return [
        ApplicationEntity.objects.create(ae_title=t, host="127.0.0.1", port=104, may_store=True)
        for t in ("STORESCU", "ECHOSCU", "DCMSEND", "PYNETDICOM", "BENCH")
    ]


@pytest.fixture
def web(transactional_db, storage_dir):
    """The portal's WSGI app on waitress (as `serve` runs it), on a free loopback port."""
    from django.conf import settings
    from django.db import connections

    from portal.webserver import create_web_server
    from portal.wsgi import application

    # the server's threads close their database connections after each request, so that
    # nothing holds the test database open at teardown (PostgreSQL refuses to drop it then)
    db_settings = connections.settings["default"]
    max_age = db_settings["CONN_MAX_AGE"]
    db_settings["CONN_MAX_AGE"] = 0
    server = create_web_server(application, host="127.0.0.1", port=0, threads=4,
                               **settings.HTTP_LIMITS)
    def run() -> None:
        try:
            server.run()
        except OSError:  # its sockets were closed under it at teardown (below)
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    db_settings["CONN_MAX_AGE"] = max_age


@pytest.fixture
def token(transactional_db) -> str:
    """The API token of a user who stores, schedules and performs (technologist and
    scheduler): what the DICOMweb and UPS-RS tests do."""
    from rest_framework.authtoken.models import Token

    from tests.users import user_with

    user = user_with("clinician", "technologist", "scheduler", password="not-used-here-1")
    return Token.objects.create(user=user).key


@pytest.fixture
def auth(token) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


@pytest.fixture
def dicomweb(web, auth) -> DICOMwebClient:
    """dicomweb-client, the outside library, pointed at our base URL."""
    return DICOMwebClient(url=f"{web}/dicomweb", headers=auth)


@pytest.fixture
def client_session(web, token) -> requests.Session:
    """A browser-like session logged in through the login page."""
    session = requests.Session()
    session.get(f"{web}/login/", timeout=10)
    response = session.post(f"{web}/login/", timeout=10, data={
        "username": "clinician", "password": "not-used-here-1",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    assert response.url.rstrip("/") == web, "login failed"
    return session


# The sending applications (MSH-3/MSH-4) of the HL7 messages the tests send: the shared
# samples' and the tests' own. Senders must be registered to be applied (hl7gw.inbound).
HL7_TEST_SENDERS = [("MESA_OF", "XYZ_RADIOLOGY"), ("RIS_IDX_2", "MIR_ANC"), ("ADT", "Admitting"),
                    ("", "ABCHS"), ("A", "B"), ("RIS", "H")]


@pytest.fixture
def hl7_senders(transactional_db):
    """The test messages' senders, registered from loopback with every right."""
    from hl7gw.models import Sender

    return [Sender.objects.create(sending_application=app, sending_facility=facility,
                                  addresses="127.0.0.1", may_order=True,
                                  may_update_patients=True, may_merge_patients=True)
            for app, facility in HL7_TEST_SENDERS]
