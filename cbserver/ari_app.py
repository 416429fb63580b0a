"""The Stasis application: routes ARI events to the live call-backs they belong to.

It only routes (a call-back's channels are named before they are originated, and StasisStart
carries ``callback,<request id>,<leg>``); the call flows do the telephony. Each call has a
queue of its own: its events are handled in order, and one call's pause never holds another's.
"""

from __future__ import annotations

import asyncio
import logging

from cbserver.ari import (
    AriClient,
    AriNotFound,
    Event,
    StreamConnected,
    StreamDisconnected,
    parse_event,
)
from cbserver.callflow import AgentFirstCall

log = logging.getLogger("cbserver.ari_app")


class StasisApp:
    def __init__(self, ari: AriClient) -> None:
        self.ari = ari
        self.calls: dict[str, AgentFirstCall] = {}
        self.connected = asyncio.Event()
        self._queues: dict[str, asyncio.Queue[Event]] = {}
        self._consumers: dict[str, asyncio.Task[None]] = {}
        self.connected_before = False
        # Set while no call is live: what a stopping worker waits for.
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, call: AgentFirstCall) -> None:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.calls[call.request_id] = call
        self.idle.clear()
        self._queues[call.request_id] = queue
        self._consumers[call.request_id] = asyncio.create_task(self._consume(call, queue))

    def remove(self, call: AgentFirstCall) -> None:
        self.calls.pop(call.request_id, None)
        self._queues.pop(call.request_id, None)
        if not self.calls:
            self.idle.set()
        consumer = self._consumers.pop(call.request_id, None)
        if consumer is not None and consumer is not asyncio.current_task():
            consumer.cancel()

    async def _consume(self, call: AgentFirstCall, queue: asyncio.Queue[Event]) -> None:
        while not call.finished:
            event = await queue.get()
            try:
                await call.handle(event)
            except Exception:
                log.exception("request %s: handling %s failed", call.request_id, event.type)

    def _call_for(self, event: Event) -> AgentFirstCall | None:
        channel = getattr(event, "channel", None)
        if channel is None:
            return None
        args: tuple[str, ...] = getattr(event, "args", ())
        if len(args) >= 2 and args[0] == "callback":
            return self.calls.get(args[1])
        return next((c for c in self.calls.values() if channel.id in c.channels), None)

    async def run(self) -> None:
        async for item in self.ari.events():
            if isinstance(item, StreamConnected):
                if self.connected_before:
                    await self.reconcile()
                self.connected_before = True
                self.connected.set()
            elif isinstance(item, StreamDisconnected):
                self.connected.clear()
            elif (call := self._call_for(item)) is not None:
                queue = self._queues.get(call.request_id)
                if queue is not None:
                    queue.put_nowait(item)

    async def reconcile(self) -> None:
        """After a reconnect: a channel that vanished meanwhile (Asterisk restarted) will never
        send its ChannelDestroyed, so the call hears of it from here, in order with its events."""
        for call in list(self.calls.values()):
            for channel_id in call.channels:
                try:
                    await self.ari.get_channel(channel_id)
                except AriNotFound:
                    log.warning("request %s: channel %s vanished", call.request_id, channel_id)
                    gone = parse_event(
                        {
                            "type": "ChannelDestroyed",
                            "application": self.ari.config.app,
                            "timestamp": "",
                            "channel": {"id": channel_id},
                            "cause": 0,
                            "cause_txt": "lost while Asterisk was unreachable",
                        }
                    )
                    queue = self._queues.get(call.request_id)
                    if queue is not None:
                        queue.put_nowait(gone)

    async def stop(self) -> None:
        for consumer in list(self._consumers.values()):
            consumer.cancel()
        await asyncio.gather(*self._consumers.values(), return_exceptions=True)
