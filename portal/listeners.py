"""Registry of network listeners. Each has start(), stop() and address."""

from __future__ import annotations

from typing import Protocol


class Listener(Protocol):
    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...

    @property
    def address(self) -> tuple[str, int]: ...


def build_listener(name: str, **kwargs) -> Listener:
    if name == "dimse":
        from pacs.dimse.scp import DimseListener

        return DimseListener(**kwargs)
    if name == "hl7":
        from hl7gw.mllp import MllpListener

        return MllpListener(**kwargs)
    raise ValueError(f"unknown listener {name!r} (known: dimse, hl7)")
