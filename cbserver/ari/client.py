"""Async client for the Asterisk REST Interface: REST calls plus a self-healing event stream."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from .errors import AriError, AriNotFound, AriUnavailable, error_from_response, error_from_status
from .events import Event, StreamConnected, StreamDisconnected, StreamItem, parse_event
from .models import (
    Application,
    AsteriskInfo,
    AsteriskPing,
    Bridge,
    Channel,
    LiveRecording,
    Module,
    Playback,
)

log = logging.getLogger("cbserver.ari")


@dataclass(frozen=True)
class AriConfig:
    base_url: str
    username: str
    password: str = field(repr=False)
    app: str
    request_timeout: float = 5.0
    # Back-off between reconnect attempts: a worker must be back within 5 s of Asterisk
    # answering again, so the longest wait stays well below that.
    reconnect_initial: float = 0.2
    reconnect_max: float = 2.0
    # A socket that went silent (Asterisk frozen, a cable pulled) is noticed within
    # ping_interval + request_timeout; a closed one at once.
    ping_interval: float = 5.0
    # Send REST requests over the event WebSocket when Asterisk can (20.14+, 21.9+, 22.4+).
    rest_over_websocket: bool = True


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(str(v) for v in value)  # ARI's allowMultiple params are comma-separated
    return str(value)


class _RestOverWebSocket:
    """ARI requests answered on an event WebSocket: ``RESTRequest`` out, ``RESTResponse`` back.

    Each costs a tenth of the CPU of an HTTP request through httpx (bench/), and Asterisk
    starts no HTTP session thread for it. A reader task (``AriClient.events``) delivers the
    responses, so a request never waits on whoever consumes the events.
    """

    def __init__(self, ws: ClientConnection, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False

    async def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        json_body: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The ``RESTResponse`` to one request; AriUnavailable when the socket cannot answer."""
        request_id = f"cb{next(self._ids)}"
        message: dict[str, Any] = {
            "type": "RESTRequest",
            "request_id": request_id,
            "method": method,
            "uri": path.lstrip("/"),
        }
        if query:
            message["query_strings"] = [{"name": k, "value": v} for k, v in query.items()]
        if json_body is not None:
            message["content_type"] = "application/json"
            message["message_body"] = json.dumps(json_body)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            if self.closed:
                raise AriUnavailable("the event WebSocket is closed", method=method, path=path)
            await self.ws.send(json.dumps(message))
            async with asyncio.timeout(self.timeout):
                return await answer
        except TimeoutError as exc:
            raise AriUnavailable("no answer in time", method=method, path=path) from exc
        except ConnectionClosed as exc:
            raise AriUnavailable(f"WebSocket closed: {exc}", method=method, path=path) from exc
        finally:
            self._pending.pop(request_id, None)

    def deliver(self, response: dict[str, Any]) -> None:
        answer = self._pending.get(str(response.get("request_id")))
        if answer is not None and not answer.done():
            answer.set_result(response)

    def close(self, reason: str) -> None:
        self.closed = True
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(AriUnavailable(f"WebSocket closed: {reason}"))


