"""DIMSE SCU helpers (we are the requestor)."""

from __future__ import annotations

import socket

from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

# pynetdicom's "standard" log handlers run on every PDU and log identifiers (PHI): off.
_config.LOG_HANDLER_LEVEL = "none"


def set_nodelay(assoc: Association) -> None:
    """TCP_NODELAY on a requestor association's socket (pynetdicom leaves Nagle on)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def echo(*, host: str, port: int, called_aet: str, calling_aet: str,
         timeout: float = 10) -> tuple[bool, str]:
    """C-ECHO; returns (success, human-readable detail)."""
    try:  # a plain connect first tells "nobody listens" apart from a DICOM-level refusal
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return False, f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        if assoc.is_rejected:
            return False, "association rejected by the peer (check the AE titles)"
        if assoc.is_aborted:
            return False, "association aborted by the peer"
        return False, f"no association with {host}:{port} (timeout)"
    try:
        set_nodelay(assoc)
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and getattr(status, "Status", None) == 0x0000:
        return True, "C-ECHO succeeded (status 0x0000)"
    if status and "Status" in status:
        return False, f"C-ECHO answered with status 0x{status.Status:04X}"
    return False, "no C-ECHO response (timeout or aborted)"
