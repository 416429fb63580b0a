"""The Stasis application: routes ARI events to the live call-backs they belong to.

It only routes (a call-back's channels are named before they are originated, and StasisStart
carries ``callback,<request id>,<leg>``); the call flows do the telephony. Each call has a
queue of its own: its events are handled in order, and one call's pause never holds another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cbserver.ari import (
    AriClient,
    AriError,
    AriNotFound,
    AriUnavailable,
    ChannelHangupRequest,
    Event,
    StreamConnected,
    StreamDisconnected,
    parse_event,
)
from cbserver.callflow import AgentFirstCall

log = logging.getLogger("cbserver.ari_app")
# The cause of the hang-up request Asterisk sends each channel as it shuts down
# (AST_SOFTHANGUP_SHUTDOWN): from then on it refuses new calls ("Allocation failed").
SHUTDOWN_HANGUP = 4
# Asterisk waits up to 15 s for its channels to go, then closes; a connection still up long
# after that means the shutdown was called off.
SHUTDOWN_GRACE = 30.0
# The longest pause between tries at adopting while the database or Asterisk cannot be asked.
ADOPT_RETRY_MAX = 5.0


def announces_shutdown(event: Event) -> bool:
    return isinstance(event, ChannelHangupRequest) and event.soft and event.cause == SHUTDOWN_HANGUP


class StasisApp:
    def __init__(self, ari: AriClient, adopt: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.ari = ari
        # On each connect, before claiming: take up calls owned but not carried (see worker).
        self.adopt = adopt
        self.calls: dict[str, AgentFirstCall] = {}
        self.connected = asyncio.Event()
        self._queues: dict[str, asyncio.Queue[Event]] = {}
        self._consumers: dict[str, asyncio.Task[None]] = {}
        self.connected_before = False
        # Counts connects and losses: whether the connection is still the one it was.
        self._connection = 0
        # Set while no call is live: what a stopping worker waits for.
        self.idle = asyncio.Event()
        self.idle.set()
        self._adopting: asyncio.Task[None] | None = None

    def add(self, call: AgentFirstCall, first: Callable[[], Awaitable[None]] | None = None) -> None:
        """Route ``call``'s events to it from now on; ``first`` runs before any of them."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self.calls[call.request_id] = call
        self.idle.clear()
        self._queues[call.request_id] = queue
        self._consumers[call.request_id] = asyncio.create_task(self._consume(call, queue, first))

    def remove(self, call: AgentFirstCall) -> None:
        self.calls.pop(call.request_id, None)
        self._queues.pop(call.request_id, None)
        if not self.calls:
            self.idle.set()
        consumer = self._consumers.pop(call.request_id, None)
        if consumer is not None and consumer is not asyncio.current_task():
            consumer.cancel()

    async def _consume(
        self,
        call: AgentFirstCall,
        queue: asyncio.Queue[Event],
        first: Callable[[], Awaitable[None]] | None,
    ) -> None:
        if first is not None:
            await first()
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
        """Route events until cancelled or the client closes. Connecting (again) registers the
        app on Asterisk; ``connected`` is set only once the live calls have been reconciled
        with what Asterisk knows, so nothing is claimed before."""
        while True:
            async with contextlib.aclosing(self.ari.events()) as stream:
                async for item in stream:
                    if isinstance(item, StreamConnected):
                        self._connection += 1
                        if self.connected_before and not await self.reconcile():
                            break
                        self.connected_before = True
                        self._adopt_then_claim()
                    elif isinstance(item, StreamDisconnected):
                        self._connection += 1
                        self._stop_adopting()
                        self.connected.clear()
                    else:
                        if announces_shutdown(item):
                            self.shutting_down()
                        if (call := self._call_for(item)) is not None:
                            queue = self._queues.get(call.request_id)
                            if queue is not None:
                                queue.put_nowait(item)
                else:
                    return
            # Asterisk stopped answering while we looked: a new connection, a new look.
            self._stop_adopting()
            self.connected.clear()
            await asyncio.sleep(self.ari.config.reconnect_initial)

    def _adopt_then_claim(self) -> None:
        """Claiming waits for the adoption of calls owned but not carried; events keep being
        routed meanwhile, and an adoption that could not ask is tried again, backing off."""
        if self.adopt is None:
            self.connected.set()
            return
        adopt = self.adopt

        async def until_adopted() -> None:
            wait = self.ari.config.reconnect_initial
            while not await adopt():
                await asyncio.sleep(wait)
                wait = min(wait * 2, ADOPT_RETRY_MAX)
            self.connected.set()

        self._stop_adopting()
        self._adopting = asyncio.create_task(until_adopted())

    def _stop_adopting(self) -> None:
        if self._adopting is not None:
            self._adopting.cancel()
            self._adopting = None

    def shutting_down(self) -> None:
        """Asterisk hangs up its channels to stop: a request claimed now would spend an attempt
        on a refusal, so claiming waits for the connection to the Asterisk that comes back."""
        if not self.connected.is_set():
            return  # known already, or not connected at all
        log.warning("Asterisk is shutting down; claiming nothing until it is back")
        self.connected.clear()
        connection = self._connection

        def called_off() -> None:
            if self._connection == connection:
                log.warning("Asterisk did not shut down after all; claiming again")
                self.connected.set()

        asyncio.get_running_loop().call_later(SHUTDOWN_GRACE, called_off)

    async def reconcile(self) -> bool:
        """After a reconnect: a channel that vanished meanwhile (Asterisk restarted) will never
        send its ChannelDestroyed, so the call hears of it from here, in order with its events.
        False when Asterisk could not be asked."""
        for call in list(self.calls.values()):
            for channel_id in call.channels:
                try:
                    await self.ari.get_channel(channel_id)
                except AriUnavailable as exc:
                    log.warning("Asterisk did not answer while reconciling calls: %s", exc)
                    return False
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
                except AriError as exc:
                    # Not known to be gone: a live channel still sends its ChannelDestroyed.
                    log.warning("request %s: channel %s: %s", call.request_id, channel_id, exc)
        return True

    async def stop(self) -> None:
        self._stop_adopting()
        for consumer in list(self._consumers.values()):
            consumer.cancel()
        await asyncio.gather(*self._consumers.values(), return_exceptions=True)
