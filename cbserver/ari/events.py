"""Typed ARI WebSocket events, plus the stream's own connect/disconnect markers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeAlias

from .models import Bridge, Channel, LiveRecording, Playback, _int, _map, _opt_str, _str, _strs


def _base(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": _str(data, "type"),
        "application": _str(data, "application"),
        "timestamp": _str(data, "timestamp"),
        "asterisk_id": _opt_str(data, "asterisk_id"),
        "raw": data,
    }


def _opt_channel(data: Mapping[str, Any], key: str) -> Channel | None:
    value = data.get(key)
    return Channel.from_json(value) if isinstance(value, Mapping) else None


# kw_only because the base has a defaulted field; __match_args__ is set by hand so that
# positional patterns bind the interesting fields, e.g. ``case StasisStart(ch, args):``.
@dataclass(frozen=True, kw_only=True)
class Event:
    __match_args__ = ("type",)
    type: str
    application: str
    timestamp: str
    asterisk_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**_base(data))


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """Any event type this module has no class for; the payload is in ``raw``."""


@dataclass(frozen=True, kw_only=True)
class ApplicationReplaced(Event):
    """Another WebSocket took over this application; this stream gets no more events."""


@dataclass(frozen=True, kw_only=True)
class _ChannelEvent(Event):
    __match_args__ = ("channel",)
    channel: Channel

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**_base(data), channel=Channel.from_json(data["channel"]))


@dataclass(frozen=True, kw_only=True)
class StasisEnd(_ChannelEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ChannelCreated(_ChannelEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ChannelStateChange(_ChannelEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ChannelConnectedLine(_ChannelEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ChannelUnhold(_ChannelEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ChannelHold(_ChannelEvent):
    __match_args__ = ("channel", "musicclass")
    musicclass: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            channel=Channel.from_json(data["channel"]),
            musicclass=_opt_str(data, "musicclass"),
        )


@dataclass(frozen=True, kw_only=True)
class StasisStart(_ChannelEvent):
    __match_args__ = ("channel", "args")
    args: tuple[str, ...]
    replace_channel: Channel | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            channel=Channel.from_json(data["channel"]),
            args=_strs(data, "args"),
            replace_channel=_opt_channel(data, "replace_channel"),
        )


@dataclass(frozen=True, kw_only=True)
class ChannelDestroyed(_ChannelEvent):
    __match_args__ = ("channel", "cause", "cause_txt")
    cause: int
    cause_txt: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            channel=Channel.from_json(data["channel"]),
            cause=_int(data, "cause"),
            cause_txt=_str(data, "cause_txt"),
        )


@dataclass(frozen=True, kw_only=True)
class ChannelHangupRequest(_ChannelEvent):
    __match_args__ = ("channel", "cause", "soft")
    cause: int | None
    soft: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            channel=Channel.from_json(data["channel"]),
            cause=_int(data, "cause") if data.get("cause") is not None else None,
            soft=bool(data.get("soft", False)),
        )


@dataclass(frozen=True, kw_only=True)
class ChannelDtmfReceived(_ChannelEvent):
    __match_args__ = ("channel", "digit", "duration_ms")
    digit: str
    duration_ms: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            channel=Channel.from_json(data["channel"]),
            digit=_str(data, "digit"),
            duration_ms=_int(data, "duration_ms"),
        )


@dataclass(frozen=True, kw_only=True)
class ChannelVarset(Event):
    """``channel`` is None when a global variable changed."""

    __match_args__ = ("channel", "variable", "value")
    channel: Channel | None
    variable: str
    value: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            channel=_opt_channel(data, "channel"),
            variable=_str(data, "variable"),
            value=_str(data, "value"),
        )


@dataclass(frozen=True, kw_only=True)
class ChannelUserevent(Event):
    __match_args__ = ("eventname", "channel", "userevent")
    eventname: str
    channel: Channel | None
    bridge: Bridge | None
    userevent: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        bridge = data.get("bridge")
        return cls(
            **_base(data),
            eventname=_str(data, "eventname"),
            channel=_opt_channel(data, "channel"),
            bridge=Bridge.from_json(bridge) if isinstance(bridge, Mapping) else None,
            userevent=_map(data, "userevent"),
        )


@dataclass(frozen=True, kw_only=True)
class _BridgeEvent(Event):
    __match_args__ = ("bridge",)
    bridge: Bridge

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**_base(data), bridge=Bridge.from_json(data["bridge"]))


@dataclass(frozen=True, kw_only=True)
class BridgeCreated(_BridgeEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class BridgeDestroyed(_BridgeEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ChannelEnteredBridge(_BridgeEvent):
    """``channel`` is optional in the ARI schema, hence ``Channel | None``."""

    __match_args__ = ("bridge", "channel")
    channel: Channel | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            bridge=Bridge.from_json(data["bridge"]),
            channel=_opt_channel(data, "channel"),
        )


@dataclass(frozen=True, kw_only=True)
class ChannelLeftBridge(_BridgeEvent):
    __match_args__ = ("bridge", "channel")
    channel: Channel

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            bridge=Bridge.from_json(data["bridge"]),
            channel=Channel.from_json(data["channel"]),
        )


@dataclass(frozen=True, kw_only=True)
class _PlaybackEvent(Event):
    __match_args__ = ("playback",)
    playback: Playback

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**_base(data), playback=Playback.from_json(data["playback"]))


@dataclass(frozen=True, kw_only=True)
class PlaybackStarted(_PlaybackEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class PlaybackContinuing(_PlaybackEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class PlaybackFinished(_PlaybackEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class _RecordingEvent(Event):
    __match_args__ = ("recording",)
    recording: LiveRecording

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**_base(data), recording=LiveRecording.from_json(data["recording"]))


@dataclass(frozen=True, kw_only=True)
class RecordingStarted(_RecordingEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class RecordingFinished(_RecordingEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class RecordingFailed(_RecordingEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class Dial(Event):
    __match_args__ = ("peer", "caller", "dialstatus")
    peer: Channel
    caller: Channel | None
    dialstatus: str
    dialstring: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            **_base(data),
            peer=Channel.from_json(data["peer"]),
            caller=_opt_channel(data, "caller"),
            dialstatus=_str(data, "dialstatus"),
            dialstring=_opt_str(data, "dialstring"),
        )


@dataclass(frozen=True, kw_only=True)
class DeviceStateChanged(Event):
    __match_args__ = ("device_name", "state")
    device_name: str
    state: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        device = _map(data, "device_state")
        return cls(**_base(data), device_name=_str(device, "name"), state=_str(device, "state"))


_REGISTRY: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        StasisStart,
        StasisEnd,
        ChannelCreated,
        ChannelDestroyed,
        ChannelStateChange,
        ChannelHangupRequest,
        ChannelDtmfReceived,
        ChannelVarset,
        ChannelConnectedLine,
        ChannelHold,
        ChannelUnhold,
        ChannelUserevent,
        ChannelEnteredBridge,
        ChannelLeftBridge,
        BridgeCreated,
        BridgeDestroyed,
        PlaybackStarted,
        PlaybackContinuing,
        PlaybackFinished,
        RecordingStarted,
        RecordingFinished,
        RecordingFailed,
        Dial,
        DeviceStateChanged,
        ApplicationReplaced,
    )
}


def parse_event(data: Mapping[str, Any]) -> Event:
    """Parse one ARI event; raises ValueError when a known event lacks what it needs."""
    cls = _REGISTRY.get(_str(data, "type"), UnknownEvent)
    try:
        return cls.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed {data.get('type')!r} event: {exc!r}") from exc


@dataclass(frozen=True)
class StreamConnected:
    """Yielded by ``AriClient.events()`` after every successful (re)connect.

    ``attempt`` counts connection attempts since the stream started, so ``attempt > 1``
    means events may have been missed: reconcile state via the REST API.
    """

    attempt: int


@dataclass(frozen=True)
class StreamDisconnected:
    """Yielded by ``AriClient.events()`` when the WebSocket is lost or cannot be opened."""

    reason: str
    retry_in: float


StreamItem: TypeAlias = Event | StreamConnected | StreamDisconnected
