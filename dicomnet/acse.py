"""A-ASSOCIATE-RQ decoding, presentation context negotiation and A-ASSOCIATE-AC encoding
(PS3.8 9.3.2-9.3.3, Annex D; PS3.7 D.3.3).

Why not pynetdicom's PDU classes and ``negotiate_as_acceptor``: they build and validate a
pydicom UID for every name in the request several times over. DCMTK's storescu proposes 128
contexts; answering it took 23-27 ms of CPU in a warm process and 50-60 ms in a new one, on the
CI machine, and every SCP process pays it for each new kind of request (the answers are cached
by request bytes in dicomnet.engine). Here it is plain struct work. The outcome is pynetdicom's,
except the transfer syntax choice, which honours the requestor's order;
``tests/unit/test_acse.py`` compares both on generated requests.

Negotiation rules:
- an abstract syntax we do not support: result 3 (abstract-syntax-not-supported);
- none of the proposed transfer syntaxes supported: result 4;
- otherwise accepted (0) with the *requestor's* first supported transfer syntax. PS3.8
  9.3.2.2 leaves the choice to the acceptor; preferring the requestor's order means a
  modality proposing [RLE, Explicit VR LE] stores RLE as it came, as DCMTK's storescp does.
- SCP/SCU role selection (PS3.7 D.3.3.4) follows pynetdicom's table
  (``pynetdicom.presentation.SCP_SCU_ROLES``); a context in which we may play neither role is
  refused (1, user rejection).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pynetdicom.presentation import SCP_SCU_ROLES

from dicomnet.wire import A_ASSOCIATE_AC, ProtocolError

# Item types (PS3.8 9.3.2, Annex D)
APPLICATION_CONTEXT_ITEM = 0x10
PRESENTATION_CONTEXT_RQ_ITEM = 0x20
PRESENTATION_CONTEXT_AC_ITEM = 0x21
ABSTRACT_SYNTAX_ITEM = 0x30
TRANSFER_SYNTAX_ITEM = 0x40
USER_INFORMATION_ITEM = 0x50
MAXIMUM_LENGTH_ITEM = 0x51
IMPLEMENTATION_CLASS_UID_ITEM = 0x52
ROLE_SELECTION_ITEM = 0x54
IMPLEMENTATION_VERSION_NAME_ITEM = 0x55
SOP_CLASS_EXTENDED_ITEM = 0x56

ACCEPTED, USER_REJECTION = 0x00, 0x01
ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x03, 0x04

Roles = tuple[bool | None, bool | None]  # (SCU role, SCP role); None: not stated


@dataclass
class ProposedContext:
    id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


@dataclass
class AssociateRequest:
    called_ae_title: bytes  # the 16 bytes as sent: the reply repeats them
    calling_ae_title: bytes
    application_context: str
    contexts: list[ProposedContext] = field(default_factory=list)
    max_pdu: int = 0
    roles: dict[str, Roles] = field(default_factory=dict)
    extended: dict[str, bytes] = field(default_factory=dict)  # SOP class -> application info

    @property
    def calling_aet(self) -> str:
        return _text(self.calling_ae_title)

    @property
    def called_aet(self) -> str:
        return _text(self.called_ae_title)


@dataclass(frozen=True)
class Support:
    """What we accept for one abstract syntax: transfer syntaxes and the roles we may play
    (None, None: role selection not negotiated, we are the SCP)."""

    transfer_syntaxes: frozenset[str]
    roles: Roles = (None, None)


@dataclass(frozen=True)
class ContextResult:
    id: int
    result: int
    abstract_syntax: str
    transfer_syntax: str
    as_scu: bool = False


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip(" \x00")


def _uid(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip(" \x00")


def _items(body: bytes, start: int, end: int):
    """(type, value start, value end) of the items in body[start:end]."""
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise ProtocolError("truncated item header")
        item_type = body[pos]
        length = struct.unpack_from(">H", body, pos + 2)[0]
        value = pos + 4
        if value + length > end:
            raise ProtocolError(f"item 0x{item_type:02X} runs past its container")
        yield item_type, value, value + length
        pos = value + length


def parse_request(body: bytes) -> AssociateRequest:
    """Decode the body of an A-ASSOCIATE-RQ PDU (everything after its 6-byte header)."""
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ shorter than its fixed fields")
    request = AssociateRequest(called_ae_title=body[4:20], calling_ae_title=body[20:36],
                               application_context="")
    for item_type, start, end in _items(body, 68, len(body)):
        if item_type == APPLICATION_CONTEXT_ITEM:
            request.application_context = _uid(body[start:end])
        elif item_type == PRESENTATION_CONTEXT_RQ_ITEM:
            request.contexts.append(_proposed_context(body, start, end))
        elif item_type == USER_INFORMATION_ITEM:
            _user_information(body, start, end, request)
        # other item types are ignored (PS3.8 9.3.1: unrecognized items)
    return request


def _proposed_context(body: bytes, start: int, end: int) -> ProposedContext:
    if end - start < 4:
        raise ProtocolError("presentation context item too short")
    context = ProposedContext(id=body[start], abstract_syntax="", transfer_syntaxes=[])
    for sub_type, sub_start, sub_end in _items(body, start + 4, end):
        if sub_type == ABSTRACT_SYNTAX_ITEM:
            context.abstract_syntax = _uid(body[sub_start:sub_end])
        elif sub_type == TRANSFER_SYNTAX_ITEM:
            context.transfer_syntaxes.append(_uid(body[sub_start:sub_end]))
    if not context.abstract_syntax or not context.transfer_syntaxes:
        raise ProtocolError(f"presentation context {context.id} lacks its syntaxes")
    return context


def _user_information(body: bytes, start: int, end: int, request: AssociateRequest) -> None:
    for sub_type, sub_start, sub_end in _items(body, start, end):
        if sub_type == MAXIMUM_LENGTH_ITEM and sub_end - sub_start == 4:
            request.max_pdu = struct.unpack_from(">I", body, sub_start)[0]
        elif sub_type in (ROLE_SELECTION_ITEM, SOP_CLASS_EXTENDED_ITEM):
            if sub_end - sub_start < 2:
                raise ProtocolError(f"user information item 0x{sub_type:02X} too short")
            uid_end = sub_start + 2 + struct.unpack_from(">H", body, sub_start)[0]
            if uid_end > sub_end:
                raise ProtocolError(f"user information item 0x{sub_type:02X}: bad UID length")
            uid = _uid(body[sub_start + 2:uid_end])
            if sub_type == ROLE_SELECTION_ITEM:
                if sub_end - uid_end != 2:
                    raise ProtocolError("role selection item without its two roles")
                request.roles[uid] = (bool(body[uid_end]), bool(body[uid_end + 1]))
            else:
                request.extended[uid] = body[uid_end:sub_end]


def negotiate(request: AssociateRequest, supported: dict[str, Support]
              ) -> tuple[list[ContextResult], dict[str, Roles]]:
    """Each proposed context's result (by context ID) and the role selection replies."""
    results: list[ContextResult] = []
    role_replies: dict[str, Roles] = {}
    for proposed in request.contexts:
        uid = proposed.abstract_syntax
        support = supported.get(uid)
        if support is None:
            results.append(ContextResult(proposed.id, ABSTRACT_SYNTAX_NOT_SUPPORTED, uid,
                                         proposed.transfer_syntaxes[0]))
            continue
        syntax = next((ts for ts in proposed.transfer_syntaxes
                       if ts in support.transfer_syntaxes), None)
        if syntax is None:
            results.append(ContextResult(proposed.id, TRANSFER_SYNTAXES_NOT_SUPPORTED, uid,
                                         proposed.transfer_syntaxes[0]))
            continue
        asked = request.roles.get(uid)
        if None in support.roles:  # no role selection on our side: we are the SCP
            as_scu, as_scp = False, True
        else:
            as_scu, as_scp = SCP_SCU_ROLES[asked or (None, None)][support.roles][2:4]
        if not (as_scu or as_scp):
            results.append(ContextResult(proposed.id, USER_REJECTION, uid, syntax))
            continue
        results.append(ContextResult(proposed.id, ACCEPTED, uid, syntax, as_scu))
        if asked is not None and None not in support.roles:
            # never answer 1 for a role proposed as 0 (PS3.7 D.3.3.4)
            role_replies[uid] = (support.roles[0] if asked[0] is not False else False,
                                 support.roles[1] if asked[1] is not False else False)
    results.sort(key=lambda result: result.id)
    return results, role_replies


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _uid_bytes(uid: str) -> bytes:
    return uid.encode("ascii")


