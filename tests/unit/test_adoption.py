"""Worker names and adoption, on SQLite and PostgreSQL: one live process per name, and what a
worker started again under its name finds to take up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from cbserver import housekeeping, nodes
from cbserver.adoption import owned_calls
from cbserver.agents import add_agent
from cbserver.claims import LEASE, claim_next
from cbserver.intake import Submission, submit
from cbserver.models import AgentAssignment, RequestStatus, Subscriber, WorkerNode
from cbserver.states import transition

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


@pytest.fixture
def live_pid() -> Iterator[int]:
    """Another process of this host, alive while the test runs."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def held_by(
    session: Session, *, host: str, pid: int, seen: datetime, machine: str | None = None
) -> None:
    session.add(
        WorkerNode(
            name="node-1",
            instance="earlier",
            host=host,
            machine=machine or nodes.this_machine(),
            pid=pid,
            lease_seconds=LEASE.total_seconds(),
            started_at=seen,
            seen_at=seen,
        )
    )
    session.commit()


def test_a_name_nobody_holds_is_registered(session: Session) -> None:
    nodes.register(session, "node-1", "mine", NOW, LEASE)
    row = session.get_one(WorkerNode, "node-1")
    assert (row.instance, row.host, row.pid) == ("mine", socket.gethostname(), os.getpid())
    assert nodes.heartbeat(session, "node-1", "mine", NOW + timedelta(seconds=30))


def test_a_live_worker_under_the_same_name_is_refused_with_a_reason(
    session: Session, live_pid: int
) -> None:
    held_by(session, host=socket.gethostname(), pid=live_pid, seen=NOW - timedelta(seconds=5))
    with pytest.raises(nodes.WorkerNameTaken) as refused:
        nodes.register(session, "node-1", "mine", NOW, LEASE)
    message = str(refused.value)
    assert f"pid {live_pid}" in message
    assert "seen 5 s ago" in message
    assert "CBSERVER_WORKER_NAME" in message
    assert session.get_one(WorkerNode, "node-1").instance == "earlier"


def test_a_name_whose_process_died_on_this_host_is_taken_over_at_once(
    session: Session, dead_pid: int
) -> None:
    held_by(session, host=socket.gethostname(), pid=dead_pid, seen=NOW - timedelta(seconds=1))
    nodes.register(session, "node-1", "mine", NOW, LEASE)
    session.expire_all()
    assert session.get_one(WorkerNode, "node-1").instance == "mine"
    assert not nodes.heartbeat(session, "node-1", "earlier", NOW), "the dead one is displaced"


def test_a_name_held_on_another_host_waits_for_the_holders_lease(session: Session) -> None:
    held_by(
        session,
        host="elsewhere.example",
        machine="another boot",
        pid=1,
        seen=NOW - LEASE + timedelta(seconds=10),
    )
    with pytest.raises(nodes.WorkerNameTaken, match=r"already running on elsewhere\.example"):
        nodes.register(session, "node-1", "mine", NOW, lease=timedelta(seconds=5))
    with pytest.raises(nodes.WorkerNameTaken, match=r"already running on elsewhere\.example"):
        nodes.register(session, "node-1", "mine", NOW, LEASE)
    nodes.register(session, "node-1", "mine", NOW + timedelta(seconds=11), LEASE)
    session.expire_all()
    assert session.get_one(WorkerNode, "node-1").host == socket.gethostname()


def test_a_container_sharing_the_host_name_is_not_taken_for_a_dead_process(
    session: Session, dead_pid: int
) -> None:
    # Same host name, the same pid perhaps, but another pid namespace: nothing known of it.
    held_by(session, host=socket.gethostname(), pid=dead_pid, seen=NOW, machine="a container")
    with pytest.raises(nodes.WorkerNameTaken):
        nodes.register(session, "node-1", "mine", NOW, LEASE)


def test_a_clean_stop_lets_the_name_go(session: Session, live_pid: int) -> None:
    nodes.register(session, "node-1", "mine", NOW, LEASE)
    nodes.release(session, "node-1", "mine")
    session.expire_all()
    assert session.get(WorkerNode, "node-1") is None


@pytest.fixture
def shop(session: Session) -> Subscriber:
    subscriber = Subscriber(
        slug="shop", display_name="Shop", country="US", caller_id="+12015550100"
    )
    session.add(subscriber)
    for name in ("anna", "ben", "cleo", "dan"):
        agent = add_agent(session, name, contact=f"sip:{name}@127.0.0.1:5999").agent
        subscriber.assignments.append(AgentAssignment(agent=agent))
    session.commit()
    return subscriber


@pytest.mark.usefixtures("shop")
def test_a_restarted_worker_finds_the_calls_it_owned_and_does_not_carry(
    session: Session,
) -> None:
    ringing, talking, carried, others = (
        submit(
            session,
            Submission("shop", f"+1201555012{n}", consent=True),
            now=NOW + timedelta(seconds=n),
        ).request
        for n in range(4)
    )
    for _ in range(3):
        assert claim_next(session, "node-1", NOW + timedelta(seconds=5)) is not None
    assert claim_next(session, "node-2", NOW + timedelta(seconds=5)) is not None
    session.refresh(talking)
    transition(session, talking, RequestStatus.DIALING_VISITOR, "test")
    talking.attempts[-1].visitor_channel_id = "cb-talking-visitor"
    transition(session, talking, RequestStatus.CONNECTED, "test")
    session.commit()

    found = owned_calls(
        session, "node-1", carried={carried.id}, now=NOW + timedelta(seconds=6), lease=LEASE
    )

    assert [o.claim.request_id for o in found] == sorted([ringing.id, talking.id])
    by_id = {o.claim.request_id: o for o in found}
    first = by_id[ringing.id]
    assert first.status == RequestStatus.DIALING_AGENT
    assert first.agent_channel == f"cb-{ringing.id}-1-anna"
    assert first.agent_rung is not None
    assert first.agent_rung[1] == "anna", "anna was being rung"
    assert [name for _, name in first.agents_after] == ["ben", "cleo", "dan"]
    assert first.claim.first_channel is None, "every agent rung from now on is recorded"
    second = by_id[talking.id]
    assert (second.status, second.visitor_channel) == (
        RequestStatus.CONNECTED,
        "cb-talking-visitor",
    )
    assert others.id not in by_id, "another worker's call is not this one's to adopt"


@pytest.mark.usefixtures("shop")
def test_what_a_restarted_worker_takes_up_is_no_longer_released_as_stale(
    session: Session,
) -> None:
    request = submit(session, Submission("shop", "+12015550120", consent=True), now=NOW).request
    assert claim_next(session, "node-1", NOW) is not None
    back = NOW + LEASE + timedelta(seconds=30)  # the restart took longer than the lease

    [owned] = owned_calls(session, "node-1", carried=(), now=back, lease=LEASE)

    assert owned.claim.request_id == request.id
    assert housekeeping.release_stale_claims(session, back + timedelta(seconds=1)) == 0
    session.refresh(request)
    assert (request.status, request.claimed_by) == (RequestStatus.DIALING_AGENT, "node-1")
