"""Is a peer's address one of a configured list? For the AE table (DIMSE callers) and the HL7
senders: each entry an IP address, a network (CIDR) or a host name, whose addresses are looked
up (and kept a minute, so a slow resolver is asked rarely, never once per association)."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterable

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RESOLVED_SECONDS = 60.0
FAILED_SECONDS = 10.0

_names: dict[str, tuple[float, frozenset[IpAddress]]] = {}
_names_lock = threading.Lock()


def split_list(text: str) -> list[str]:
    """Entries of a list typed by an admin: separated by commas, semicolons or white space."""
    return [item for item in re.split(r"[\s,;]+", text or "") if item]


def peer_address(host: str) -> IpAddress | None:
    """The peer's address as the socket gave it; IPv4-mapped IPv6 is read as IPv4."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _resolve(name: str) -> frozenset[IpAddress]:
    now = time.monotonic()
    with _names_lock:
        known = _names.get(name)
    if known is not None and known[0] > now:
        return known[1]
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        found = frozenset(a for a in (peer_address(str(info[4][0])) for info in infos) if a)
        expires = now + RESOLVED_SECONDS
    except OSError:
        found, expires = frozenset(), now + FAILED_SECONDS
    with _names_lock:
        _names[name] = (expires, found)
    return found


class AddressList:
    """The entries of one list, parsed once (when the table is loaded)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[IpNetwork] = []
        self.names: list[str] = []
        self.any = False
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            if entry == "*":
                self.any = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.names.append(entry.lower())

    def __bool__(self) -> bool:
        return self.any or bool(self.networks or self.names)

    def matches(self, host: str) -> bool:
        if self.any:
            return True
        address = peer_address(host)
        if address is None:
            return False
        if any(address in network for network in self.networks
               if network.version == address.version):
            return True
        return any(address in _resolve(name) for name in self.names)

    def describe(self) -> str:
        return ", ".join([*(str(n) for n in self.networks), *self.names]) or "nothing"


def check_entries(text: str) -> list[str]:
    """Entries that are neither an address, a network nor a plausible host name (for forms)."""
    bad = []
    for entry in split_list(text):
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", entry):
                bad.append(entry)
    return bad


def cleaned(text: str) -> str:
    """An address list as a form keeps it ("a, b, c"); ValueError naming the entries that are
    neither an address, a network nor a host name."""
    bad = check_entries(text)
    if bad:
        raise ValueError(f"Not an address, network or host name: {', '.join(bad)}")
    return ", ".join(split_list(text))
