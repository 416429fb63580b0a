"""The ARI client against a real Asterisk: REST calls, errors, and the event stream's reconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cbserver.ari import (
    AriBadRequest,
    AriClient,
    AriError,
    AriNotFound,
    AriServerError,
    ChannelDtmfReceived,
    PlaybackFinished,
    StasisStart,
)
from cbserver.asterisk.instance import AsteriskInstance
from tests.e2e.conftest import TEST_APP, ari_config
from tests.e2e.harness import EventRecorder, until


async def test_asterisk_info_and_modules(ari: AriClient) -> None:
    info = await ari.asterisk_info()
    assert int(info.version.split(".")[0]) >= 20
    modules = {module.name: module.status for module in await ari.list_modules()}
    assert modules["res_pjsip.so"] == "Running"
    assert modules["app_stasis.so"] == "Running"


async def test_hanging_up_a_vanished_channel_is_harmless(ari: AriClient) -> None:
    assert await ari.hangup("no-such-channel") is False
    assert await ari.destroy_bridge("no-such-bridge") is False


@pytest.fixture(params=["http", "websocket"])
async def over(request: pytest.FixtureRequest, ari: AriClient) -> AsyncIterator[str]:
    """REST over HTTP, or over the event WebSocket that Asterisk 22 answers requests on."""
    if request.param == "http":
        yield "http"
        return
    recorder = EventRecorder(ari)
    await recorder.start()
    await until(lambda: ari.transport == "websocket", within=5, message="REST on the socket")
    yield "websocket"
    await recorder.stop()


async def test_ari_errors_carry_status_and_asterisk_message(ari: AriClient, over: str) -> None:
    assert ari.transport == over
    with pytest.raises(AriNotFound) as missing:
        await ari.get_channel("no-such-channel")
    assert missing.value.status == 404
    assert "Channel not found" in str(missing.value)
    bridge = await ari.create_bridge("mixing")
    # Asterisk 22 answers 400 here, although its API docs list 422.
    with pytest.raises(AriBadRequest) as bad:
        await ari.add_channel(bridge.id, "no-such-channel")
    assert bad.value.status == 400
    assert "Channel not found" in str(bad.value)
    with pytest.raises(AriServerError) as failed:
        await ari.originate("NoSuchTech/123", app=TEST_APP)
    assert "Allocation failed" in str(failed.value)


async def test_wrong_password_is_refused(asterisk: AsteriskInstance) -> None:
    config = ari_config(asterisk)
    wrong = type(config)(**{**config.__dict__, "password": "not-the-password"})
    async with AriClient(wrong) as client:
        with pytest.raises(AriError) as refused:
            await client.asterisk_info()
    assert refused.value.status == 401


async def test_local_channel_enters_the_stasis_app_with_its_args(
    ari: AriClient, events: EventRecorder
) -> None:
    channel = await ari.originate(
        "Local/600@cbserver-agents", app=TEST_APP, app_args=["probe", "42"]
    )
    started = await events.wait_for(StasisStart, channel.id)
    assert started.args == ("probe", "42")
    assert await ari.hangup(channel.id)


async def test_event_stream_reconnects_after_asterisk_restarts(
    spare_asterisk: AsteriskInstance,
) -> None:
    async with AriClient(ari_config(spare_asterisk, app="restart-probe")) as client:
        recorder = EventRecorder(client)
        await recorder.start()
        spare_asterisk.stop()
        await until(lambda: recorder.disconnections >= 1, message="the stream noticing the stop")
        spare_asterisk.start([], progress=print)
        await until(lambda: recorder.connections >= 2, within=10, message="the reconnect")
        # The app is registered again: a call into it arrives as a StasisStart.
        channel = await client.originate("Local/600@cbserver-agents", app="restart-probe")
        await recorder.wait_for(StasisStart, channel.id)
        await client.hangup(channel.id)
        await recorder.stop()


async def test_asterisk_accepts_new_channels_until_it_begins_to_stop(
    spare_asterisk: AsteriskInstance,
) -> None:
    async with AriClient(ari_config(spare_asterisk, app="stop-probe")) as client:
        recorder = EventRecorder(client)
        await recorder.start()
        assert await client.accepts_new_channels()

        async def no_channel() -> bool:
            return await client.list_channels() == []

        await until(no_channel, within=5, message="the probe's channels hung up")
        # A call in progress holds a graceful stop open: Asterisk waits for it, refusing more.
        held = await client.originate("Local/600@cbserver-agents", app="stop-probe")
        await recorder.wait_for(StasisStart, held.id)
        # The command waits for Asterisk to stop: it runs beside the test.
        stopping = await asyncio.create_subprocess_exec(
            *spare_asterisk.cli_command(["-rx", "core stop gracefully"])
        )
        try:

            async def refusing() -> bool:
                return not await client.accepts_new_channels()

            await until(refusing, within=10, message="Asterisk refusing new channels")
            with pytest.raises(AriServerError, match="Allocation failed"):
                await client.originate("Local/600@cbserver-agents", app="stop-probe")
            await client.hangup(held.id)
            await until(lambda: spare_asterisk.pid() is None, message="Asterisk stopped")
        finally:
            await recorder.stop()
            with contextlib.suppress(ProcessLookupError):
                stopping.kill()  # a remote console may outlive the Asterisk it stopped
            await stopping.wait()


async def test_channel_variables_playback_moh_ring_and_dtmf(
    ari: AriClient, events: EventRecorder
) -> None:
    # A Local channel: this half is in the app, the other half runs the dialplan's 600.
    channel = await ari.originate("Local/600@cbserver-agents", app=TEST_APP)
    await events.wait_for(StasisStart, channel.id)

    await ari.set_channel_var(channel.id, "CBSERVER_REQUEST", "req-123")
    assert await ari.get_channel_var(channel.id, "CBSERVER_REQUEST") == "req-123"

    playback = await ari.play(channel.id, ["sound:beep", "sound:beep"], playback_id="pb-e2e")
    assert playback.id == "pb-e2e"
    finished = await events.wait_for(PlaybackFinished, within=10)
    assert finished.playback.id == "pb-e2e"
    assert finished.playback.state == "done"

    await ari.start_moh(channel.id)
    await ari.stop_moh(channel.id)
    await ari.ring(channel.id)
    await ari.ring_stop(channel.id)

    await ari.send_dtmf(channel.id, "1", duration=100)
    arrived = await events.wait_for(ChannelDtmfReceived)
    assert arrived.digit == "1"
    assert arrived.channel.name == channel.name.replace(";1", ";2"), "the far half got it"
    assert await ari.hangup(channel.id)
