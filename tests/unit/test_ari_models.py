"""Parsing of ARI JSON (shapes as documented for Asterisk 22) into models and events."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cbserver.ari import (
    Application,
    ApplicationReplaced,
    AsteriskInfo,
    Bridge,
    BridgeDestroyed,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEnteredBridge,
    ChannelHangupRequest,
    ChannelLeftBridge,
    ChannelStateChange,
    ChannelUserevent,
    ChannelVarset,
    DeviceStateChanged,
    Dial,
    Event,
    Module,
    Playback,
    PlaybackFinished,
    RecordingFinished,
    StasisEnd,
    StasisStart,
    StreamConnected,
    StreamDisconnected,
    StreamItem,
    UnknownEvent,
    parse_event,
)

CHANNEL: dict[str, Any] = {
    "id": "1732500000.42",
    "name": "PJSIP/alice-0000002a",
    "state": "Ring",
    "protocol_id": "5b1c8a2e-11f0-4c1d-9a3b-0242ac120002",
    "caller": {"name": "Alice", "number": "1001"},
    "connected": {"name": "", "number": ""},
    "accountcode": "",
    "dialplan": {
        "context": "from-internal",
        "exten": "500",
        "priority": 2,
        "app_name": "Stasis",
        "app_data": "myapp,inbound,42",
    },
    "creationtime": "2024-11-25T10:00:00.123+0000",
    "language": "en",
    "caller_rdnis": "",
}

BRIDGE: dict[str, Any] = {
    "id": "b1f4c2de-2a4b-4f6e-8d0c-1a2b3c4d5e6f",
    "technology": "simple_bridge",
    "bridge_type": "mixing",
    "bridge_class": "stasis",
    "creator": "Stasis",
    "name": "call-42",
    "channels": ["1732500000.42", "1732500001.43"],
    "creationtime": "2024-11-25T10:00:01.000+0000",
    "video_mode": "none",
}

PLAYBACK: dict[str, Any] = {
    "id": "pb-1",
    "media_uri": "sound:hello-world",
    "target_uri": "channel:1732500000.42",
    "language": "en",
    "state": "done",
}


def _event(type_: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "timestamp": "2024-11-25T10:00:02.456+0000",
        "asterisk_id": "02:42:ac:12:00:02",
        "application": "myapp",
        **fields,
    }


def test_channel_from_json_full() -> None:
    ch = Channel.from_json({**CHANNEL, "channelvars": {"CALLBACK_ID": "7", "N": 3}})
    assert ch.id == "1732500000.42"
    assert ch.name == "PJSIP/alice-0000002a"
    assert ch.state == "Ring"
    assert ch.caller.name == "Alice"
    assert ch.caller.number == "1001"
    assert ch.connected.number == ""
    assert ch.dialplan.context == "from-internal"
    assert ch.dialplan.priority == 2
    assert ch.dialplan.app_data == "myapp,inbound,42"
    assert ch.creationtime == "2024-11-25T10:00:00.123+0000"
    assert ch.language == "en"
    assert ch.channelvars == {"CALLBACK_ID": "7", "N": "3"}
    assert ch.protocol_id.startswith("5b1c8a2e")


def test_channel_tolerates_missing_optional_and_extra_keys() -> None:
    ch = Channel.from_json({"id": "x", "name": "Local/a@b-0001;1", "future_field": [1, 2]})
    assert ch.id == "x"
    assert ch.state == ""
    assert ch.caller.number == ""
    assert ch.dialplan.exten == ""
    assert ch.channelvars == {}


def test_channel_without_id_is_rejected() -> None:
    with pytest.raises(KeyError):
        Channel.from_json({"name": "PJSIP/x"})


def test_bridge_and_playback() -> None:
    bridge = Bridge.from_json(BRIDGE)
    assert bridge.bridge_type == "mixing"
    assert bridge.technology == "simple_bridge"
    assert bridge.channels == ("1732500000.42", "1732500001.43")
    assert bridge.name == "call-42"
    assert bridge.creator == "Stasis"
    pb = Playback.from_json(PLAYBACK)
    assert (pb.id, pb.state, pb.media_uri, pb.target_uri) == (
        "pb-1",
        "done",
        "sound:hello-world",
        "channel:1732500000.42",
    )
    assert pb.next_media_uri is None


def test_asterisk_info_keeps_raw() -> None:
    raw = {
        "build": {
            "os": "Linux",
            "kernel": "6.1.0-26-amd64",
            "machine": "x86_64",
            "options": "BUILD_NATIVE, OPTIONAL_API",
            "date": "2024-11-01 10:00:00 UTC",
            "user": "root",
        },
        "system": {"version": "22.1.0", "entity_id": "02:42:ac:12:00:02"},
        "config": {
            "name": "pbx1",
            "default_language": "en",
            "setid": {"user": "asterisk", "group": "asterisk"},
        },
        "status": {
            "startup_time": "2024-11-25T09:00:00.000+0000",
            "last_reload_time": "2024-11-25T09:30:00.000+0000",
        },
    }
    info = AsteriskInfo.from_json(raw)
    assert info.version == "22.1.0"
    assert info.entity_id == "02:42:ac:12:00:02"
    assert info.system_name == "pbx1"
    assert info.default_language == "en"
    assert info.startup_time == "2024-11-25T09:00:00.000+0000"
    assert info.reload_time == "2024-11-25T09:30:00.000+0000"
    assert info.raw["build"]["machine"] == "x86_64"
    # ?only=status returns just that section
    partial = AsteriskInfo.from_json({"status": raw["status"]})
    assert partial.version == ""
    assert partial.startup_time == "2024-11-25T09:00:00.000+0000"


def test_module_and_application() -> None:
    mod = Module.from_json(
        {
            "name": "res_ari_channels.so",
            "description": "RESTful API module - Channel resources",
            "use_count": 0,
            "status": "Running",
            "support_level": "core",
        }
    )
    assert mod == Module(
        "res_ari_channels.so", "RESTful API module - Channel resources", 0, "Running", "core"
    )
    app = Application.from_json(
        {
            "name": "myapp",
            "channel_ids": ["1732500000.42"],
            "bridge_ids": [],
            "endpoint_ids": ["PJSIP/alice"],
            "device_names": [],
            "events_allowed": [],
            "events_disallowed": [],
        }
    )
    assert app.name == "myapp"
    assert app.channel_ids == ("1732500000.42",)
    assert app.endpoint_ids == ("PJSIP/alice",)
    assert app.bridge_ids == ()


def test_stasis_start() -> None:
    ev = parse_event(_event("StasisStart", args=["inbound", "42"], channel=CHANNEL))
    assert isinstance(ev, StasisStart)
    assert ev.type == "StasisStart"
    assert ev.application == "myapp"
    assert ev.timestamp == "2024-11-25T10:00:02.456+0000"
    assert ev.asterisk_id == "02:42:ac:12:00:02"
    assert ev.args == ("inbound", "42")
    assert ev.channel.id == "1732500000.42"
    assert ev.replace_channel is None
    assert ev.raw["args"] == ["inbound", "42"]


def test_stasis_start_with_replace_channel() -> None:
    other = {**CHANNEL, "id": "1732500009.50"}
    ev = parse_event(_event("StasisStart", args=[], channel=CHANNEL, replace_channel=other))
    assert isinstance(ev, StasisStart)
    assert ev.replace_channel is not None
    assert ev.replace_channel.id == "1732500009.50"


def test_channel_events() -> None:
    ev = parse_event(
        _event("ChannelDestroyed", cause=16, cause_txt="Normal Clearing", channel=CHANNEL)
    )
    assert isinstance(ev, ChannelDestroyed)
    assert (ev.cause, ev.cause_txt, ev.channel.name) == (16, "Normal Clearing", CHANNEL["name"])

    ev = parse_event(_event("ChannelHangupRequest", cause=16, soft=True, channel=CHANNEL))
    assert isinstance(ev, ChannelHangupRequest)
    assert (ev.cause, ev.soft) == (16, True)
    ev = parse_event(_event("ChannelHangupRequest", channel=CHANNEL))
    assert isinstance(ev, ChannelHangupRequest)
    assert (ev.cause, ev.soft) == (None, False)

    ev = parse_event(_event("ChannelDtmfReceived", digit="#", duration_ms=120, channel=CHANNEL))
    assert isinstance(ev, ChannelDtmfReceived)
    assert (ev.digit, ev.duration_ms) == ("#", 120)

    up = {**CHANNEL, "state": "Up"}
    ev = parse_event(_event("ChannelStateChange", channel=up))
    assert isinstance(ev, ChannelStateChange)
    assert ev.channel.state == "Up"

    ev = parse_event(_event("StasisEnd", channel=CHANNEL))
    assert isinstance(ev, StasisEnd)


def test_channel_varset_global_and_channel() -> None:
    ev = parse_event(_event("ChannelVarset", variable="GLOBALVAR", value="1"))
    assert isinstance(ev, ChannelVarset)
    assert ev.channel is None
    assert (ev.variable, ev.value) == ("GLOBALVAR", "1")
    ev = parse_event(_event("ChannelVarset", variable="X", value="y", channel=CHANNEL))
    assert isinstance(ev, ChannelVarset)
    assert ev.channel is not None
    assert ev.channel.id == CHANNEL["id"]


def test_bridge_events() -> None:
    ev = parse_event(_event("ChannelEnteredBridge", bridge=BRIDGE, channel=CHANNEL))
    assert isinstance(ev, ChannelEnteredBridge)
    assert ev.bridge.id == BRIDGE["id"]
    assert ev.channel is not None
    ev = parse_event(_event("ChannelLeftBridge", bridge=BRIDGE, channel=CHANNEL))
    assert isinstance(ev, ChannelLeftBridge)
    assert ev.channel.id == CHANNEL["id"]
    ev = parse_event(_event("BridgeDestroyed", bridge={**BRIDGE, "channels": []}))
    assert isinstance(ev, BridgeDestroyed)
    assert ev.bridge.channels == ()


def test_dial_device_state_playback_userevent() -> None:
    peer = {**CHANNEL, "id": "1732500001.43", "name": "PJSIP/bob-0000002b"}
    ev = parse_event(
        _event("Dial", peer=peer, caller=CHANNEL, dialstatus="ANSWER", dialstring="bob")
    )
    assert isinstance(ev, Dial)
    assert ev.peer.name == "PJSIP/bob-0000002b"
    assert ev.caller is not None
    assert (ev.dialstatus, ev.dialstring) == ("ANSWER", "bob")
    ev = parse_event(_event("Dial", peer=peer, dialstatus=""))
    assert isinstance(ev, Dial)
    assert (ev.caller, ev.dialstring) == (None, None)

    ev = parse_event(
        _event("DeviceStateChanged", device_state={"name": "PJSIP/alice", "state": "INUSE"})
    )
    assert isinstance(ev, DeviceStateChanged)
    assert (ev.device_name, ev.state) == ("PJSIP/alice", "INUSE")

    ev = parse_event(_event("PlaybackFinished", playback=PLAYBACK))
    assert isinstance(ev, PlaybackFinished)
    assert ev.playback.state == "done"

    ev = parse_event(
        _event("ChannelUserevent", eventname="Hello", channel=CHANNEL, userevent={"k": "v"})
    )
    assert isinstance(ev, ChannelUserevent)
    assert (ev.eventname, ev.userevent, ev.bridge) == ("Hello", {"k": "v"}, None)

    assert isinstance(parse_event(_event("ApplicationReplaced")), ApplicationReplaced)


def test_unknown_event_keeps_raw() -> None:
    data = _event("ChannelTalkingFinished", channel=CHANNEL, duration=1500)
    ev = parse_event(data)
    assert type(ev) is UnknownEvent
    assert ev.type == "ChannelTalkingFinished"
    assert ev.raw["duration"] == 1500


def test_malformed_known_event_raises_value_error() -> None:
    with pytest.raises(ValueError, match="StasisStart"):
        parse_event(_event("StasisStart", args=[]))  # no channel
    with pytest.raises(ValueError, match="ChannelLeftBridge"):
        parse_event(_event("ChannelLeftBridge", bridge=BRIDGE, channel="nope"))


def test_parse_does_not_mutate_input() -> None:
    data = _event("StasisStart", args=["a"], channel=CHANNEL)
    before = copy.deepcopy(data)
    parse_event(data)
    assert data == before


def _describe(item: StreamItem) -> str:
    match item:
        case StasisStart(channel, args):
            return f"start {channel.id} {','.join(args)}"
        case ChannelDtmfReceived(channel=ch, digit=d):
            return f"dtmf {ch.id} {d}"
        case ChannelDestroyed(_, cause, cause_txt):
            return f"destroyed {cause} {cause_txt}"
        case StreamConnected(attempt):
            return f"connected {attempt}"
        case StreamDisconnected(reason=reason, retry_in=retry):
            return f"down {reason} {retry}"
        case Event(type=t):
            return f"other {t}"
    return "?"


def test_events_are_matchable() -> None:
    assert _describe(parse_event(_event("StasisStart", args=["x", "y"], channel=CHANNEL))) == (
        "start 1732500000.42 x,y"
    )
    dtmf = parse_event(_event("ChannelDtmfReceived", digit="5", duration_ms=80, channel=CHANNEL))
    assert _describe(dtmf) == "dtmf 1732500000.42 5"
    destroyed = parse_event(
        _event("ChannelDestroyed", cause=17, cause_txt="User busy", channel=CHANNEL)
    )
    assert _describe(destroyed) == "destroyed 17 User busy"
    assert _describe(StreamConnected(2)) == "connected 2"
    assert _describe(StreamDisconnected("refused", 0.5)) == "down refused 0.5"
    assert _describe(parse_event(_event("ChannelTalkingStarted", channel=CHANNEL))) == (
        "other ChannelTalkingStarted"
    )


def test_recording_finished_carries_the_live_recording() -> None:
    event = parse_event(
        {
            "type": "RecordingFinished",
            "application": "myapp",
            "timestamp": "2024-11-25T10:00:05.000+0000",
            "recording": {
                "name": "ear",
                "format": "wav",
                "state": "done",
                "target_uri": "channel:s1",
                "duration": 2,
            },
        }
    )
    assert isinstance(event, RecordingFinished)
    assert (event.recording.name, event.recording.state, event.recording.duration) == (
        "ear",
        "done",
        2,
    )
