"""The agent-phone sipp scenarios do what they say against the real Asterisk.

Each scenario is an agent's phone (a sipp UAS, since Asterisk calls the agent) behaving one
way: accepting the call by pressing 1 during the whisper, being busy, letting it ring, or
answering and ignoring the whisper. The call flow relies on what Asterisk 22 reports for
each, so the tests also pin those events (the dial thread, the channel and the PJSIP thread
publish them, so only causal order holds: ``Dial('')`` before the final ``Dial``, and
``ChannelDestroyed`` last; a HangupRequest or a Ringing state change may come first):

- busy: ``Dial('')``, ``ChannelHangupRequest(cause 17)``, ``Dial('BUSY')``, then
  ``ChannelDestroyed(cause 17 'User busy')``; the channel never reaches StasisStart.
- no answer: ``Dial('')``, ``ChannelStateChange(Ringing)``, ``Dial('RINGING')``, then at
  the originate timeout ``ChannelDestroyed(cause 19 'User alerting, no answer')``; no
  ``NOANSWER`` dial status, no ChannelHangupRequest, no StasisStart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cbserver.ari import (
    AriClient,
    ChannelDestroyed,
    ChannelDtmfReceived,
    Dial,
    Event,
    StasisStart,
)
from cbserver.sipp import SipMessage, SippPeer
from tests.e2e.conftest import TEST_APP, Ports
from tests.e2e.harness import EventRecorder, until

AGENT = "PJSIP/alice"
WHISPER = "sound:demo-congrats"
NORMAL_CLEARING = 16
USER_BUSY = 17
NO_ANSWER = 19


def flow(peer: SippPeer) -> list[str]:
    """The peer's SIP messages in order: ``">INVITE"`` received, ``"<200 INFO"`` sent."""
    lines = []
    for message in peer.messages():
        arrow = ">" if message.direction == "received" else "<"
        if message.method is not None:
            lines.append(f"{arrow}{message.method}")
        else:
            method = (message.header("CSeq") or "").split()[-1]
            lines.append(f"{arrow}{message.status} {method}")
    return lines


def errors(peer: SippPeer) -> str:
    """What sipp logged as unexpected (the -error_file): empty when the scenario held."""
    log = peer.workdir / f"{peer.name}.errors.log"
    return log.read_text(errors="replace") if log.exists() else ""


def story(events: EventRecorder, channel_id: str) -> list[str]:
    """The events about one channel, Dial events included (they name it as the peer)."""

    def about(event: Event) -> bool:
        channel = getattr(event, "peer", None) or getattr(event, "channel", None)
        return getattr(channel, "id", None) == channel_id

    found: list[str] = []
    for event in filter(about, events.events):
        if isinstance(event, Dial):
            found.append(f"Dial({event.dialstatus})")
        elif isinstance(event, ChannelDestroyed):
            found.append(f"ChannelDestroyed({event.cause})")
        elif event.type == "ChannelHangupRequest":
            found.append(f"ChannelHangupRequest({event.raw.get('cause')})")
        elif event.type == "ChannelStateChange":
            found.append(f"ChannelStateChange({event.raw['channel']['state']})")
        else:
            found.append(event.type)
    return found


def assert_story(found: list[str], expected: list[str]) -> None:
    """``found`` holds the events of ``expected`` in causal order: the Dial events in turn and
    ChannelDestroyed last; the others race between Asterisk's threads."""
    assert sorted(found) == sorted(expected), found
    assert found[-1] == expected[-1], found
    dials = [e for e in expected if e.startswith("Dial(")]
    assert [e for e in found if e.startswith("Dial(")] == dials, found


async def hang_up_and_check_bye(
    ari: AriClient, events: EventRecorder, peer: SippPeer, channel_id: str
) -> None:
    assert await ari.hangup(channel_id)
    gone = await events.wait_for(ChannelDestroyed, channel_id)
    assert gone.cause == NORMAL_CLEARING
    await until(lambda: "<200 BYE" in flow(peer), message=lambda: f"200 to BYE; {flow(peer)}")


def the_info(peer: SippPeer) -> SipMessage:
    [info] = [m for m in peer.messages() if m.direction == "sent" and m.method == "INFO"]
    return info


