"""The UPS event channel (PS3.18 11.11): a WebSocket per subscriber AE title at
``/dicomweb/subscribers/{aetitle}``; each message is one event as DICOM JSON.

Only the AE's subscriber (its bound account, else an admin) takes events from its outbox; an
admin watching another account's AE gets a copy of each new event and takes nothing away
(``ups_events.channel_mode``); anybody else is refused at the handshake (403).

A subscriber may hold two channels at once (say, it reconnected before the old connection
was closed). They take turns at its outbox, so each event goes out once, on one of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from worklist import ups_events

POLL_SECONDS = 0.5
TURN_SECONDS = 60  # a scale-mode turn is freed after this long if its process died

_turns: dict[str, asyncio.Lock] = {}  # AE title -> its channels' turn in this process


class UpsEventConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.ae_title = self.scope["url_route"]["kwargs"]["aetitle"]
        mode = await database_sync_to_async(ups_events.channel_mode)(
            self.scope.get("user"), self.ae_title)
        if mode is None:
            await self.close(code=4403)  # before accept: the handshake is refused (403)
            return
        self.watching = mode == ups_events.WATCHER
        self.cursor = (await database_sync_to_async(ups_events.last_event_id)()
                       if self.watching else 0)
        self.group = ups_events.group_name(self.ae_title)
        self.woken = asyncio.Event()
        self.redis = None
        if settings.SCALE_MODE:  # channels of one AE may be in several web processes
            import redis.asyncio

            self.redis = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.pump = asyncio.create_task(self._pump())

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "pump"):
            self.pump.cancel()
            await self.channel_layer.group_discard(self.group, self.channel_name)
            if self.redis is not None:
                await self.redis.aclose()

    async def ups_wake(self, message: dict) -> None:
        self.woken.set()

    async def _pump(self) -> None:
        """Send the subscriber's undelivered events in order, then wait to be woken (or for
        the next look at the outbox)."""
        while True:
            if await self._send_pending():
                continue
            self.woken.clear()
            try:
                await asyncio.wait_for(self.woken.wait(), POLL_SECONDS)
            except TimeoutError:
                pass

    async def _send_pending(self) -> bool:
        """One batch of undelivered events, oldest first, if no other channel of this AE is
        sending now (a watcher: of events newer than the last it sent). Whether there were
        any."""
        if self.watching:
            events = await database_sync_to_async(ups_events.events_after)(self.ae_title,
                                                                          self.cursor)
            for event in events:
                await self.send(text_data=json.dumps(event.payload))
                self.cursor = event.pk
            return bool(events)
        async with _turns.setdefault(self.ae_title, asyncio.Lock()), self._turn() as mine:
            if not mine:
                return False  # another process's channel has the turn: look again later
            events = await database_sync_to_async(ups_events.pending)(self.ae_title)
            for event in events:
                await self.send(text_data=json.dumps(event.payload))
            if events:
                await database_sync_to_async(ups_events.mark_delivered)(events)
            return bool(events)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[bool]:
        """Across processes (scale mode): a Redis lock per AE title."""
        if self.redis is None:
            yield True
            return
        from redis.exceptions import LockError

        lock = self.redis.lock(f"portal:ups-websocket:{self.ae_title}", timeout=TURN_SECONDS)
        if not await lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            try:
                await lock.release()
            except LockError:
                pass  # expired: another channel may have sent meanwhile
