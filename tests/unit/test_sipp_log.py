"""Reading the SIP messages a sipp peer logged with -trace_msg (no sipp runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbserver.sipp import SippPeer

INVITE = """\
INVITE sip:alice@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5260;rport;branch=z9hG4bKPj7d3c1e2f
From: "Visitor" <sip:+4930123456@127.0.0.1>;tag=5e1b9c40
To: <sip:alice@127.0.0.1>
Contact: <sip:asterisk@127.0.0.1:5260>
Call-ID: 0f4c7a5e-3b1d-4c55-9d0e-2a6b8f1c9e77
CSeq: 28140 INVITE
Max-Forwards: 70
User-Agent: cbserver
Content-Type: application/sdp
Content-Length:   207

v=0
o=- 1732500000 1732500000 IN IP4 127.0.0.1
s=Asterisk
c=IN IP4 127.0.0.1
t=0 0
m=audio 31002 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
"""

RINGING = """\
SIP/2.0 180 Ringing
Via: SIP/2.0/UDP 127.0.0.1:5260;rport;branch=z9hG4bKPj7d3c1e2f
From: "Visitor" <sip:+4930123456@127.0.0.1>;tag=5e1b9c40
To: <sip:alice@127.0.0.1>;tag=31251SIPpTag011
Call-ID: 0f4c7a5e-3b1d-4c55-9d0e-2a6b8f1c9e77
CSeq: 28140 INVITE
Contact: <sip:127.0.0.1:5070;transport=UDP>
Content-Length: 0

"""

BYE = """\
BYE sip:127.0.0.1:5070;transport=UDP SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5260;rport;branch=z9hG4bKPj0a9b8c7d
From: "Visitor" <sip:+4930123456@127.0.0.1>;tag=5e1b9c40
To: <sip:alice@127.0.0.1>;tag=31251SIPpTag011
Call-ID: 0f4c7a5e-3b1d-4c55-9d0e-2a6b8f1c9e77
CSeq: 28141 BYE
Reason: Q.850;cause=16
Content-Length: 0

"""


def block(direction: str, message: str, stamp: str) -> str:
    """One entry as sipp writes it: the message keeps its CRLFs, sipp's own lines use LF."""
    wire = message.replace("\n", "\r\n")
    header = (
        f"UDP message received [{len(wire)}] bytes :"
        if direction == "received"
        else f"UDP message sent ({len(wire)} bytes):"
    )
    return f"{'-' * 47} 2026-11-25 {stamp}\n{header}\n\n{wire}\n"


@pytest.fixture
def peer(tmp_path: Path) -> SippPeer:
    peer = SippPeer(name="alice", port=5070, workdir=tmp_path, builtin="uas")
    peer.message_file.write_text(
        block("received", INVITE, "03:47:57.821948")
        + block("sent", RINGING, "03:47:57.822264")
        + block("received", BYE, "03:47:59.104117"),
        newline="",
    )
    return peer


def test_every_logged_message_is_read_in_order_with_its_direction(peer: SippPeer) -> None:
    messages = peer.messages()

    assert [(m.direction, m.start_line) for m in messages] == [
        ("received", "INVITE sip:alice@127.0.0.1:5070 SIP/2.0"),
        ("sent", "SIP/2.0 180 Ringing"),
        ("received", "BYE sip:127.0.0.1:5070;transport=UDP SIP/2.0"),
    ]


def test_requests_have_a_method_and_uri_and_responses_a_status(peer: SippPeer) -> None:
    invite, ringing, bye = peer.messages()

    assert (invite.method, invite.status, invite.request_uri) == (
        "INVITE",
        None,
        "sip:alice@127.0.0.1:5070",
    )
    assert (ringing.method, ringing.status) == (None, 180)
    assert (bye.method, bye.request_uri) == ("BYE", "sip:127.0.0.1:5070;transport=UDP")


def test_header_lookup_ignores_case_and_keeps_the_whole_value(peer: SippPeer) -> None:
    invite, _, bye = peer.messages()

    assert invite.header("call-id") == "0f4c7a5e-3b1d-4c55-9d0e-2a6b8f1c9e77"
    assert invite.header("FROM") == '"Visitor" <sip:+4930123456@127.0.0.1>;tag=5e1b9c40'
    assert invite.header("Contact") == "<sip:asterisk@127.0.0.1:5260>"
    assert bye.header("Reason") == "Q.850;cause=16"
    assert invite.header("Reason") is None
    # SDP lines look like headers ("a=rtpmap:0 ...") but are body, not headers.
    assert invite.header("a=rtpmap") is None


def test_body_is_the_sdp_and_only_the_sdp(peer: SippPeer) -> None:
    invite, ringing, _ = peer.messages()

    assert invite.body.startswith("v=0\n")
    assert invite.body.rstrip("\n").endswith("a=sendrecv")
    assert "m=audio 31002 RTP/AVP 0 8 101" in invite.body.splitlines()
    assert "\r" not in invite.body
    assert "SIP/2.0" not in invite.body  # nothing of the next message leaks in
    assert ringing.body == ""


def test_received_filters_by_direction_and_method(peer: SippPeer) -> None:
    assert [m.method for m in peer.received()] == ["INVITE", "BYE"]
    assert [m.header("CSeq") for m in peer.received("BYE")] == ["28141 BYE"]
    assert peer.received("CANCEL") == []


def test_peer_that_logged_nothing_has_no_messages(tmp_path: Path) -> None:
    peer = SippPeer(name="bob", port=5071, workdir=tmp_path, builtin="uas")

    assert peer.messages() == []


def test_each_message_keeps_the_time_sipp_logged_it(peer: SippPeer) -> None:
    times = [m.at for m in peer.messages()]
    assert all(t is not None for t in times)
    assert times == sorted(times), "in the order sipp logged them"