async def test_agent_accepts_presses_1_during_the_whisper(
    ari: AriClient, events: EventRecorder, sipp: Callable[..., SippPeer], ports: Ports
) -> None:
    alice = sipp("alice", ports.alice, "agent_accepts.xml", "-d", "1500")

    channel = await ari.originate(AGENT, app=TEST_APP, timeout=5)
    answered = await events.wait_for(StasisStart, channel.id)
    await ari.play(channel.id, WHISPER)

    dtmf = await events.wait_for(ChannelDtmfReceived, channel.id, within=5)
    assert dtmf.digit == "1"
    assert dtmf.timestamp > answered.timestamp
    [invite] = alice.received("INVITE")
    info = the_info(alice)
    assert info.header("Content-Type") == "application/dtmf-relay"
    assert info.body.split() == ["Signal=1", "Duration=160"]
    assert info.header("Call-ID") == invite.header("Call-ID")
    assert info.request_uri in (invite.header("Contact") or "")
    # The DTMF event can overtake sipp's note of Asterisk's 200 to its INFO.
    expected = [">INVITE", "<180 INVITE", "<200 INVITE", ">ACK", "<INFO", ">200 INFO"]
    await until(lambda: flow(alice) == expected, within=2, message=lambda: f"{flow(alice)}")

    # The phone stays in the call until the other side hangs up.
    assert alice.running()
    await hang_up_and_check_bye(ari, events, alice, channel.id)
    assert flow(alice)[-2:] == [">BYE", "<200 BYE"]
    assert errors(alice) == ""


async def test_agent_ignores_the_whisper_and_sends_no_digit(
    ari: AriClient, events: EventRecorder, sipp: Callable[..., SippPeer], ports: Ports
) -> None:
    alice = sipp("alice", ports.alice, "agent_ignores_whisper.xml")

    channel = await ari.originate(AGENT, app=TEST_APP, timeout=5)
    await events.wait_for(StasisStart, channel.id)
    await ari.play(channel.id, WHISPER)
    await asyncio.sleep(3)  # nothing to wait for: the point is that no digit comes

    assert events.of_type(ChannelDtmfReceived) == []
    assert flow(alice) == [">INVITE", "<180 INVITE", "<200 INVITE", ">ACK"]
    await hang_up_and_check_bye(ari, events, alice, channel.id)
    assert flow(alice)[-2:] == [">BYE", "<200 BYE"]
    assert errors(alice) == ""


async def test_busy_agent_is_destroyed_with_cause_17_and_never_enters_stasis(
    ari: AriClient, events: EventRecorder, sipp: Callable[..., SippPeer], ports: Ports
) -> None:
    alice = sipp("alice", ports.alice, "agent_busy.xml")

    # Twice through one peer: the scenario loops, one busy call per INVITE.
    for attempt in (1, 2):
        channel = await ari.originate(AGENT, app=TEST_APP, timeout=5)
        gone = await events.wait_for(ChannelDestroyed, channel.id, within=5)
        assert (gone.cause, gone.cause_txt) == (USER_BUSY, "User busy")
        assert_story(
            story(events, channel.id),
            [
                "Dial()",
                f"ChannelHangupRequest({USER_BUSY})",
                "Dial(BUSY)",
                f"ChannelDestroyed({USER_BUSY})",
            ],
        )
        assert flow(alice) == [">INVITE", "<486 INVITE", ">ACK"] * attempt

    assert events.of_type(StasisStart) == []
    assert await ari.list_channels() == []
    assert errors(alice) == ""


async def test_unanswered_agent_is_cancelled_at_the_timeout_with_cause_19(
    ari: AriClient, events: EventRecorder, sipp: Callable[..., SippPeer], ports: Ports
) -> None:
    alice = sipp("alice", ports.alice, "agent_no_answer.xml")

    started = time.monotonic()
    channel = await ari.originate(AGENT, app=TEST_APP, timeout=2)
    await until(lambda: alice.received("INVITE"), message="the INVITE at the agent's phone")
    assert alice.received("CANCEL") == [], "the phone rings first"

    gone = await events.wait_for(ChannelDestroyed, channel.id, within=6)
    waited = time.monotonic() - started
    assert 1.5 < waited < 4, f"cancelled after {waited:.1f} s, not at the 2 s timeout"
    assert (gone.cause, gone.cause_txt) == (NO_ANSWER, "User alerting, no answer")
    assert_story(
        story(events, channel.id),
        [
            "Dial()",
            "ChannelStateChange(Ringing)",
            "Dial(RINGING)",
            f"ChannelDestroyed({NO_ANSWER})",
        ],
    )
    assert events.of_type(StasisStart) == []

    await until(lambda: alice.received("ACK"), message="the ACK to the 487")
    assert flow(alice) == [
        ">INVITE",
        "<180 INVITE",
        ">CANCEL",
        "<200 CANCEL",
        "<487 INVITE",
        ">ACK",
    ]
    assert await ari.list_channels() == []
    assert errors(alice) == ""
