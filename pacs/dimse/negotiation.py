"""Presentation context negotiation that honours the requestor's transfer syntax order.

pynetdicom's negotiate_as_acceptor accepts, for each proposed context, the first transfer
syntax in the *acceptor's* list. A modality that proposes [RLE, Explicit VR LE] would then be
told to send uncompressed, and we would not store the object as it came. PS3.8 9.3.2.2 leaves
the choice to the acceptor; we choose the requestor's first supported syntax, as DCMTK's
storescp does with its "accept all" policy.
"""

from __future__ import annotations

import copy

from pynetdicom.presentation import negotiate_as_acceptor as _pynetdicom_negotiate


def negotiate_preferring_requestor(rq_contexts, ac_contexts, roles=None):
    supported = {cx.abstract_syntax: cx for cx in ac_contexts}
    results, role_items = [], {}
    for rq in rq_contexts:
        ac = supported.get(rq.abstract_syntax)
        acceptor = [_reordered(ac, rq.transfer_syntax)] if ac else ac_contexts
        accepted, items = _pynetdicom_negotiate([rq], acceptor, roles)
        results.extend(accepted)
        role_items.update((item.sop_class_uid, item) for item in items or [])
    results.sort(key=lambda cx: cx.context_id)
    return results, list(role_items.values())


def _reordered(ac, proposed):
    """A copy of the acceptor context listing the requestor's syntaxes first, in its order."""
    preferred = [ts for ts in proposed if ts in ac.transfer_syntax]
    if not preferred:
        return ac
    clone = copy.copy(ac)
    clone._transfer_syntax = preferred + [ts for ts in ac.transfer_syntax if ts not in preferred]
    return clone