def encode_accept(request: AssociateRequest, application_context: str,
                  results: list[ContextResult], max_pdu: int, implementation_uid: str,
                  implementation_version: str, roles: dict[str, Roles],
                  extended: dict[str, bytes]) -> bytes:
    """The A-ASSOCIATE-AC PDU. The AE title fields repeat the request's (PS3.8 9.3.3.2)."""
    parts = [struct.pack(">HH", 1, 0), request.called_ae_title, request.calling_ae_title,
             bytes(32), _item(APPLICATION_CONTEXT_ITEM, _uid_bytes(application_context))]
    for result in results:
        parts.append(_item(PRESENTATION_CONTEXT_AC_ITEM,
                           struct.pack(">BBBB", result.id, 0, result.result, 0)
                           + _item(TRANSFER_SYNTAX_ITEM, _uid_bytes(result.transfer_syntax))))
    user = [_item(MAXIMUM_LENGTH_ITEM, struct.pack(">I", max_pdu)),
            _item(IMPLEMENTATION_CLASS_UID_ITEM, _uid_bytes(implementation_uid))]
    for uid, (scu, scp) in sorted(roles.items()):
        raw = _uid_bytes(uid)
        user.append(_item(ROLE_SELECTION_ITEM, struct.pack(">H", len(raw)) + raw
                          + bytes([int(bool(scu)), int(bool(scp))])))
    user.append(_item(IMPLEMENTATION_VERSION_NAME_ITEM, implementation_version.encode("ascii")))
    for uid, info in extended.items():
        raw = _uid_bytes(uid)
        user.append(_item(SOP_CLASS_EXTENDED_ITEM, struct.pack(">H", len(raw)) + raw + info))
    parts.append(_item(USER_INFORMATION_ITEM, b"".join(user)))
    body = b"".join(parts)
    return struct.pack(">BBI", A_ASSOCIATE_AC, 0, len(body)) + body
