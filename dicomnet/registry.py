"""DIMSE services that apps add to the one listener (the worklist's MWL, MPPS and UPS), so
that the archive's listener never imports them (the apps' order: hl7gw -> worklist -> pacs).
Apps register in their AppConfig.ready()."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dicomnet.engine import Association
from dicomnet.wire import Message

Service = Callable[[Association, Message], None]
# made with the listener's admission policy (the archive's AePolicy)
ServiceFactory = Callable[[Any], Service]


@dataclass(frozen=True)
class Extension:
    abstract_syntaxes: tuple[str, ...]
    # per SOP class for C-FIND (several information models share the command field)
    find: dict[str, ServiceFactory]
    # per command field for the others (N-CREATE, N-SET, ...)
    services: dict[int, ServiceFactory]
    # SOP Class Extended Negotiation we accept, per SOP class (the options we support)
    extended: dict[str, bytes] = field(default_factory=dict)


EXTENSIONS: list[Extension] = []


def register(extension: Extension) -> None:
    if extension not in EXTENSIONS:
        EXTENSIONS.append(extension)
