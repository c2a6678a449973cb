"""dicomnet.acse against pynetdicom: its PDU classes encode the requests and decode our
answers, and its negotiate_as_acceptor is the oracle for results and roles (with the
requestor's transfer syntax order preferred, our one deliberate difference)."""

from __future__ import annotations

import copy
import random

import pytest
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context, negotiate_as_acceptor

from dicomnet import acse
from dicomnet.wire import ProtocolError

CT, MR, US = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.6.1"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
UNKNOWN = "1.2.3.4.5.6"
IMPLICIT, EXPLICIT, RLE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"
J2K, PRIVATE_TS = "1.2.840.10008.1.2.4.90", "1.2.3.999"


def _acceptor() -> list[PresentationContext]:
    contexts = [build_context(FIND, [IMPLICIT, EXPLICIT])]
    for uid in (CT, MR):
        context = build_context(uid, [IMPLICIT, EXPLICIT, RLE, J2K])
        context.scu_role = context.scp_role = True
        contexts.append(context)
    contexts.append(build_context(US, [EXPLICIT]))  # no role selection on our side
    return contexts


def _support(contexts: list[PresentationContext]) -> dict[str, acse.Support]:
    return {str(cx.abstract_syntax): acse.Support(frozenset(map(str, cx.transfer_syntax)),
                                                  (cx.scu_role, cx.scp_role))
            for cx in contexts}


def _request(proposals, roles=None, extended=None, max_pdu=16384, identity=False) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "MODALITY"
    primitive.called_ae_title = "PORTAL"
    contexts = []
    for number, (abstract, syntaxes) in enumerate(proposals):
        context = build_context(abstract, syntaxes)
        context.context_id = 2 * number + 1
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.3.4"
    items = [length, impl]
    for uid, (scu, scp) in (roles or {}).items():
        item = SCP_SCU_RoleSelectionNegotiation()
        item.sop_class_uid, item.scu_role, item.scp_role = uid, scu, scp
        items.append(item)
    for uid, info in (extended or {}).items():
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid, item.service_class_application_information = uid, info
        items.append(item)
    if identity:
        user = UserIdentityNegotiation()
        user.user_identity_type, user.primary_field = 1, b"someone"
        items.append(user)
    primitive.user_information = items
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()[6:]


def _oracle(body: bytes, acceptor: list[PresentationContext]):
    """pynetdicom's negotiation, each proposal's syntaxes moved to the front of ours."""
    rq = A_ASSOCIATE_RQ()
    rq.decode(bytes([1, 0]) + len(body).to_bytes(4, "big") + body)
    primitive = rq.to_primitive()
    roles = {item.sop_class_uid: (item.scu_role, item.scp_role)
             for item in primitive.user_information
             if isinstance(item, SCP_SCU_RoleSelectionNegotiation)}
    ours = {cx.abstract_syntax: cx for cx in acceptor}
    results, replies = [], {}
    for proposed in primitive.presentation_context_definition_list:
        ac = ours.get(proposed.abstract_syntax)
        if ac is not None:
            ac = copy.copy(ac)
            first = [ts for ts in proposed.transfer_syntax if ts in ac.transfer_syntax]
            ac._transfer_syntax = first + [ts for ts in ac.transfer_syntax if ts not in first]
        done, items = negotiate_as_acceptor([proposed], [ac] if ac else acceptor, roles)
        results += done
        replies.update((str(i.sop_class_uid), (i.scu_role, i.scp_role)) for i in items)
    return sorted(results, key=lambda cx: cx.context_id), replies


# pynetdicom refuses to encode a proposal of neither role: see test_proposing_neither_role...
ROLE_CHOICES = [None, (True, True), (True, False), (False, True)]


def _cases():
    rng = random.Random(12)
    syntaxes = [IMPLICIT, EXPLICIT, RLE, J2K, PRIVATE_TS]
    for n in range(60):
        proposals = [(rng.choice([CT, MR, US, FIND, UNKNOWN]),
                      rng.sample(syntaxes, rng.randint(1, 4))) for _ in range(rng.randint(1, 6))]
        roles = {uid: choice for uid in (CT, MR, US, FIND)
                 if (choice := rng.choice(ROLE_CHOICES)) is not None}
        yield pytest.param(proposals, roles, id=f"case{n}")
    for role in ROLE_CHOICES[1:]:  # every role proposal on a storage class, both kinds of ours
        yield pytest.param([(CT, [EXPLICIT]), (US, [EXPLICIT])], {CT: role, US: role},
                           id=f"roles-{role}")


@pytest.mark.parametrize(("proposals", "roles"), list(_cases()))
def test_results_and_roles_are_pynetdicoms(proposals, roles):
    body = _request(proposals, roles)
    acceptor = _acceptor()
    results, replies = acse.negotiate(acse.parse_request(body), _support(acceptor))
    expected, expected_replies = _oracle(body, acceptor)
    assert [(r.id, r.result) for r in results] == [(cx.context_id, cx.result) for cx in expected]
    for result, cx in zip(results, expected, strict=True):
        if result.result == acse.ACCEPTED:
            assert result.transfer_syntax == cx.transfer_syntax[0]
            assert result.as_scu == bool(cx.as_scu)
    assert replies == expected_replies