class AriClient:
    """``async with AriClient(config) as ari:`` -- one HTTP connection pool, any number of
    event streams (``ari.events()``); closing the client ends the streams.

    While an event stream is up on an Asterisk that supports it, REST requests travel on that
    WebSocket; otherwise over HTTP. Callers see no difference."""

    def __init__(
        self, config: AriConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            auth=(config.username, config.password),
            timeout=config.request_timeout,
            transport=transport,
        )
        self._sockets: set[ClientConnection] = set()
        self._closing = asyncio.Event()
        self._rest: _RestOverWebSocket | None = None

    @property
    def transport(self) -> str:
        """Where REST requests go now: ``"websocket"`` or ``"http"``."""
        return "websocket" if self._rest is not None and not self._rest.closed else "http"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closing.set()
        for ws in list(self._sockets):
            await ws.close()
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, json_body: Mapping[str, Any] | None = None, **params: Any
    ) -> httpx.Response:
        """One ARI request; ``params`` go in the query string (ARI's convention), None dropped."""
        query = {k: _fmt(v) for k, v in params.items() if v is not None}
        try:
            response = await self._http.request(
                method, path.lstrip("/"), params=query, json=json_body
            )
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise AriUnavailable(detail, method=method, path=exc.request.url.path) from exc
        if not response.is_success:
            raise error_from_response(response)
        return response

    async def _call(
        self, method: str, path: str, *, json_body: Mapping[str, Any] | None = None, **params: Any
    ) -> Any:
        """A JSON request: the decoded body, or None when Asterisk sent none."""
        rest = self._rest
        if rest is not None and not rest.closed:
            query = {k: _fmt(v) for k, v in params.items() if v is not None}
            answer = await rest.request(method, path, query, json_body)
            status = int(answer.get("status_code", 0))
            body = str(answer.get("message_body") or "")
            if not 200 <= status < 300:
                reason = str(answer.get("reason_phrase") or "")
                raise error_from_status(status, reason, body, method=method, path=path)
            content = body.encode()
        else:
            response = await self._request(method, path, json_body=json_body, **params)
            status, content = response.status_code, response.content
        if not content:
            return None
        try:
            return json.loads(content)
        except ValueError as exc:
            raise AriError("response is not JSON", status=status, method=method, path=path) from exc

    async def _delete_if_exists(self, path: str, **params: Any) -> bool:
        try:
            await self._call("DELETE", path, **params)
        except AriNotFound:
            return False
        return True

    # -- asterisk ------------------------------------------------------------------------

    async def asterisk_info(self, only: Sequence[str] | None = None) -> AsteriskInfo:
        return AsteriskInfo.from_json(await self._call("GET", "/asterisk/info", only=only))

    async def ping(self) -> AsteriskPing:
        return AsteriskPing.from_json(await self._call("GET", "/asterisk/ping"))

    async def list_modules(self) -> list[Module]:
        return [Module.from_json(m) for m in await self._call("GET", "/asterisk/modules")]

    async def get_module(self, name: str) -> Module:
        return Module.from_json(await self._call("GET", f"/asterisk/modules/{_q(name)}"))

    async def reload_module(self, name: str) -> None:
        await self._call("PUT", f"/asterisk/modules/{_q(name)}")

    async def get_global_variable(self, variable: str) -> str:
        data = await self._call("GET", "/asterisk/variable", variable=variable)
        return str(data.get("value", ""))

    async def set_global_variable(self, variable: str, value: str) -> None:
        await self._call("POST", "/asterisk/variable", variable=variable, value=value)

    # -- channels ------------------------------------------------------------------------

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: Sequence[str] = (),
        caller_id: str | None = None,
        timeout: int | None = 30,  # noqa: ASYNC109 -- ARI's ring timeout, not an asyncio one
        variables: Mapping[str, str] | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | Sequence[str] | None = None,
        extension: str | None = None,
        context: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> Channel:
        """Originate a call; it goes to Stasis ``app`` (default: config.app) unless a dialplan
        target (extension/context/priority/label) is given -- ARI makes the two exclusive."""
        to_dialplan = any(v is not None for v in (extension, context, priority, label))
        data = await self._call(
            "POST",
            "/channels" if channel_id is None else f"/channels/{_q(channel_id)}",
            json_body={"variables": dict(variables)} if variables else None,
            endpoint=endpoint,
            extension=extension,
            context=context,
            priority=priority,
            label=label,
            app=app if app is not None or to_dialplan else self.config.app,
            appArgs=",".join(app_args) if app_args else None,
            callerId=caller_id,
            timeout=timeout,
            otherChannelId=other_channel_id,
            originator=originator,
            formats=formats,
        )
        return Channel.from_json(data)

    async def create_channel(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: Sequence[str] = (),
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | Sequence[str] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Create a channel in Stasis without dialling it (call :meth:`dial` next)."""
        data = await self._call(
            "POST",
            "/channels/create",
            json_body={"variables": dict(variables)} if variables else None,
            endpoint=endpoint,
            app=app or self.config.app,
            appArgs=",".join(app_args) if app_args else None,
            channelId=channel_id,
            otherChannelId=other_channel_id,
            originator=originator,
            formats=formats,
        )
        return Channel.from_json(data)

    async def accepts_new_channels(self) -> bool:
        """Whether Asterisk makes channels at all: a shutting-down Asterisk refuses each one
        ("Allocation failed") until it is gone, while ARI still answers. Asked by making a
        Local channel, never dialled, and hanging it up."""
        try:
            probe = await self.create_channel("Local/probe@cbserver-probe")
        except AriError as exc:
            if exc.status == 500:
                return False
            raise
        await self._delete_if_exists(f"/channels/{_q(probe.id)}")
        return True

    async def dial(
        self,
        channel_id: str,
        caller: str | None = None,
        timeout: int | None = None,  # noqa: ASYNC109 -- ARI's ring timeout
    ) -> None:
        await self._call("POST", f"/channels/{_q(channel_id)}/dial", caller=caller, timeout=timeout)

    async def get_channel(self, channel_id: str) -> Channel:
        return Channel.from_json(await self._call("GET", f"/channels/{_q(channel_id)}"))

    async def list_channels(self) -> list[Channel]:
        return [Channel.from_json(c) for c in await self._call("GET", "/channels")]

    async def answer(self, channel_id: str) -> None:
        await self._call("POST", f"/channels/{_q(channel_id)}/answer")

    async def ring(self, channel_id: str) -> None:
        await self._call("POST", f"/channels/{_q(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        await self._call("DELETE", f"/channels/{_q(channel_id)}/ring")

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        """Hang up; False (not an error) when the channel was already gone."""
        return await self._delete_if_exists(f"/channels/{_q(channel_id)}", reason=reason)

    async def play(
        self,
        channel_id: str,
        media: str | Sequence[str],
        *,
        lang: str | None = None,
        offsetms: int | None = None,
        skipms: int | None = None,
        playback_id: str | None = None,
    ) -> Playback:
        data = await self._call(
            "POST",
            f"/channels/{_q(channel_id)}/play",
            media=media,
            lang=lang,
            offsetms=offsetms,
            skipms=skipms,
            playbackId=playback_id,
        )
        return Playback.from_json(data)

    async def snoop(
        self,
        channel_id: str,
        *,
        spy: str = "none",
        whisper: str = "none",
        app: str | None = None,
        app_args: Sequence[str] = (),
        snoop_id: str | None = None,
    ) -> Channel:
        """A channel that hears (``spy``) or speaks into (``whisper``) another: in, out, both."""
        data = await self._call(
            "POST",
            f"/channels/{_q(channel_id)}/snoop",
            spy=spy,
            whisper=whisper,
            app=app or self.config.app,
            appArgs=",".join(app_args) or None,
            snoopId=snoop_id,
        )
        return Channel.from_json(data)

    async def record(
        self,
        channel_id: str,
        name: str,
        *,
        format: str = "wav",
        max_duration_seconds: int | None = None,
        max_silence_seconds: int | None = None,
        if_exists: str | None = None,
        beep: bool | None = None,
        terminate_on: str | None = None,
    ) -> LiveRecording:
        """Record what the channel hears from its far end."""
        data = await self._call(
            "POST",
            f"/channels/{_q(channel_id)}/record",
            name=name,
            format=format,
            maxDurationSeconds=max_duration_seconds,
            maxSilenceSeconds=max_silence_seconds,
            ifExists=if_exists,
            beep=beep,
            terminateOn=terminate_on,
        )
        return LiveRecording.from_json(data)

    async def stop_recording(self, name: str) -> None:
        await self._call("POST", f"/recordings/live/{_q(name)}/stop")

    async def stored_recording_file(self, name: str) -> bytes:
        response = await self._request("GET", f"/recordings/stored/{_q(name)}/file")
        return response.content

    async def delete_stored_recording(self, name: str) -> bool:
        return await self._delete_if_exists(f"/recordings/stored/{_q(name)}")

    async def start_moh(self, channel_id: str, moh_class: str | None = None) -> None:
        await self._call("POST", f"/channels/{_q(channel_id)}/moh", mohClass=moh_class)

    async def stop_moh(self, channel_id: str) -> None:
        await self._call("DELETE", f"/channels/{_q(channel_id)}/moh")

    async def send_dtmf(
        self,
        channel_id: str,
        dtmf: str,
        *,
        before: int | None = None,
        between: int | None = None,
        duration: int | None = None,
        after: int | None = None,
    ) -> None:
        await self._call(
            "POST",
            f"/channels/{_q(channel_id)}/dtmf",
            dtmf=dtmf,
            before=before,
            between=between,
            duration=duration,
            after=after,
        )

    async def get_channel_var(self, channel_id: str, variable: str) -> str:
        data = await self._call("GET", f"/channels/{_q(channel_id)}/variable", variable=variable)
        return str(data.get("value", ""))

    async def set_channel_var(self, channel_id: str, variable: str, value: str) -> None:
        path = f"/channels/{_q(channel_id)}/variable"
        await self._call("POST", path, variable=variable, value=value)

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> None:
        await self._call(
            "POST",
            f"/channels/{_q(channel_id)}/continue",
            context=context,
            extension=extension,
            priority=priority,
            label=label,
        )

    async def mute(self, channel_id: str, direction: str = "both") -> None:
        await self._call("POST", f"/channels/{_q(channel_id)}/mute", direction=direction)

    async def unmute(self, channel_id: str, direction: str = "both") -> None:
        await self._call("DELETE", f"/channels/{_q(channel_id)}/mute", direction=direction)

    # -- bridges -------------------------------------------------------------------------

    async def create_bridge(
        self,
        type: str | Sequence[str] = "mixing",
        *,
        bridge_id: str | None = None,
        name: str | None = None,
    ) -> Bridge:
        data = await self._call("POST", "/bridges", type=type, bridgeId=bridge_id, name=name)
        return Bridge.from_json(data)

    async def get_bridge(self, bridge_id: str) -> Bridge:
        return Bridge.from_json(await self._call("GET", f"/bridges/{_q(bridge_id)}"))

    async def list_bridges(self) -> list[Bridge]:
        return [Bridge.from_json(b) for b in await self._call("GET", "/bridges")]

    async def add_channel(
        self,
        bridge_id: str,
        channel_ids: str | Sequence[str],
        *,
        role: str | None = None,
        absorb_dtmf: bool | None = None,
        mute: bool | None = None,
    ) -> None:
        await self._call(
            "POST",
            f"/bridges/{_q(bridge_id)}/addChannel",
            channel=channel_ids,
            role=role,
            absorbDTMF=absorb_dtmf,
            mute=mute,
        )

    async def remove_channel(self, bridge_id: str, channel_ids: str | Sequence[str]) -> None:
        await self._call("POST", f"/bridges/{_q(bridge_id)}/removeChannel", channel=channel_ids)

    async def destroy_bridge(self, bridge_id: str) -> bool:
        """Destroy a bridge; False (not an error) when it was already gone."""
        return await self._delete_if_exists(f"/bridges/{_q(bridge_id)}")

    async def start_bridge_moh(self, bridge_id: str, moh_class: str | None = None) -> None:
        await self._call("POST", f"/bridges/{_q(bridge_id)}/moh", mohClass=moh_class)

    async def stop_bridge_moh(self, bridge_id: str) -> None:
        await self._call("DELETE", f"/bridges/{_q(bridge_id)}/moh")

    async def play_on_bridge(
        self,
        bridge_id: str,
        media: str | Sequence[str],
        *,
        lang: str | None = None,
        playback_id: str | None = None,
    ) -> Playback:
        path = f"/bridges/{_q(bridge_id)}/play"
        data = await self._call("POST", path, media=media, lang=lang, playbackId=playback_id)
        return Playback.from_json(data)

    # -- playbacks -----------------------------------------------------------------------

    async def get_playback(self, playback_id: str) -> Playback:
        return Playback.from_json(await self._call("GET", f"/playbacks/{_q(playback_id)}"))

    async def stop_playback(self, playback_id: str) -> bool:
        """Stop a playback; False (not an error) when it had already finished."""
        return await self._delete_if_exists(f"/playbacks/{_q(playback_id)}")

    # -- applications --------------------------------------------------------------------

    async def list_applications(self) -> list[Application]:
        return [Application.from_json(a) for a in await self._call("GET", "/applications")]

    async def get_application(self, name: str | None = None) -> Application:
        path = f"/applications/{_q(name or self.config.app)}"
        return Application.from_json(await self._call("GET", path))

    async def subscribe(
        self, event_source: str | Sequence[str], app: str | None = None
    ) -> Application:
        """Subscribe ``app`` to e.g. ``"channel:ID"``, ``"bridge:ID"``, ``"deviceState:NAME"``."""
        path = f"/applications/{_q(app or self.config.app)}/subscription"
        return Application.from_json(await self._call("POST", path, eventSource=event_source))

    async def unsubscribe(
        self, event_source: str | Sequence[str], app: str | None = None
    ) -> Application:
        path = f"/applications/{_q(app or self.config.app)}/subscription"
        return Application.from_json(await self._call("DELETE", path, eventSource=event_source))

    # -- events --------------------------------------------------------------------------

    async def _offer_rest(self, rest: _RestOverWebSocket) -> None:
        """Use this socket for REST if Asterisk answers a ping on it; older ones stay silent."""
        try:
            answer = await rest.request("GET", "/asterisk/ping", {}, None)
        except AriUnavailable:
            log.info("ARI REST requests go over HTTP (no answer on the event WebSocket)")
            return
        if answer.get("status_code") == 200:
            self._rest = rest
            log.info("ARI REST requests go over the event WebSocket")

    def events_url(self, *, subscribe_all: bool = False) -> str:
        parts = urlsplit(self.config.base_url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        query = urlencode(
            {
                "app": self.config.app,
                "api_key": f"{self.config.username}:{self.config.password}",
                "subscribeAll": _fmt(subscribe_all),
            }
        )
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/events", query, ""))

    async def events(self, *, subscribe_all: bool = False) -> AsyncGenerator[StreamItem, None]:
        """Stream events forever, reconnecting with capped exponential back-off.

        Yields ``StreamConnected`` after each connect and ``StreamDisconnected`` after each
        loss or failed attempt. Ends only when the client is closed; break out of the loop or
        cancel the consuming task to stop (wrap in ``contextlib.aclosing`` to close the
        socket deterministically on ``break``).
        """
        cfg = self.config
        url = self.events_url(subscribe_all=subscribe_all)
        loop = asyncio.get_running_loop()
        delay = cfg.reconnect_initial
        attempt = 0
        down = False  # whether the outage has already been logged at WARNING
        while not self._closing.is_set():
            attempt += 1
            connected_at: float | None = None
            log.debug("ARI event stream: connect attempt %d", attempt)
            try:
                async with connect(
                    url,
                    open_timeout=cfg.request_timeout,
                    ping_interval=cfg.ping_interval,
                    ping_timeout=cfg.request_timeout,
                    close_timeout=cfg.request_timeout,
                ) as ws:
                    connected_at = loop.time()
                    self._sockets.add(ws)
                    rest = _RestOverWebSocket(ws, cfg.request_timeout)
                    frames: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
                    reader = asyncio.create_task(_read_frames(ws, rest, frames))
                    probe = (
                        asyncio.create_task(self._offer_rest(rest))
                        if cfg.rest_over_websocket
                        else None
                    )
                    try:
                        if down:
                            log.warning("ARI event stream reconnected (attempt %d)", attempt)
                        else:
                            log.info("ARI event stream connected to app %r", cfg.app)
                        down = False
                        yield StreamConnected(attempt)
                        while (item := await frames.get()) is not None:
                            if isinstance(item, BaseException):
                                raise item
                            yield item
                        reason = f"closed by Asterisk (code {ws.close_code})"
                    finally:
                        rest.close("the event stream ended")
                        if self._rest is rest:
                            self._rest = None
                        for task in (reader, probe):
                            if task is not None:
                                task.cancel()
                        self._sockets.discard(ws)
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = str(exc) or type(exc).__name__
            if self._closing.is_set():
                return
            # A connection that stayed up counts as recovery; a flapping one keeps backing off.
            if connected_at is not None and loop.time() - connected_at >= cfg.reconnect_max:
                delay = cfg.reconnect_initial
            retry_in = min(delay, cfg.reconnect_max) * random.uniform(0.9, 1.0)
            level = logging.DEBUG if down else logging.WARNING
            log.log(level, "ARI event stream down (%s); retrying in %.1fs", reason, retry_in)
            down = True
            yield StreamDisconnected(reason, retry_in)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), retry_in)
            delay = min(delay * 2, cfg.reconnect_max)


async def _read_frames(
    ws: ClientConnection,
    rest: _RestOverWebSocket,
    frames: asyncio.Queue[Event | BaseException | None],
) -> None:
    """Hand REST responses to their requests and queue events; None marks the end."""
    try:
        async for frame in ws:
            data = _decode(frame)
            if data is None:
                continue
            if data.get("type") == "RESTResponse":
                rest.deliver(data)
                continue
            try:
                frames.put_nowait(parse_event(data))
            except ValueError as exc:
                log.warning("skipping unparseable ARI event frame (%s): %.200r", exc, frame)
    except (OSError, WebSocketException) as exc:
        frames.put_nowait(exc)
    frames.put_nowait(None)


def _decode(frame: str | bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(frame)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        log.warning("skipping unparseable ARI event frame (%s): %.200r", exc, frame)
        return None
