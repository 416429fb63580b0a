"""Immutable ARI data models, parsed leniently from Asterisk's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self


def _str(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return default if value is None else str(value)


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


def _int(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key)
    try:
        return default if value is None else int(value)
    except (TypeError, ValueError):
        return default


def _strs(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def _map(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class CallerId:
    name: str
    number: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(name=_str(data, "name"), number=_str(data, "number"))


@dataclass(frozen=True)
class DialplanCep:
    context: str
    exten: str
    priority: int
    app_name: str
    app_data: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            context=_str(data, "context"),
            exten=_str(data, "exten"),
            priority=_int(data, "priority"),
            app_name=_str(data, "app_name"),
            app_data=_str(data, "app_data"),
        )


@dataclass(frozen=True)
class Channel:
    id: str
    name: str
    state: str
    caller: CallerId
    connected: CallerId
    dialplan: DialplanCep
    creationtime: str
    language: str
    channelvars: dict[str, str] = field(default_factory=dict)
    accountcode: str = ""
    protocol_id: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            id=str(data["id"]),
            name=_str(data, "name"),
            state=_str(data, "state"),
            caller=CallerId.from_json(_map(data, "caller")),
            connected=CallerId.from_json(_map(data, "connected")),
            dialplan=DialplanCep.from_json(_map(data, "dialplan")),
            creationtime=_str(data, "creationtime"),
            language=_str(data, "language"),
            channelvars={str(k): str(v) for k, v in _map(data, "channelvars").items()},
            accountcode=_str(data, "accountcode"),
            protocol_id=_str(data, "protocol_id"),
        )


@dataclass(frozen=True)
class Bridge:
    id: str
    technology: str
    bridge_type: str
    bridge_class: str
    name: str
    channels: tuple[str, ...]
    creator: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            id=str(data["id"]),
            technology=_str(data, "technology"),
            bridge_type=_str(data, "bridge_type"),
            bridge_class=_str(data, "bridge_class"),
            name=_str(data, "name"),
            channels=_strs(data, "channels"),
            creator=_str(data, "creator"),
        )


@dataclass(frozen=True)
class Playback:
    id: str
    media_uri: str
    target_uri: str
    state: str
    language: str
    next_media_uri: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            id=str(data["id"]),
            media_uri=_str(data, "media_uri"),
            target_uri=_str(data, "target_uri"),
            state=_str(data, "state"),
            language=_str(data, "language"),
            next_media_uri=_opt_str(data, "next_media_uri"),
        )


@dataclass(frozen=True)
class LiveRecording:
    name: str
    format: str
    state: str
    target_uri: str
    duration: int | None = None
    cause: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        duration = data.get("duration")
        return cls(
            name=str(data["name"]),
            format=_str(data, "format"),
            state=_str(data, "state"),
            target_uri=_str(data, "target_uri"),
            duration=None if duration is None else _int(data, "duration"),
            cause=_opt_str(data, "cause"),
        )


@dataclass(frozen=True)
class AsteriskInfo:
    """GET /asterisk/info; every section is optional (``?only=``), so all fields may be ""."""

    version: str
    entity_id: str
    system_name: str
    default_language: str
    startup_time: str
    reload_time: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        system, config, status = (_map(data, k) for k in ("system", "config", "status"))
        return cls(
            version=_str(system, "version"),
            entity_id=_str(system, "entity_id"),
            system_name=_str(config, "name"),
            default_language=_str(config, "default_language"),
            startup_time=_str(status, "startup_time"),
            reload_time=_str(status, "last_reload_time"),
            raw=data,
        )


@dataclass(frozen=True)
class AsteriskPing:
    asterisk_id: str
    ping: str
    timestamp: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            asterisk_id=_str(data, "asterisk_id"),
            ping=_str(data, "ping"),
            timestamp=_str(data, "timestamp"),
        )


@dataclass(frozen=True)
class Module:
    name: str
    description: str
    use_count: int
    status: str
    support_level: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            name=str(data["name"]),
            description=_str(data, "description"),
            use_count=_int(data, "use_count"),
            status=_str(data, "status"),
            support_level=_str(data, "support_level"),
        )


@dataclass(frozen=True)
class Application:
    name: str
    channel_ids: tuple[str, ...]
    bridge_ids: tuple[str, ...]
    endpoint_ids: tuple[str, ...]
    device_names: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            name=str(data["name"]),
            channel_ids=_strs(data, "channel_ids"),
            bridge_ids=_strs(data, "bridge_ids"),
            endpoint_ids=_strs(data, "endpoint_ids"),
            device_names=_strs(data, "device_names"),
        )