def test_the_requestors_first_supported_syntax_is_chosen():
    request = acse.parse_request(_request([(CT, [PRIVATE_TS, RLE, EXPLICIT]),
                                           (CT, [EXPLICIT, RLE]), (CT, [PRIVATE_TS])]))
    results, _ = acse.negotiate(request, _support(_acceptor()))
    assert [(r.result, r.transfer_syntax) for r in results] == [
        (0, RLE), (0, EXPLICIT), (acse.TRANSFER_SYNTAXES_NOT_SUPPORTED, PRIVATE_TS)]


def test_request_fields_are_read():
    body = _request([(CT, [EXPLICIT, IMPLICIT])], roles={CT: (False, True)},
                    extended={FIND: b"\x01\x00\x01"}, max_pdu=32768, identity=True)
    request = acse.parse_request(body)
    assert (request.calling_aet, request.called_aet) == ("MODALITY", "PORTAL")
    assert request.application_context == "1.2.840.10008.3.1.1.1"
    assert [(c.id, c.abstract_syntax, c.transfer_syntaxes) for c in request.contexts] == [
        (1, CT, [EXPLICIT, IMPLICIT])]
    assert request.max_pdu == 32768
    assert request.roles == {CT: (False, True)}
    assert request.extended == {FIND: b"\x01\x00\x01"}


def test_pynetdicom_decodes_the_answer():
    body = _request([(CT, [RLE, EXPLICIT]), (UNKNOWN, [EXPLICIT]), (FIND, [J2K]),
                     (FIND, [EXPLICIT])], roles={CT: (False, True)},
                    extended={FIND: b"\x01\x01"})
    request = acse.parse_request(body)
    results, roles = acse.negotiate(request, _support(_acceptor()))
    pdu = acse.encode_accept(request, "1.2.840.10008.3.1.1.1", results, 65536, "1.2.3.4.5",
                             "PORTAL_304", roles, {FIND: b"\x01\x00"})
    ac = A_ASSOCIATE_AC()
    ac.decode(pdu)
    primitive = ac.to_primitive()
    assert primitive.result == 0
    assert str(primitive.called_ae_title) == "PORTAL"
    assert str(primitive.calling_ae_title) == "MODALITY"
    assert [(cx.context_id, cx.result, str(cx.transfer_syntax[0]))
            for cx in primitive.presentation_context_definition_results_list] == [
        (1, 0, RLE), (3, acse.ABSTRACT_SYNTAX_NOT_SUPPORTED, EXPLICIT),
        (5, acse.TRANSFER_SYNTAXES_NOT_SUPPORTED, J2K), (7, 0, EXPLICIT)]
    by_kind = {type(item).__name__: item for item in primitive.user_information}
    assert by_kind["MaximumLengthNotification"].maximum_length_received == 65536
    assert by_kind["ImplementationClassUIDNotification"].implementation_class_uid == "1.2.3.4.5"
    assert by_kind["ImplementationVersionNameNotification"].implementation_version_name \
        == "PORTAL_304"
    role = by_kind["SCP_SCU_RoleSelectionNegotiation"]
    assert (role.sop_class_uid, role.scu_role, role.scp_role) == (CT, False, True)
    extended = by_kind["SOPClassExtendedNegotiation"]
    assert (extended.sop_class_uid, extended.service_class_application_information) == (
        FIND, b"\x01\x00")


def test_proposing_neither_role_refuses_the_context():
    body = _request([(CT, [EXPLICIT]), (US, [EXPLICIT])], roles={CT: (False, True),
                                                                 US: (False, True)})
    ct, us = CT.encode(), US.encode()
    body = body.replace(ct + b"\x00\x01", ct + b"\x00\x00").replace(us + b"\x00\x01",
                                                                   us + b"\x00\x00")
    request = acse.parse_request(body)
    assert request.roles == {CT: (False, False), US: (False, False)}
    results, replies = acse.negotiate(request, _support(_acceptor()))
    # CT: we negotiate roles and may play neither; US: we do not, and stay the SCP
    assert [r.result for r in results] == [acse.USER_REJECTION, acse.ACCEPTED]
    assert replies == {}


@pytest.mark.parametrize("cut", [10, 67, 70, 75, 90, 200])
def test_a_truncated_request_is_a_protocol_error(cut):
    body = _request([(CT, [EXPLICIT]), (MR, [IMPLICIT])], roles={CT: (True, True)})
    with pytest.raises(ProtocolError):  # each cut is inside the fixed fields or an item
        acse.parse_request(body[:cut])


def test_random_bytes_never_raise_anything_but_protocol_errors():
    rng = random.Random(3)
    body = _request([(CT, [EXPLICIT]), (MR, [IMPLICIT])], roles={CT: (True, True)},
                    extended={FIND: b"\x01"})
    for _ in range(2000):
        garbled = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            garbled[rng.randrange(len(garbled))] = rng.randrange(256)
        try:
            acse.parse_request(bytes(garbled))
        except ProtocolError:
            pass
