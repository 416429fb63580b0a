"""An agent's phone and the trunk, called through ARI and bridged: the core of every call-back."""

from __future__ import annotations

from collections.abc import Callable

from cbserver.ari import (
    AriClient,
    ChannelDestroyed,
    ChannelEnteredBridge,
    StasisEnd,
    StasisStart,
)
from cbserver.sipp import SippPeer
from tests.e2e.conftest import TEST_APP, Ports
from tests.e2e.harness import EventRecorder, until

VISITOR = "+14155550123"
NORMAL_CLEARING = 16


async def test_agent_and_trunk_legs_are_bridged_and_both_hang_up_cleanly(
    ari: AriClient,
    events: EventRecorder,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    alice = sipp("alice", ports.alice, "uas_answer.xml")
    # The visitor talks for two seconds and hangs up first, as visitors do.
    trunk = sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "2000")

    agent_leg = await ari.originate(
        "PJSIP/alice", app=TEST_APP, app_args=["agent"], caller_id=f"Visitor <{VISITOR}>"
    )
    visitor_leg = await ari.originate(
        f"PJSIP/{VISITOR}@trunk", app=TEST_APP, app_args=["visitor"], caller_id="Acme <+15550100>"
    )
    agent_start = await events.wait_for(StasisStart, agent_leg.id)
    visitor_start = await events.wait_for(StasisStart, visitor_leg.id)
    assert agent_start.args == ("agent",)
    assert visitor_start.args == ("visitor",)

    # (a) each peer received an INVITE; the trunk's Request-URI carries the dialled number.
    [agent_invite] = alice.received("INVITE")
    assert agent_invite.request_uri == f"sip:alice@127.0.0.1:{ports.alice}"
    assert VISITOR in (agent_invite.header("From") or "")
    [trunk_invite] = trunk.received("INVITE")
    assert trunk_invite.request_uri == f"sip:{VISITOR}@127.0.0.1:{ports.trunk}"

    # (b) the bridge held both channels.
    bridge = await ari.create_bridge("mixing", name="e2e-callback")
    await ari.add_channel(bridge.id, [agent_leg.id, visitor_leg.id])
    await events.wait_for(ChannelEnteredBridge, agent_leg.id)
    await events.wait_for(ChannelEnteredBridge, visitor_leg.id)
    held = await ari.get_bridge(bridge.id)
    assert set(held.channels) == {agent_leg.id, visitor_leg.id}

    # (c) the visitor hangs up; the application hangs up the agent; both end cleanly.
    await events.wait_for(StasisEnd, visitor_leg.id, within=10)
    assert await ari.hangup(agent_leg.id)
    visitor_gone = await events.wait_for(ChannelDestroyed, visitor_leg.id)
    agent_gone = await events.wait_for(ChannelDestroyed, agent_leg.id)
    assert visitor_gone.cause == NORMAL_CLEARING
    assert agent_gone.cause == NORMAL_CLEARING

    await until(lambda: alice.received("BYE"), message="the BYE at the agent's phone")
    sent_by_alice = [m.status for m in alice.messages() if m.direction == "sent"]
    assert sent_by_alice[-1] == 200, "the agent's phone answered the BYE with 200 OK"
    trunk_replies = [m.status for m in trunk.received() if m.status is not None]
    assert 200 in trunk_replies, "Asterisk answered the visitor's BYE with 200 OK"
    assert (await ari.get_bridge(bridge.id)).channels == ()
    assert await ari.list_channels() == []
