"""The UPS event channel (PS3.18 11.11): a WebSocket per subscriber AE title at
``/dicomweb/subscribers/{aetitle}``; each message is one event as DICOM JSON."""

from __future__ import annotations

import asyncio
import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from worklist import ups_events

POLL_SECONDS = 0.5


class UpsEventConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user and user.is_authenticated) and not settings.DICOMWEB_ANONYMOUS_READ:
            await self.close(code=4401)  # before accept: the handshake is refused (403)
            return
        self.ae_title = self.scope["url_route"]["kwargs"]["aetitle"]
        self.group = ups_events.group_name(self.ae_title)
        self.woken = asyncio.Event()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.pump = asyncio.create_task(self._pump())

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "pump"):
            self.pump.cancel()
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def ups_wake(self, message: dict) -> None:
        self.woken.set()

    async def _pump(self) -> None:
        """Send the subscriber's undelivered events in order, then wait to be woken (or for
        the next look at the outbox)."""
        while True:
            events = await database_sync_to_async(ups_events.pending)(self.ae_title)
            for event in events:
                await self.send(text_data=json.dumps(event.payload))
            if events:
                await database_sync_to_async(ups_events.mark_delivered)(events)
                continue
            self.woken.clear()
            try:
                await asyncio.wait_for(self.woken.wait(), POLL_SECONDS)
            except TimeoutError:
                pass
