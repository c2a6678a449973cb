"""Who may associate and what they may do, from the AE table (cached briefly per process)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from pacs.models import ApplicationEntity
from portal.reloaded import Reloaded

CACHE_SECONDS = 2.0


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


def _load_table() -> dict[str, Permissions]:
    close_old_connections()
    return {
        ae.ae_title.strip(): Permissions(
            True, ae.may_store, ae.may_query, ae.may_retrieve,
            ae.may_query_worklist, ae.may_send_mpps, ae.worklist_own_station_only,
            ae.worklist_charset,
        )
        for ae in ApplicationEntity.objects.all()
    }


class AePolicy:
    """Answers 'may this calling AE title do X?' without a query per request."""

    def __init__(self) -> None:
        self._table = Reloaded(_load_table, CACHE_SECONDS)

    def invalidate(self) -> None:
        self._table.forget()

    def permissions(self, calling_aet: str) -> Permissions:
        perms = self._table.get().get(calling_aet.strip())
        if perms:
            return perms
        open_ = settings.DIMSE_ALLOW_UNKNOWN_AE
        return Permissions(False, may_store=open_, may_query=open_, may_retrieve=open_,
                           may_query_worklist=open_, may_send_mpps=open_)
