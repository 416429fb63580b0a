"""The Stasis application: routes ARI events to the live call-backs they belong to.

It only routes (a call-back's channels are named before they are originated, and StasisStart
carries ``callback,<request id>,<leg>``); the call flows do the telephony.
"""

from __future__ import annotations

import asyncio
import logging

from cbserver.ari import AriClient, Event, StreamConnected, StreamDisconnected
from cbserver.callflow import AgentFirstCall

log = logging.getLogger("cbserver.ari_app")


class StasisApp:
    def __init__(self, ari: AriClient) -> None:
        self.ari = ari
        self.calls: dict[str, AgentFirstCall] = {}
        self.connected = asyncio.Event()

    def add(self, call: AgentFirstCall) -> None:
        self.calls[call.request_id] = call

    def remove(self, call: AgentFirstCall) -> None:
        self.calls.pop(call.request_id, None)

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
                self.connected.set()
            elif isinstance(item, StreamDisconnected):
                self.connected.clear()
            elif (call := self._call_for(item)) is not None:
                try:
                    await call.handle(item)
                except Exception:
                    log.exception("request %s: handling %s failed", call.request_id, item.type)
