"""Peers the portal talks to, run by the tests: an HL7 receiver (python-hl7's MLLP server),
a UPS event receiver and a modality's Storage Commitment listener (pynetdicom), and DCMTK
storescp as a C-STORE destination."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from hl7.mllp import start_hl7_server

from tests.waiting import wait_for_port, wait_until


class Hl7Server:
    """python-hl7's MLLP server in a thread; answers AA and keeps what it got."""

    def __init__(self, port: int) -> None:
        self.port, self.received = port, []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _client(self, reader, writer) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                self.received.append(message)
                writer.writemessage(message.create_ack())
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = await start_hl7_server(self._client, host="127.0.0.1", port=self.port,
                                                 encoding="utf-8")
            self.ready.set()
            await self.server.serve_forever()

        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def start(self) -> Hl7Server:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        for task in asyncio.all_tasks(self.loop):
            self.loop.call_soon_threadsafe(task.cancel)
        self.thread.join(timeout=10)


def start_event_scp(port: int, delay: float = 0.0, ssl_context=None):
    """A pynetdicom UPS Event SCP on ``port`` (taking ``delay`` seconds to answer each event;
    over TLS with ``ssl_context``); returns it and the queue of what it received."""
    import queue
    import time

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import UnifiedProcedureStepEvent as EVENT

    received: queue.Queue = queue.Queue()

    def on_event(event):
        received.put((event.request.AffectedSOPInstanceUID, event.request.EventTypeID,
                      event.event_information))
        time.sleep(delay)
        return 0x0000, None

    ae = AE(ae_title="AINODE")
    ae.add_supported_context(EVENT)
    server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ssl_context,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event)])
    return server, received


def start_commitment_listener(port: int, ae_title: str = "MODALITY", ssl_context=None):
    """A modality's pynetdicom listener for Storage Commitment reports (it accepts our SCP
    role on the association we open); returns it and the queue of (calling AE title, Event
    Type ID, Event Information) it received."""
    import queue

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StorageCommitmentPushModel

    received: queue.Queue = queue.Queue()

    def on_report(event):
        received.put((event.assoc.requestor.ae_title, event.request.EventTypeID,
                      event.event_information))
        return 0x0000, None

    ae = AE(ae_title=ae_title)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ssl_context,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    return server, received


class Storescp:
    """DCMTK storescp as a destination (it accepts uncompressed syntaxes only), writing into
    ``out``; ``tls``: its DCMTK TLS options (it then requires our client certificate)."""

    def __init__(self, port: int, out: Path, tls: list[str] | None = None) -> None:
        import subprocess

        self.port, self.out = port, out
        out.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["/usr/bin/storescp", *(tls or []), "-aet", "DEST",
                                      "-od", str(out), str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_port(port, 10, alive=self.proc)

    def received(self, count: int, timeout: float = 15) -> list:
        import time

        from pydicom import dcmread
        wait_until(lambda: len(list(self.out.iterdir())) >= count, timeout=timeout,
                   what=lambda: f"{count} files ({len(list(self.out.iterdir()))} so far)")
        time.sleep(0.5)  # anything sent twice would be here by now
        return [dcmread(p) for p in sorted(self.out.iterdir())]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Orthanc:
    """Orthanc (Debian package) on loopback with its own storage: DICOM and HTTP ports,
    ``modalities`` it knows (name -> [AE title, host, port]), the DICOMweb plugin on request
    (``/dicom-web``). Up once both its servers listen; a port taken meanwhile by another
    process is retried with new ones."""

    def __init__(self, work: Path, *, modalities: dict | None = None,
                 dicomweb: bool = False, **options) -> None:
        import json
        import subprocess

        from tests.samples import free_port

        for attempt in range(3):
            self.port, self.http_port = free_port(), free_port()
            conf = work / "orthanc.json"
            conf.write_text(json.dumps({
                "Name": "test", "StorageDirectory": str(work / "orthanc"),
                "IndexDirectory": str(work / "orthanc"), "DicomAet": "ORTHANC",
                "DicomPort": self.port, "HttpPort": self.http_port,
                "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
                "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True,
                "DicomModalities": modalities or {},
                "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"] if dicomweb
                else [],
                **options,
            }))
            self.proc = subprocess.Popen(["/usr/sbin/Orthanc", str(conf)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:  # it exits if it cannot open one of its ports
                wait_for_port(self.port, 30, alive=self.proc)
                wait_for_port(self.http_port, 30, alive=self.proc)
                return
            except AssertionError:
                self.proc.kill()
                self.proc.wait(timeout=20)
                if attempt == 2:
                    raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
