"""Agents' presence from AMI: the mapping of Asterisk's states, and what the watcher records;
the call detail records that bill a call-back's attempt."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cbserver import ami, db, nodes
from cbserver.agents import add_agent
from cbserver.ami import (
    AmiConfig,
    DatabasePresenceStore,
    PresenceWatcher,
    aor_of_contact,
    contact_present,
    presence_of,
)
from cbserver.claims import claim_next
from cbserver.clock import FakeClock
from cbserver.db import DatabaseThread
from cbserver.intake import Submission, submit
from cbserver.models import Agent, AgentAssignment, CallAttempt, Subscriber
from tests.e2e.harness import free_ports, until
from tests.unit.conftest import Run
from tests.unit.test_worker_scheduler import RecordingWorker

CONFIG = AmiConfig("127.0.0.1", 5038, "ami-test", "secret")
MOMENT = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)


class FakeStore:
    """Agents as the database holds them, and every write the watcher made."""

    def __init__(self, *names: str, unreachable: bool = False) -> None:
        self.presence: dict[str, str | None] = dict.fromkeys(names)
        self.writes: list[tuple[str, str]] = []
        self.billed: list[tuple[int, int]] = []
        self.unreachable = unreachable

    async def agents(self) -> dict[str, str | None]:
        return dict(self.presence)

    async def record(self, name: str, presence: str) -> None:
        if self.unreachable:
            raise OperationalError("UPDATE agents", {}, Exception("database is locked"))
        self.writes.append((name, presence))
        self.presence[name] = presence

    async def record_billable(self, attempt_id: int, seconds: int) -> None:
        self.billed.append((attempt_id, seconds))


def cdr(attempt: str, seconds: str, other: str = "PJSIP/trunk-00000001") -> dict[str, str]:
    return {
        "Event": "Cdr",
        "Channel": "PJSIP/alice-00000000",
        "DestinationChannel": other,
        "BillableSeconds": seconds,
        "CbserverAttempt": attempt,
    }


def device(name: str, state: str) -> dict[str, str]:
    return {"Event": "DeviceStateChange", "Device": name, "State": state}


def contact(aor: str, status: str, uri: str = "sip:x@127.0.0.1:5070") -> dict[str, str]:
    return {"Event": "ContactStatus", "AOR": aor, "URI": uri, "ContactStatus": status}


@pytest.mark.parametrize(
    ("state", "presence"),
    [
        ("NOT_INUSE", "available"),
        ("RINGING", "ringing"),
        ("RINGINUSE", "ringing"),
        ("INUSE", "in_use"),
        ("BUSY", "in_use"),
        ("ONHOLD", "in_use"),
        ("UNAVAILABLE", "offline"),
        ("INVALID", "offline"),
        ("UNKNOWN", "offline"),
        ("not_inuse", "available"),
    ],
)
def test_device_states_map_to_presence(state: str, presence: str) -> None:
    assert presence_of(state) == presence


@pytest.mark.parametrize(
    ("status", "present"),
    [
        ("Created", True),
        ("Reachable", True),
        ("Updated", True),
        ("NonQualified", True),
        ("Removed", False),
        ("Unreachable", False),
    ],
)
def test_contact_statuses_say_whether_the_phone_can_be_rung(status: str, present: bool) -> None:
    assert contact_present(status) is present


def test_a_contacts_aor_is_read_from_its_id() -> None:
    assert aor_of_contact("carol;@0c1f2e3d4b5a") == "carol"
    assert aor_of_contact("alice@@5a4b3c2d1e0f") == "alice"


async def test_watcher_records_only_changes_and_ignores_what_is_not_an_agent() -> None:
    store = FakeStore("alice", "bob")
    woken: list[tuple[str, str]] = []
    watcher = PresenceWatcher(CONFIG, store, lambda: woken.append(store.writes[-1]))
    # Asterisk at login: alice has a fixed contact (not listed: PJSIPShowContacts lists
    # registrations only) and is idle; bob has not registered.
    await watcher.reseed(
        contacts=[],
        device_states=[
            device("PJSIP/alice", "NOT_INUSE"),
            device("PJSIP/bob", "UNAVAILABLE"),
            device("PJSIP/trunk", "NOT_INUSE"),
        ],
    )
    for event in [
        contact("bob", "Created", "sip:bob@127.0.0.1:5072"),
        device("PJSIP/bob", "NOT_INUSE"),
        device("PJSIP/alice", "RINGING"),
        device("PJSIP/alice", "RINGING"),
        device("PJSIP/alice", "INUSE"),
        device("PJSIP/trunk", "INUSE"),
        device("PJSIP/stranger", "INUSE"),
        device("Local/alice@agents", "INUSE"),
        contact("bob", "Removed", "sip:bob@127.0.0.1:5072"),
        device("PJSIP/bob", "UNAVAILABLE"),
        device("PJSIP/alice", "NOT_INUSE"),
    ]:
        await watcher.handle(event)

    assert store.writes == [
        ("alice", "available"),
        ("bob", "offline"),
        ("bob", "available"),
        ("alice", "ringing"),
        ("alice", "in_use"),
        ("bob", "offline"),
        ("alice", "available"),
    ]
    assert set(store.presence) == {"alice", "bob"}
    # A phone free again may take a waiting call-back: the worker is told each time.
    assert woken == [("alice", "available"), ("bob", "available"), ("alice", "available")]


async def test_a_registered_phone_with_one_contact_left_stays_available() -> None:
    store = FakeStore("carol")
    watcher = PresenceWatcher(CONFIG, store)
    await watcher.reseed(contacts=[], device_states=[])
    await watcher.handle(contact("carol", "Created", "sip:carol@127.0.0.1:5080"))
    await watcher.handle(contact("carol", "Created", "sip:carol@127.0.0.1:5081"))
    await watcher.handle(contact("carol", "Removed", "sip:carol@127.0.0.1:5080"))
    assert store.presence["carol"] == "available"

    await watcher.handle(contact("carol", "Unreachable", "sip:carol@127.0.0.1:5081"))

    assert store.writes == [("carol", "available"), ("carol", "offline")]


async def test_a_registration_seen_at_login_going_away_makes_the_agent_offline() -> None:
    store = FakeStore("carol")
    watcher = PresenceWatcher(CONFIG, store)
    uri = "sip:carol@127.0.0.1:5080"
    await watcher.reseed(
        contacts=[
            {"Event": "ContactList", "ObjectName": "carol;@9f8e", "Uri": uri, "Status": "Unknown"}
        ],
        device_states=[device("PJSIP/carol", "NOT_INUSE")],
    )

    await watcher.handle(contact("carol", "Removed", uri))

    assert store.writes == [("carol", "available"), ("carol", "offline")]


async def test_a_presence_already_recorded_is_not_written_again_after_a_reconnect() -> None:
    store = FakeStore("alice")
    store.presence["alice"] = "available"
    watcher = PresenceWatcher(CONFIG, store)

    await watcher.reseed(
        contacts=[{"Event": "ContactList", "ObjectName": "alice@@ab12", "Status": "Unknown"}],
        device_states=[device("PJSIP/alice", "NOT_INUSE")],
    )

    assert store.writes == []


async def test_an_agent_added_while_watching_is_followed() -> None:
    store = FakeStore("alice")
    watcher = PresenceWatcher(CONFIG, store)
    await watcher.reseed(contacts=[], device_states=[])
    store.presence["dave"] = None

    await watcher.handle(contact("dave", "Created", "sip:dave@127.0.0.1:5090"))

    assert store.writes == [("dave", "available")]


async def test_an_unreachable_database_loses_no_change(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore("alice", unreachable=True)
    watcher = PresenceWatcher(CONFIG, store)
    await watcher.reseed(
        contacts=[{"Event": "ContactList", "ObjectName": "alice@@ab12", "Status": "Unknown"}],
        device_states=[device("PJSIP/alice", "NOT_INUSE")],
    )
    await watcher.handle(device("PJSIP/alice", "INUSE"))
    assert store.writes == []
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1

    store.unreachable = False
    await watcher.handle(device("PJSIP/alice", "INUSE"))

    assert store.writes == [("alice", "in_use")]


async def test_the_database_store_writes_presence_and_its_time(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        add_agent(session, "alice", contact="sip:alice@127.0.0.1:5070")
    moment = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    thread = DatabaseThread("test-presence")
    try:
        store = DatabasePresenceStore(sessions, thread, FakeClock(moment))
        assert await store.agents() == {"alice": None}
        await store.record("alice", "available")
        await store.record("nobody", "available")
    finally:
        thread.close()

    with sessions() as session:
        alice = session.scalars(select(Agent)).one()
        assert (alice.presence, alice.presence_at) == ("available", moment)


def alice_on_two_nodes(sessions: sessionmaker[Session]) -> None:
    """The agent alice, and two live worker nodes with a 30 s lease."""
    with sessions() as session:
        add_agent(session, "alice")
        for name in ("node-a", "node-b"):
            nodes.register(session, name, f"{name}-1", MOMENT, timedelta(seconds=30))


async def test_with_several_nodes_the_agent_is_as_the_node_that_sees_its_phone_says(
    sessions: sessionmaker[Session],
) -> None:
    """alice's softphone registers to node a; node b's Asterisk has never seen it."""
    alice_on_two_nodes(sessions)
    thread = DatabaseThread("test-presence")
    try:
        a = DatabasePresenceStore(sessions, thread, FakeClock(MOMENT), node="node-a")
        b = DatabasePresenceStore(sessions, thread, FakeClock(MOMENT), node="node-b")
        await a.record("alice", "available")
        await b.record("alice", "offline")
        overall = [presence(sessions)]
        await a.record("alice", "in_use")
        overall.append(presence(sessions))
        await a.record("alice", "offline")  # her phone unregistered
        overall.append(presence(sessions))
        assert await b.agents() == {"alice": "offline"}, "each node knows its own view"
        await a.record("alice", "in_use")
        # Node a is killed mid-call and not started again: silent past its 30 s lease, its
        # last view no longer holds alice busy once node b sees her phone free.
        later = DatabasePresenceStore(
            sessions, thread, FakeClock(MOMENT + timedelta(seconds=31)), node="node-b"
        )
        await later.record("alice", "available")
        overall.append(presence(sessions))
    finally:
        thread.close()

    assert overall == ["available", "in_use", "offline", "available"]


async def test_two_nodes_recording_at_once_leave_the_agent_as_their_views_add_up(
    sessions: sessionmaker[Session],
) -> None:
    """Each node writes on its own database thread, as two workers do."""
    alice_on_two_nodes(sessions)
    threads = [DatabaseThread(f"test-presence-{name}") for name in ("a", "b")]
    wrong: list[tuple[int, str | None]] = []
    try:
        a, b = (
            DatabasePresenceStore(sessions, thread, FakeClock(MOMENT), node=f"node-{name}")
            for thread, name in zip(threads, ("a", "b"), strict=True)
        )
        for round_ in range(60):
            # Node a sees her phone busy as node b sees it free, then the other way round.
            busy, free = (a, b) if round_ % 2 else (b, a)
            await asyncio.gather(busy.record("alice", "in_use"), free.record("alice", "available"))
            if (overall := presence(sessions)) != "in_use":
                wrong.append((round_, overall))
    finally:
        for thread in threads:
            thread.close()

    assert wrong == [], "in use on one node is in use, whichever node wrote last"


def presence(sessions: sessionmaker[Session]) -> str | None:
    with sessions() as session:
        return session.scalars(select(Agent.presence)).one()


def test_agent_list_shows_presence_and_since_when_once_seen(cbserver: Run, tmp_path: Path) -> None:
    cbserver("agent", "add", "alice", "--contact", "sip:alice@127.0.0.1:5070")
    cbserver("agent", "add", "bob")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cb.sqlite3'}")
    try:
        with db.make_session_factory(engine)() as session:
            alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
            alice.presence = "in_use"
            alice.presence_at = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
            session.commit()
    finally:
        engine.dispose()

    alice_line, bob_line = cbserver("agent", "list").stdout.splitlines()

    assert alice_line.split()[1] == "on_call", "her phone is busy with a call of its own"
    assert alice_line.split()[-6:] == [
        "sip:alice@127.0.0.1:5070",
        "phone",
        "in_use",
        "since",
        "2026-11-28",
        "04:00Z",
    ]
    assert bob_line.split()[-1] == "registers", "not seen yet: nothing said"


async def test_an_unreachable_ami_is_said_once_while_it_is_tried_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ami, "RECONNECT_SECONDS", 1)
    attempts: list[object] = []
    connect = ami._WatchingManager.connect

    def counted(manager: ami._WatchingManager) -> object:
        attempts.append(manager)
        return connect(manager)

    monkeypatch.setattr(ami._WatchingManager, "connect", counted)
    nobody = AmiConfig("127.0.0.1", free_ports(1, socket.SOCK_STREAM)[0], "ami-test", "secret")
    watching = asyncio.create_task(PresenceWatcher(nobody, FakeStore("alice")).run())
    try:
        await until(lambda: len(attempts) >= 3, within=5, message="three tries")
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching

    # caplog hears non-propagating loggers too; panoramisk's own lines reach no handler.
    assert not logging.getLogger("cbserver.ami.panoramisk").propagate
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name != "cbserver.ami.panoramisk"
    ]
    assert len(warnings) == 1, warnings
    assert "AMI at 127.0.0.1" in warnings[0]
    assert "unreachable" in warnings[0]


async def test_a_worker_whose_ami_is_away_still_claims_and_stops_cleanly(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    with sessions() as session:
        shop = Subscriber(slug="shop", display_name="Shop", country="US", caller_id="+12015550100")
        session.add(shop)
        anna = add_agent(session, "anna", contact="sip:anna@127.0.0.1:5999").agent
        shop.assignments.append(AgentAssignment(agent=anna))
        session.commit()
    nobody = AmiConfig("127.0.0.1", free_ports(1, socket.SOCK_STREAM)[0], "ami-test", "secret")
    worker = RecordingWorker(sessions, ami=nobody)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        with sessions() as session:
            request_id = submit(
                session, Submission("shop", "+12015550123", consent=True), now=datetime.now(UTC)
            ).request.id
        worker.wake()
        await until(lambda: worker.dialled == [request_id], within=5, message="the call placed")
        await until(
            lambda: any("AMI at 127.0.0.1" in r.getMessage() for r in caplog.records),
            message="the AMI warning",
        )
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)


async def test_a_bridged_call_back_record_bills_its_attempt_and_nothing_else_does() -> None:
    store = FakeStore("alice")
    watcher = PresenceWatcher(CONFIG, store)
    for event in [
        cdr("7", "0", other=""),  # the visitor's own record, closed at the bridge
        cdr("7", "184"),  # the bridged legs
        cdr("", "60"),  # a call that is no call-back
        cdr("8", ""),  # a record without its seconds
    ]:
        await watcher.handle(event)

    assert store.billed == [(7, 184)]
    assert store.writes == [], "a record is no presence"


async def test_the_database_store_keeps_the_longest_record_of_an_attempt(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        agent = add_agent(session, "alice", contact="sip:alice@127.0.0.1:5070")
        subscriber = Subscriber(
            slug="shop", display_name="Shop", country="US", caller_id="+12015550100"
        )
        subscriber.assignments.append(AgentAssignment(agent=agent.agent))
        session.add(subscriber)
        session.commit()
        request = submit(session, Submission("shop", "+12015550123", consent=True)).request
        claim = claim_next(session, "worker-a", request.created_at)
        assert claim is not None
    thread = DatabaseThread("test-cdr")
    try:
        store = DatabasePresenceStore(sessions, thread)
        await store.record_billable(claim.attempt_id, 184)
        await store.record_billable(claim.attempt_id, 3)  # heard by a second worker
        await store.record_billable(claim.attempt_id + 1000, 9)  # no such attempt: ignored
    finally:
        thread.close()

    with sessions() as session:
        assert session.get_one(CallAttempt, claim.attempt_id).billable_seconds == 184
