"""C-STORE of stored instances, for every sender (C-MOVE, send jobs, forwarding): the file is
handed to the association by name, sent as stored without decoding, or decoded when the peer
took only an uncompressed syntax (dicomnet.scu.StoreSession.send)."""

from __future__ import annotations

from pathlib import Path

from dicomnet.scu import PeerUnavailable, StoreSession
from pacs.storage import Storage, get_storage


def send_stored(session: StoreSession, file_key: str, sop_class: str, syntax: str,
                storage: Storage | None = None) -> int:
    """The peer's status for one stored instance; STATUS_NO_CONTEXT with the reason in
    ``session.last_error`` when it could not be sent (its file unreadable, say). An object
    store's file is fetched into a temporary copy first."""
    storage = storage or get_storage()
    try:
        with storage.local_copy(file_key) as path:
            return session.send(path, sop_class, syntax)
    except PeerUnavailable:
        raise
    except Exception as exc:  # the object could not be fetched: this instance only
        return session.not_sent(Path(file_key), f"{type(exc).__name__}: {exc}")
