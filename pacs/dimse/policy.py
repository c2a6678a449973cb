"""Who may associate and what they may do, from the AE table (cached briefly per process).

An AE title is only a name the caller claims (PS3.8 does not authenticate it), so a caller is
admitted when its AE title is in the table *and* it calls from one of that AE's addresses:
its calling addresses, else its host (a name is looked up). A per-AE "any address" flag and
PORTAL_DIMSE_ANY_HOST open this where a site needs it; both are off by default."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections

from core.addresses import AddressList, split_list
from core.reloaded import Reloaded
from dicomnet.engine import Refusal
from pacs.models import ApplicationEntity


@dataclass(frozen=True)
class Permissions:
    known: bool
    may_store: bool
    may_query: bool
    may_retrieve: bool
    may_query_worklist: bool = False
    may_send_mpps: bool = False
    worklist_own_station_only: bool = False
    worklist_charset: str = ""
    any_host: bool = False
    addresses: AddressList = field(default_factory=lambda: AddressList(()), compare=False)


def _load_table() -> dict[str, Permissions]:
    close_old_connections()
    return {
        ae.ae_title.strip(): Permissions(
            True, ae.may_store, ae.may_query, ae.may_retrieve,
            ae.may_query_worklist, ae.may_send_mpps, ae.worklist_own_station_only,
            ae.worklist_charset, ae.any_host,
            AddressList(split_list(ae.calling_addresses) or [ae.host]),
        )
        for ae in ApplicationEntity.objects.all()
    }


class AePolicy:
    """Answers 'may this calling AE title do X?' without a query per request."""

    def __init__(self) -> None:
        self._table = Reloaded(_load_table, settings.CONFIG_CACHE_SECONDS)

    def invalidate(self) -> None:
        self._table.forget()

    def permissions(self, calling_aet: str) -> Permissions:
        perms = self._table.get().get(calling_aet.strip())
        if perms:
            return perms
        open_ = settings.DIMSE_ALLOW_UNKNOWN_AE
        return Permissions(False, may_store=open_, may_query=open_, may_retrieve=open_,
                           may_query_worklist=open_, may_send_mpps=open_)

    def refusal(self, calling_aet: str, called_aet: str, host: str,
                our_aet: str) -> Refusal | None:
        """Why an association from ``calling_aet`` at ``host`` to ``called_aet`` is refused,
        or None when it is admitted."""
        if settings.DIMSE_CHECK_CALLED_AET and called_aet.strip() != our_aet:
            return Refusal(f"called AE title {called_aet.strip()!r} is not ours", called=True)
        perms = self.permissions(calling_aet)
        if not perms.known:
            return (None if settings.DIMSE_ALLOW_UNKNOWN_AE
                    else Refusal("calling AE title not in the AE table"))
        if perms.any_host or settings.DIMSE_ANY_HOST or perms.addresses.matches(host):
            return None
        return Refusal(f"calling AE title not accepted from {host} "
                       f"(its addresses: {perms.addresses.describe()})")
