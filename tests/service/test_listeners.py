"""The Celery worker bootstep (scale mode) runs the real listeners, as `serve` does."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from portal.celery import ListenersStep


def test_bootstep_serves_dimse_and_hl7_and_freezes_the_startup_heap(
        settings, storage_dir, known_aes):
    settings.DIMSE_HOST = settings.HL7_HOST = "127.0.0.1"
    settings.DIMSE_PORT = settings.HL7_PORT = 0
    step = ListenersStep(SimpleNamespace(), listeners="dimse, hl7")
    gc.unfreeze()
    try:
        step.start(None)
        assert gc.get_freeze_count() > 0  # settle_heap, as in serve and dimse_scp
        dimse, hl7 = step.running
        assert (dimse.name, hl7.name) == ("dimse", "hl7")
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", dimse.address[1], ae_title="PORTAL")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        step.stop(None)
        gc.unfreeze()
    assert step.running == []
