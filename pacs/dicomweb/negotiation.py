"""Accept and Content-Type parsing for DICOMweb (PS3.18 8.7): media ranges with parameters
(``type``, ``transfer-syntax``, ``boundary``) and quality values, and the ``accept`` query
parameter that overrides the header (PS3.18 8.3.3.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import NotAcceptable


@dataclass(frozen=True)
class MediaType:
    type: str  # e.g. "multipart/related", lower-case
    params: dict[str, str] = field(default_factory=dict)  # names lower-case, values unquoted
    q: float = 1.0

    def param(self, name: str, default: str = "") -> str:
        return self.params.get(name, default)

    def matches(self, offered: str) -> bool:
        """Does this (possibly wildcard) range accept the concrete type ``offered``?"""
        if self.type in ("*/*", "*"):
            return True
        main, _, sub = self.type.partition("/")
        o_main, _, o_sub = offered.partition("/")
        return main == o_main and (sub == "*" or sub == o_sub)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_media_type(text: str) -> MediaType:
    pieces = _split(text, ";")
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.strip().partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if not name:
            continue
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        else:
            params[name] = value
    return MediaType(pieces[0].strip().lower(), params, q)


def parse_accept(header: str) -> list[MediaType]:
    """Media ranges of an Accept header, best first (stable for equal quality); an empty
    header accepts anything."""
    ranges = [parse_media_type(item) for item in _split(header or "", ",") if item.strip()]
    ranges = [r for r in ranges if r.q > 0]
    if not header or not header.strip():
        return [MediaType("*/*")]
    return sorted(ranges, key=lambda r: -r.q)


def accept_of(request) -> list[MediaType]:
    """The acceptable media types of a request: the ``accept`` query parameter(s) if given
    (PS3.18 8.3.3.1), else the Accept header."""
    values = request.GET.getlist("accept")
    if values:
        return parse_accept(",".join(values))
    return parse_accept(request.META.get("HTTP_ACCEPT", ""))


def choose(accepted: list[MediaType], offered: list[str]) -> tuple[MediaType, str]:
    """The first accepted range that matches one of the ``offered`` concrete types (in the
    server's order of preference for wildcards); 406 when none does."""
    for media in accepted:
        for candidate in offered:
            if media.matches(candidate):
                return media, candidate
    raise NotAcceptable(
        f"none of the acceptable media types can be produced; this resource offers "
        f"{', '.join(offered)}")
