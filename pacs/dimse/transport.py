"""Receive-path tuning for pynetdicom (measured in bench/ingest.py).

pynetdicom reads PDUs with socket.recv(4096) in a loop and extends a bytearray: a 512 KiB CT
costs ~130 Python-level recv calls. Reading straight into a preallocated buffer with
recv_into() and the full remaining length returns the same bytes with a few calls.
"""

from __future__ import annotations

from pynetdicom import transport

_original_recv = transport.AssociationSocket.recv


def _recv_into_buffer(self, nr_bytes: int) -> bytearray:
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    nr_read = 0
    sock = self.socket
    while nr_read < nr_bytes:
        received = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
        if not received:  # connection closed: return what we have, as pynetdicom does
            del view
            return buffer[:nr_read]
        nr_read += received
    return buffer


def install() -> None:
    transport.AssociationSocket.recv = _recv_into_buffer
