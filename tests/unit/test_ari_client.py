"""AriClient REST calls against httpx.MockTransport and the event stream against a local
websockets server; no Asterisk needed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from cbserver.ari import (
    AriBadRequest,
    AriClient,
    AriConfig,
    AriConflict,
    AriError,
    AriNotFound,
    AriServerError,
    AriUnavailable,
    AriUnprocessable,
    StasisStart,
    StreamConnected,
    StreamDisconnected,
    StreamItem,
    error_from_response,
)
from tests.e2e.harness import until

CHANNEL = {
    "id": "1732500000.42",
    "name": "PJSIP/alice-0000002a",
    "state": "Down",
    "caller": {"name": "", "number": "1001"},
    "connected": {"name": "", "number": ""},
    "accountcode": "",
    "dialplan": {"context": "default", "exten": "s", "priority": 1, "app_name": "", "app_data": ""},
    "creationtime": "2024-11-25T10:00:00.123+0000",
    "language": "en",
}
STASIS_START = {
    "type": "StasisStart",
    "timestamp": "2024-11-25T10:00:02.456+0000",
    "args": ["inbound"],
    "channel": CHANNEL,
    "asterisk_id": "02:42:ac:12:00:02",
    "application": "myapp",
}

Handler = Callable[[httpx.Request], httpx.Response]


def make_config(**overrides: Any) -> AriConfig:
    values: dict[str, Any] = {
        "base_url": "http://127.0.0.1:8088/ari",
        "username": "cb",
        "password": "s3cret",
        "app": "myapp",
    }
    values.update(overrides)
    return AriConfig(**values)


class Recorder:
    """A MockTransport handler that records requests and answers with a canned response."""

    def __init__(self, status: int = 200, body: Any = None) -> None:
        self.status = status
        self.body = body
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.body is None:
            return httpx.Response(self.status)
        return httpx.Response(self.status, json=self.body)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@contextlib.asynccontextmanager
async def client_with(handler: Handler, **config: Any) -> AsyncIterator[AriClient]:
    async with AriClient(make_config(**config), transport=httpx.MockTransport(handler)) as ari:
        yield ari


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


# -- REST -------------------------------------------------------------------------------


async def test_originate_sends_query_params_and_variables_body() -> None:
    rec = Recorder(body=CHANNEL)
    async with client_with(rec) as ari:
        ch = await ari.originate(
            "PJSIP/1001",
            app_args=["outbound", "42"],
            caller_id='"Shop" <5551234>',
            timeout=25,
            variables={"CALLBACK_ID": "42"},
        )
    assert ch.id == "1732500000.42"
    req = rec.last
    assert req.method == "POST"
    assert req.url.path == "/ari/channels"
    assert query(req) == {
        "endpoint": "PJSIP/1001",
        "app": "myapp",
        "appArgs": "outbound,42",
        "callerId": '"Shop" <5551234>',
        "timeout": "25",
    }
    assert json.loads(req.content) == {"variables": {"CALLBACK_ID": "42"}}
    assert req.headers["authorization"] == httpx.BasicAuth("cb", "s3cret")._auth_header


async def test_originate_with_channel_id_uses_id_path_and_no_body() -> None:
    rec = Recorder(body=CHANNEL)
    async with client_with(rec) as ari:
        await ari.originate("Local/100@from-internal", channel_id="cb-1.2", app="other")
    assert rec.last.url.path == "/ari/channels/cb-1.2"
    assert query(rec.last) == {
        "endpoint": "Local/100@from-internal",
        "app": "other",
        "timeout": "30",
    }
    assert rec.last.content == b""


async def test_originate_to_dialplan_does_not_default_app() -> None:
    rec = Recorder(body=CHANNEL)
    async with client_with(rec) as ari:
        await ari.originate("PJSIP/1001", context="from-internal", extension="100", priority=1)
    assert query(rec.last) == {
        "endpoint": "PJSIP/1001",
        "context": "from-internal",
        "extension": "100",
        "priority": "1",
        "timeout": "30",
    }


async def test_create_channel_and_dial() -> None:
    rec = Recorder(body=CHANNEL)
    async with client_with(rec) as ari:
        await ari.create_channel("PJSIP/1001", channel_id="c1", formats=["ulaw", "alaw"])
        assert rec.last.url.path == "/ari/channels/create"
        assert query(rec.last) == {
            "endpoint": "PJSIP/1001",
            "app": "myapp",
            "channelId": "c1",
            "formats": "ulaw,alaw",
        }
        rec.body = None
        rec.status = 204
        await ari.dial("c1", timeout=20)
    assert rec.last.url.path == "/ari/channels/c1/dial"
    assert query(rec.last) == {"timeout": "20"}


async def test_hangup_true_then_404_is_false() -> None:
    rec = Recorder(status=204)
    async with client_with(rec) as ari:
        assert await ari.hangup("1732500000.42") is True
        assert rec.last.method == "DELETE"
        assert rec.last.url.path == "/ari/channels/1732500000.42"
        assert query(rec.last) == {"reason": "normal"}
        rec.status, rec.body = 404, {"message": "Channel not found"}
        assert await ari.hangup("1732500000.42", reason="busy") is False
        assert query(rec.last) == {"reason": "busy"}
        assert await ari.destroy_bridge("b1") is False
        assert await ari.stop_playback("pb-1") is False


async def test_conflict_raises_with_message() -> None:
    rec = Recorder(status=409, body={"message": "Channel not in Stasis application"})
    async with client_with(rec) as ari:
        with pytest.raises(AriConflict) as info:
            await ari.answer("1732500000.42")
    err = info.value
    assert err.status == 409
    assert err.message == "Channel not in Stasis application"
    assert err.method == "POST"
    assert err.path == "/ari/channels/1732500000.42/answer"
    assert "Channel not in Stasis application" in str(err)


async def test_hangup_other_errors_still_raise() -> None:
    async with client_with(Recorder(status=500, body={"message": "boom"})) as ari:
        with pytest.raises(AriServerError, match="boom"):
            await ari.hangup("x")


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def _time_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize("handler", [_refuse, _time_out])
async def test_transport_errors_raise_unavailable(handler: Handler) -> None:
    async with client_with(handler) as ari:
        with pytest.raises(AriUnavailable) as info:
            await ari.asterisk_info()
    assert info.value.status is None
    assert info.value.method == "GET"
    assert isinstance(info.value, AriError)


async def test_real_connection_refused_raises_unavailable() -> None:
    port = _free_port()
    async with AriClient(make_config(base_url=f"http://127.0.0.1:{port}/ari")) as ari:
        with pytest.raises(AriUnavailable):
            await ari.ping()


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, AriBadRequest),
        (404, AriNotFound),
        (409, AriConflict),
        (422, AriUnprocessable),
        (500, AriServerError),
        (503, AriServerError),
        (401, AriError),
    ],
)
def test_error_from_response_maps_status(status: int, cls: type[AriError]) -> None:
    request = httpx.Request("DELETE", "http://h/ari/bridges/b1")
    err = error_from_response(httpx.Response(status, json={"message": "m"}, request=request))
    assert type(err) is cls
    assert (err.status, err.message, err.method, err.path) == (
        status,
        "m",
        "DELETE",
        "/ari/bridges/b1",
    )


def test_error_from_response_without_json_body() -> None:
    err = error_from_response(httpx.Response(401, text="Authentication required"))
    assert err.message == "Authentication required"
    assert err.path == ""
    err = error_from_response(httpx.Response(404))
    assert err.message == "Not Found"


OPERATIONS: list[tuple[Callable[[AriClient], Awaitable[Any]], str, str, dict[str, str]]] = [
    (lambda a: a.ring("c1"), "POST", "/ari/channels/c1/ring", {}),
    (lambda a: a.ring_stop("c1"), "DELETE", "/ari/channels/c1/ring", {}),
    (
        lambda a: a.start_moh("c1", "default"),
        "POST",
        "/ari/channels/c1/moh",
        {"mohClass": "default"},
    ),
    (lambda a: a.stop_moh("c1"), "DELETE", "/ari/channels/c1/moh", {}),
    (
        lambda a: a.send_dtmf("c1", "12#", between=100),
        "POST",
        "/ari/channels/c1/dtmf",
        {"dtmf": "12#", "between": "100"},
    ),
    (
        lambda a: a.set_channel_var("c1", "X", "1"),
        "POST",
        "/ari/channels/c1/variable",
        {"variable": "X", "value": "1"},
    ),
    (
        lambda a: a.continue_in_dialplan("c1", "ctx", "s", 1),
        "POST",
        "/ari/channels/c1/continue",
        {"context": "ctx", "extension": "s", "priority": "1"},
    ),
    (lambda a: a.mute("c1", "in"), "POST", "/ari/channels/c1/mute", {"direction": "in"}),
    (lambda a: a.unmute("c1"), "DELETE", "/ari/channels/c1/mute", {"direction": "both"}),
    (
        lambda a: a.add_channel("b1", ["c1", "c2"], role="agent"),
        "POST",
        "/ari/bridges/b1/addChannel",
        {"channel": "c1,c2", "role": "agent"},
    ),
    (
        lambda a: a.remove_channel("b1", "c1"),
        "POST",
        "/ari/bridges/b1/removeChannel",
        {"channel": "c1"},
    ),
    (lambda a: a.start_bridge_moh("b1"), "POST", "/ari/bridges/b1/moh", {}),
    (lambda a: a.stop_bridge_moh("b1"), "DELETE", "/ari/bridges/b1/moh", {}),
    (lambda a: a.reload_module("res_pjsip.so"), "PUT", "/ari/asterisk/modules/res_pjsip.so", {}),
    (
        lambda a: a.set_global_variable("G", "v"),
        "POST",
        "/ari/asterisk/variable",
        {"variable": "G", "value": "v"},
    ),
    (lambda a: a.answer("a/b"), "POST", "/ari/channels/a%2Fb/answer", {}),
    (lambda a: a.stop_recording("r1"), "POST", "/ari/recordings/live/r1/stop", {}),
]


@pytest.mark.parametrize(("call", "method", "path", "params"), OPERATIONS)
async def test_operation_sends_method_path_and_query(
    call: Callable[[AriClient], Awaitable[Any]], method: str, path: str, params: dict[str, str]
) -> None:
    rec = Recorder(status=204)
    async with client_with(rec) as ari:
        assert await call(ari) is None
    assert rec.last.method == method
    assert rec.last.url.raw_path.split(b"?")[0].decode() == path
    assert query(rec.last) == params


async def test_play_and_bridge_calls_return_models() -> None:
    playback = {
        "id": "pb-1",
        "media_uri": "sound:a",
        "target_uri": "channel:c1",
        "state": "queued",
        "language": "en",
    }
    rec = Recorder(body=playback)
    async with client_with(rec) as ari:
        pb = await ari.play("c1", ["sound:a", "sound:b"], lang="en", playback_id="pb-1")
        assert pb.id == "pb-1"
        assert rec.last.url.path == "/ari/channels/c1/play"
        assert query(rec.last) == {"media": "sound:a,sound:b", "lang": "en", "playbackId": "pb-1"}
        await ari.play_on_bridge("b1", "tone:ring")
        assert rec.last.url.path == "/ari/bridges/b1/play"
        assert query(rec.last) == {"media": "tone:ring"}
        rec.body = {
            "id": "b1",
            "technology": "simple_bridge",
            "bridge_type": "mixing",
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": "n",
            "channels": [],
        }
        bridge = await ari.create_bridge(["mixing", "dtmf_events"], bridge_id="b1", name="n")
        assert bridge.id == "b1"
        assert query(rec.last) == {"type": "mixing,dtmf_events", "bridgeId": "b1", "name": "n"}
        assert [b.id for b in await _list_of(rec, ari.list_bridges)] == ["b1"]


async def _list_of(rec: Recorder, call: Callable[[], Any]) -> Any:
    rec.body = [rec.body]
    return await call()


async def test_variables_asterisk_and_applications() -> None:
    rec = Recorder(body={"value": "42"})
    async with client_with(rec) as ari:
        assert await ari.get_channel_var("c1", "CALLBACK_ID") == "42"
        assert query(rec.last) == {"variable": "CALLBACK_ID"}
        assert await ari.get_global_variable("G") == "42"
        rec.body = {
            "name": "myapp",
            "channel_ids": [],
            "bridge_ids": [],
            "endpoint_ids": [],
            "device_names": ["PJSIP/alice"],
        }
        app = await ari.subscribe(["deviceState:PJSIP/alice", "endpoint:PJSIP/bob"])
        assert app.device_names == ("PJSIP/alice",)
        assert rec.last.method == "POST"
        assert rec.last.url.path == "/ari/applications/myapp/subscription"
        assert query(rec.last) == {"eventSource": "deviceState:PJSIP/alice,endpoint:PJSIP/bob"}
        await ari.unsubscribe("channel:c1", app="other")
        assert rec.last.method == "DELETE"
        assert rec.last.url.path == "/ari/applications/other/subscription"
        assert (await ari.get_application()).name == "myapp"
        assert rec.last.url.path == "/ari/applications/myapp"
        rec.body = {"asterisk_id": "02:42", "ping": "pong", "timestamp": "2024-11-25T10:00:00"}
        assert (await ari.ping()).ping == "pong"
        rec.body = {"system": {"version": "22.1.0", "entity_id": "02:42"}}
        assert (await ari.asterisk_info(only=["system"])).version == "22.1.0"
        assert query(rec.last) == {"only": "system"}
        rec.body = [
            {
                "name": "res_ari.so",
                "description": "d",
                "use_count": 3,
                "status": "Running",
                "support_level": "core",
            }
        ]
        modules = await ari.list_modules()
        assert [(m.name, m.use_count) for m in modules] == [("res_ari.so", 3)]


def test_events_url() -> None:
    cfg = make_config(base_url="https://pbx.example:8089/ari/", password="p@ss:w/rd&x")
    url = AriClient(cfg).events_url(subscribe_all=True)
    assert url == (
        "wss://pbx.example:8089/ari/events?app=myapp"
        "&api_key=cb%3Ap%40ss%3Aw%2Frd%26x&subscribeAll=true"
    )
    url = AriClient(make_config()).events_url()
    assert url.startswith("ws://127.0.0.1:8088/ari/events?app=myapp&")
    assert url.endswith("subscribeAll=false")


def test_config_repr_hides_password() -> None:
    assert "s3cret" not in repr(make_config())


# -- event stream ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _take(stream: AsyncIterator[StreamItem], n: int) -> list[StreamItem]:
    return [await anext(stream) for _ in range(n)]


async def test_stream_reconnects_after_server_closes() -> None:
    paths: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        paths.append(ws.request.path)
        await ws.send("this is not json")
        await ws.send(json.dumps(STASIS_START))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        cfg = make_config(
            base_url=f"http://127.0.0.1:{port}/ari", reconnect_initial=0.05, reconnect_max=0.2
        )
        async with AriClient(cfg) as ari:
            stream = ari.events(subscribe_all=True)
            async with contextlib.aclosing(stream):
                items = await asyncio.wait_for(_take(stream, 5), timeout=5)

    connected, start, down, again, start2 = items
    assert connected == StreamConnected(attempt=1)
    assert isinstance(start, StasisStart)
    assert start.channel.id == "1732500000.42"
    assert start.args == ("inbound",)
    assert isinstance(down, StreamDisconnected)
    assert "1000" in down.reason
    assert 0.045 <= down.retry_in <= 0.05
    assert again == StreamConnected(attempt=2)
    assert isinstance(start2, StasisStart)
    assert paths[0] == "/ari/events?app=myapp&api_key=cb%3As3cret&subscribeAll=true"


async def test_stream_backs_off_exponentially_when_asterisk_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = make_config(
        base_url=f"http://127.0.0.1:{_free_port()}/ari",
        reconnect_initial=0.01,
        reconnect_max=0.08,
    )
    caplog.set_level(logging.DEBUG, logger="cbserver.ari")
    async with AriClient(cfg) as ari:
        stream = ari.events()
        async with contextlib.aclosing(stream):
            items = await asyncio.wait_for(_take(stream, 6), timeout=5)

    assert all(isinstance(i, StreamDisconnected) for i in items)
    delays = [i.retry_in for i in items if isinstance(i, StreamDisconnected)]
    nominal = [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]
    for got, want in zip(delays, nominal, strict=True):
        assert want * 0.9 <= got <= want
    assert delays[0] < delays[1] < delays[2] < delays[3]
    warnings = [
        r for r in caplog.records if r.name == "cbserver.ari" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1  # one WARNING for the outage, the retries log at DEBUG


async def test_stream_logs_reconnect_once_per_state_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps(STASIS_START))

    caplog.set_level(logging.INFO, logger="cbserver.ari")
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        cfg = make_config(base_url=f"http://127.0.0.1:{port}/ari", reconnect_initial=0.01)
        async with AriClient(cfg) as ari:
            stream = ari.events()
            async with contextlib.aclosing(stream):
                await asyncio.wait_for(_take(stream, 4), timeout=5)
    messages = [
        r.getMessage()
        for r in caplog.records
        if r.name == "cbserver.ari" and r.levelno >= logging.WARNING
    ]
    assert len(messages) == 2
    assert "down" in messages[0]
    assert "reconnected" in messages[1]


async def test_cancelling_consumer_closes_socket() -> None:
    closed = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        closed.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with AriClient(make_config(base_url=f"http://127.0.0.1:{port}/ari")) as ari:
            seen: list[StreamItem] = []
            got_one = asyncio.Event()

            async def consume() -> None:
                async for item in ari.events():
                    seen.append(item)
                    got_one.set()

            task = asyncio.create_task(consume())
            async with asyncio.timeout(5):
                await got_one.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await closed.wait()
    assert seen == [StreamConnected(1)]


async def test_closing_client_ends_stream() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ari = AriClient(make_config(base_url=f"http://127.0.0.1:{port}/ari"))
        stream = ari.events()
        assert await asyncio.wait_for(anext(stream), 5) == StreamConnected(1)
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        await ari.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 5)


async def test_backoff_resets_after_a_connection_that_stayed_up() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        if connections == 3:
            await asyncio.sleep(0.15)  # longer than reconnect_max: a "stable" connection

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        cfg = make_config(
            base_url=f"http://127.0.0.1:{port}/ari", reconnect_initial=0.01, reconnect_max=0.1
        )
        async with AriClient(cfg) as ari:
            stream = ari.events()
            async with contextlib.aclosing(stream):
                items = await asyncio.wait_for(_take(stream, 6), timeout=5)
    delays = [i.retry_in for i in items if isinstance(i, StreamDisconnected)]
    assert [type(i) for i in items] == [StreamConnected, StreamDisconnected] * 3
    assert 0.009 <= delays[0] <= 0.01
    assert 0.018 <= delays[1] <= 0.02  # short-lived connection: keep backing off
    assert 0.009 <= delays[2] <= 0.01  # reset after the stable one


async def test_snoop_and_record_send_aris_names_and_return_models() -> None:
    recording = {"name": "ear", "format": "wav", "state": "queued", "target_uri": "channel:s1"}
    rec = Recorder(body=CHANNEL)
    async with client_with(rec) as ari:
        spy = await ari.snoop("c1", spy="in", app_args=["ear", "7"], snoop_id="s1")
        assert spy.id == CHANNEL["id"]
        assert rec.last.url.path == "/ari/channels/c1/snoop"
        assert query(rec.last) == {
            "spy": "in",
            "whisper": "none",
            "app": "myapp",
            "appArgs": "ear,7",
            "snoopId": "s1",
        }
        rec.body = recording
        live = await ari.record("s1", "ear", max_duration_seconds=2, if_exists="overwrite")
    assert (live.name, live.state, live.duration) == ("ear", "queued", None)
    assert rec.last.url.path == "/ari/channels/s1/record"
    assert query(rec.last) == {
        "name": "ear",
        "format": "wav",
        "maxDurationSeconds": "2",
        "ifExists": "overwrite",
    }


async def test_stored_recording_comes_back_as_bytes_and_deleting_twice_is_harmless() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, content=b"RIFF....WAVE")
        return httpx.Response(404, json={"message": "Recording not found"})

    async with client_with(handler) as ari:
        assert await ari.stored_recording_file("ear") == b"RIFF....WAVE"
        assert await ari.delete_stored_recording("ear") is False


class WebSocketAsterisk:
    """A fake Asterisk 22 that answers RESTRequests on the event socket, as the real one does
    (checked e2e), and records what it was sent."""

    def __init__(self, answers: dict[str, tuple[int, str, Any]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, Any]] = []
        self.socket: ServerConnection | None = None

    async def handler(self, ws: ServerConnection) -> None:
        self.socket = ws
        with contextlib.suppress(ConnectionClosed):
            await self._answer(ws)

    async def _answer(self, ws: ServerConnection) -> None:
        async for frame in ws:
            request = json.loads(frame)
            self.requests.append(request)
            status, reason, body = self.answers.get(request["uri"], (404, "Not Found", None))
            if status == 0:
                continue  # never answers this one
            await ws.send(json.dumps({"type": "StasisStart", **STASIS_START}))
            await ws.send(
                json.dumps(
                    {
                        "type": "RESTResponse",
                        "request_id": request["request_id"],
                        "status_code": status,
                        "reason_phrase": reason,
                        "uri": request["uri"],
                        "content_type": "application/json",
                        "message_body": "" if body is None else json.dumps(body),
                    }
                )
            )


@contextlib.asynccontextmanager
async def streaming(
    fake: WebSocketAsterisk, **config: Any
) -> AsyncIterator[tuple[AriClient, list[StreamItem]]]:
    """A client whose event stream runs in the background while the test makes requests."""
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        transport = httpx.MockTransport(Recorder(status=599))
        cfg = make_config(base_url=f"http://127.0.0.1:{port}/ari", request_timeout=1, **config)
        async with AriClient(cfg, transport=transport) as ari:
            seen: list[StreamItem] = []

            async def consume() -> None:
                async for item in ari.events():
                    seen.append(item)

            task = asyncio.create_task(consume())
            try:
                yield ari, seen
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def wait_for_transport(ari: AriClient, transport: str) -> None:
    await until(lambda: ari.transport == transport, within=3, message=f"{transport} in use")


PING = (200, "OK", {"ping": "pong", "timestamp": "2024-11-25T10:00:02.456+0000"})


async def test_requests_go_over_the_event_socket_when_asterisk_answers_there() -> None:
    fake = WebSocketAsterisk({"asterisk/ping": PING, "channels/c-1": (200, "OK", CHANNEL)})
    async with streaming(fake) as (ari, seen):
        await wait_for_transport(ari, "websocket")
        channel = await ari.originate(
            "PJSIP/alice", app="myapp", app_args=["callback", "r1"], channel_id="c-1"
        )
        assert channel.id == CHANNEL["id"]
        fake.answers["channels/c-1/ring"] = (404, "Not Found", {"message": "Channel not found"})
        with pytest.raises(AriNotFound, match="Channel not found"):
            await ari.ring("c-1")
        await asyncio.sleep(0.05)
    originate = fake.requests[1]
    assert {k: originate[k] for k in ("type", "method", "uri")} == {
        "type": "RESTRequest",
        "method": "POST",
        "uri": "channels/c-1",
    }
    assert {q["name"]: q["value"] for q in originate["query_strings"]} == {
        "endpoint": "PJSIP/alice",
        "app": "myapp",
        "appArgs": "callback,r1",
        "timeout": "30",
    }
    assert "message_body" not in originate, "no variables, no body"
    assert [r["request_id"] for r in fake.requests] == ["cb1", "cb2", "cb3"]
    # Events arriving between the answers still reach the stream, in order.
    assert sum(isinstance(i, StasisStart) for i in seen) == 3


async def test_a_json_body_travels_as_the_message_body() -> None:
    fake = WebSocketAsterisk({"asterisk/ping": PING, "channels/c-2": (200, "OK", CHANNEL)})
    async with streaming(fake) as (ari, _):
        await wait_for_transport(ari, "websocket")
        await ari.originate("PJSIP/bob", app="myapp", channel_id="c-2", variables={"CB": "r1"})
    [originate] = [r for r in fake.requests if r["uri"] == "channels/c-2"]
    assert originate["content_type"] == "application/json"
    assert json.loads(originate["message_body"]) == {"variables": {"CB": "r1"}}


async def test_an_asterisk_that_ignores_rest_on_the_socket_is_asked_over_http() -> None:
    fake = WebSocketAsterisk({"asterisk/ping": (0, "", None)})
    async with streaming(fake) as (ari, seen):
        await asyncio.sleep(1.3)  # the offer times out
        assert ari.transport == "http"
        with pytest.raises(AriServerError):
            await ari.ring("c-1")  # the HTTP transport answers 599
    assert [r["uri"] for r in fake.requests] == ["asterisk/ping"]
    assert seen == [StreamConnected(1)]


async def test_rest_over_the_socket_can_be_turned_off() -> None:
    fake = WebSocketAsterisk({"asterisk/ping": PING})
    async with streaming(fake, rest_over_websocket=False) as (ari, _):
        await asyncio.sleep(0.2)
        assert ari.transport == "http"
    assert fake.requests == []


async def test_a_request_waiting_when_the_socket_drops_fails_as_unavailable() -> None:
    fake = WebSocketAsterisk({"asterisk/ping": PING, "channels/c-1/ring": (0, "", None)})
    async with streaming(fake, reconnect_initial=5) as (ari, _):
        await wait_for_transport(ari, "websocket")
        pending = asyncio.create_task(ari.ring("c-1"))
        await until(lambda: len(fake.requests) == 2, within=3, message="the ring sent")
        assert fake.socket is not None
        await fake.socket.close()
        with pytest.raises(AriUnavailable, match="WebSocket closed"):
            await asyncio.wait_for(pending, 3)
        assert ari.transport == "http", "until a new socket is offered"
