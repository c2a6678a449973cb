from __future__ import annotations

import pytest

from pacs.models import ApplicationEntity


@pytest.fixture
def storage_dir(settings, tmp_path):
    settings.STORAGE_DIR = tmp_path / "dicom"
    settings.STORAGE_FSYNC = False
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
