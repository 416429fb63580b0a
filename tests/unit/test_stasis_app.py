"""The Stasis application's view of the connection: when the worker may claim, and when not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import pytest

from cbserver import ari_app
from cbserver.ari import (
    AriClient,
    AriConfig,
    AriNotFound,
    AriUnavailable,
    ChannelDestroyed,
    Event,
    StreamConnected,
    StreamDisconnected,
    StreamItem,
    parse_event,
)
from cbserver.ari.models import Channel
from cbserver.ari_app import StasisApp
from cbserver.callflow import AgentFirstCall
from tests.e2e.harness import until


class FakeAri:
    """What StasisApp uses of an AriClient: streams fed by the test, channel look-ups."""

    def __init__(self) -> None:
        self.config = AriConfig(
            "http://127.0.0.1:9/ari", "test", "test", app="test", reconnect_initial=0.01
        )
        self.items: asyncio.Queue[StreamItem | None] = asyncio.Queue()
        self.streams_opened = 0
        self.unreachable = False
        self.gone: set[str] = set()

    async def events(self) -> AsyncGenerator[StreamItem, None]:
        self.streams_opened += 1
        while (item := await self.items.get()) is not None:
            yield item

    async def get_channel(self, channel_id: str) -> Channel:
        if self.unreachable:
            raise AriUnavailable("connection refused", method="GET", path="/channels")
        if channel_id in self.gone:
            raise AriNotFound("Channel not found", status=404)
        return Channel.from_json({"id": channel_id})


@dataclass
class FakeCall:
    """A live call as the app routes to it: its channels, and the events it was handed."""

    request_id: str
    channels: set[str]
    finished: bool = False
    heard: list[Event] = field(default_factory=list)

    async def handle(self, event: Event) -> None:
        self.heard.append(event)


@pytest.fixture
async def running() -> AsyncIterator[tuple[FakeAri, StasisApp]]:
    ari = FakeAri()
    app = StasisApp(cast(AriClient, ari))
    task = asyncio.create_task(app.run())
    yield ari, app
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await app.stop()


def hangup_request(channel_id: str, cause: int) -> Event:
    return parse_event(
        {
            "type": "ChannelHangupRequest",
            "application": "test",
            "timestamp": "",
            "channel": {"id": channel_id},
            "cause": cause,
            "soft": True,
        }
    )


async def test_claims_wait_from_asterisks_shutdown_until_the_connection_to_the_new_one(
    running: tuple[FakeAri, StasisApp],
) -> None:
    ari, app = running
    ari.items.put_nowait(StreamConnected(1))
    await until(app.connected.is_set, within=2, message="connected")

    ari.items.put_nowait(hangup_request("agent-1", ari_app.SHUTDOWN_HANGUP))
    await until(lambda: not app.connected.is_set(), within=2, message="claims paused")
    ari.items.put_nowait(StreamDisconnected("closed by Asterisk", 0.2))
    ari.items.put_nowait(StreamConnected(2))

    await until(app.connected.is_set, within=2, message="claiming again on the new Asterisk")


@pytest.mark.parametrize("cause", [16, 32], ids=["phone-hung-up", "hangup-by-ari"])
async def test_an_ordinary_hang_up_request_does_not_pause_claims(
    running: tuple[FakeAri, StasisApp], cause: int
) -> None:
    ari, app = running
    ari.items.put_nowait(StreamConnected(1))
    ari.items.put_nowait(hangup_request("agent-1", cause))

    # What the app takes from the stream it handles before it waits for more.
    await until(ari.items.empty, within=2, message="the events read")
    assert app.connected.is_set()


async def test_a_shutdown_called_off_lets_claims_resume_on_the_same_connection(
    running: tuple[FakeAri, StasisApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ari_app, "SHUTDOWN_GRACE", 0.05)
    ari, app = running
    ari.items.put_nowait(StreamConnected(1))
    await until(app.connected.is_set, within=2, message="connected")
    ari.items.put_nowait(hangup_request("agent-1", ari_app.SHUTDOWN_HANGUP))
    await until(lambda: not app.connected.is_set(), within=2, message="claims paused")

    await until(app.connected.is_set, within=2, message="claiming again")


async def test_a_call_whose_channel_vanished_in_the_restart_hears_so_before_claims_resume(
    running: tuple[FakeAri, StasisApp],
) -> None:
    ari, app = running
    ari.items.put_nowait(StreamConnected(1))
    await until(app.connected.is_set, within=2, message="connected")
    call = FakeCall("r-1", {"agent-1"})
    app.add(cast(AgentFirstCall, call))
    ari.items.put_nowait(StreamDisconnected("closed by Asterisk", 0.2))
    ari.items.put_nowait(StreamConnected(2))
    ari.unreachable = True  # the socket is up, but Asterisk does not answer the look-up

    await until(lambda: ari.streams_opened == 2, within=2, message="a new connection")
    assert not app.connected.is_set(), "no claims on an Asterisk not yet looked at"
    assert call.heard == []
    ari.unreachable = False
    ari.gone.add("agent-1")
    ari.items.put_nowait(StreamConnected(1))

    await until(app.connected.is_set, within=2, message="connected after the look")
    await until(lambda: call.heard, within=2, message="the call told")
    [gone] = call.heard
    assert isinstance(gone, ChannelDestroyed)
    assert gone.channel.id == "agent-1"
    assert gone.cause_txt == "lost while Asterisk was unreachable"


async def test_claims_wait_for_the_adoption_which_is_tried_again_while_events_keep_flowing() -> (
    None
):
    ari = FakeAri()
    tries: list[bool] = []
    answers = [False, False, True]  # the database away twice, then back

    async def adopt() -> bool:
        tries.append(answers[len(tries)])
        return tries[-1]

    app = StasisApp(cast(AriClient, ari), adopt)
    task = asyncio.create_task(app.run())
    try:
        call = FakeCall("r-1", {"agent-1"})
        app.add(cast(AgentFirstCall, call))
        ari.items.put_nowait(StreamConnected(1))
        ari.items.put_nowait(hangup_request("agent-1", 16))

        await until(lambda: call.heard, within=2, message="the event routed while adopting")
        await until(app.connected.is_set, within=5, message="claiming once adopted")
        assert tries == [False, False, True]
        assert ari.streams_opened == 1, "the connection was kept while adoption was retried"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await app.stop()
