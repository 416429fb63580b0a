"""The worker as a process of its own, killed with -9: nothing is lost and nobody is called twice.

One installation (its own Asterisk, database, trunk and agent peers); the worker is
``python -m cbserver worker`` under a stable name, started again under that name after the kill.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cbserver.claims import IN_CALL
from cbserver.models import CallbackRequest, WorkerNode
from cbserver.sipp import SippPeer
from tests.e2e.harness import (
    Tally,
    dialled_number,
    dials,
    free_ports,
    requests_by_phone,
    statuses,
    until,
)
from tests.e2e.nodes import Cluster, Node, WorkerProcess, add_business, ask

SLUG = "crash"
VISITOR = "+12015550140"
# Eight asked for before the kill, two while the worker is dead.
BEFORE = [f"+120155502{n:02d}" for n in range(8)]
WHILE_DEAD = [f"+120155502{n:02d}" for n in range(8, 10)]


@dataclass(frozen=True)
class Installation:
    sessions: sessionmaker[Session]
    node: Node
    worker: WorkerProcess
    alice_port: int


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    """One node whose business is served by agent alice alone, so calls come one at a time."""
    with Cluster(tmp_path / "cluster") as cluster:
        [alice_port] = free_ports(1)
        add_business(cluster.sessions, SLUG, "Plumber", ["alice"], alice_port)
        node = cluster.node("crash")
        node.start_asterisk()
        worker = cluster.worker(node, "crash-worker")
        yield Installation(cluster.sessions, node, worker, alice_port)


def status_of(sessions: sessionmaker[Session], request_id: str) -> str:
    with sessions() as session:
        return session.get_one(CallbackRequest, request_id).status


def request_of(sessions: sessionmaker[Session], request_id: str) -> CallbackRequest:
    with sessions() as session:
        request = session.get_one(CallbackRequest, request_id)
        _ = request.attempts, request.events  # loaded while the session is open
        return request


async def reaches(
    sessions: sessionmaker[Session],
    request_id: str,
    status: str,
    worker: WorkerProcess,
    within: float,
) -> None:
    await until(
        lambda: status_of(sessions, request_id) == status,
        within=within,
        interval=0.05,
        message=lambda: f"{status}; it is {status_of(sessions, request_id)}\n{worker.log_tail()}",
    )


async def test_a_worker_process_places_a_call_back(
    installation: Installation, sipp: Callable[..., SippPeer]
) -> None:
    sessions, node, worker = installation.sessions, installation.node, installation.worker
    sipp("alice", installation.alice_port, "agent_accepts.xml", "-d", "500")
    trunk = sipp("trunk", node.trunk_port, "uas_answer_hangup.xml", "-d", "500")
    worker.start()
    await worker.wait_registered()

    request_id = ask(node.web(), SLUG, VISITOR)

    await reaches(sessions, request_id, "completed", worker, within=30)
    assert [dialled_number(invite) for invite in dials(trunk)] == [VISITOR], worker.log_tail()
    [attempt] = request_of(sessions, request_id).attempts
    assert attempt.outcome == "answered"
    assert worker.stop() == 0, worker.log_tail()
    with sessions() as session:
        assert session.get(WorkerNode, worker.name) is None, "a clean stop lets the name go"


@pytest.mark.slow
async def test_killed_while_bridged_the_restarted_worker_adopts_the_call_and_completes_it(
    installation: Installation, sipp: Callable[..., SippPeer]
) -> None:
    sessions, node, worker = installation.sessions, installation.node, installation.worker
    alice = sipp("alice", installation.alice_port, "agent_accepts.xml", "-d", "1000")
    # The visitor talks for 12 s, then hangs up: the kill and the restart (2 s here) fall into
    # the talk, with room to spare on a loaded machine.
    trunk = sipp("trunk", node.trunk_port, "uas_answer_hangup.xml", "-d", "12000")
    worker.start()
    await worker.wait_registered()
    request_id = ask(node.web(), SLUG, VISITOR)
    await reaches(sessions, request_id, "connected", worker, within=30)

    worker.kill()

    [attempt] = request_of(sessions, request_id).attempts
    legs = {attempt.agent_channel_id, attempt.visitor_channel_id}
    bridged = [set(bridge["channels"]) for bridge in node.bridges()]
    assert bridged == [legs], "the talk goes on in Asterisk without the worker"
    worker.start()
    await worker.wait_registered()
    assert status_of(sessions, request_id) == "connected", "the talk is not over yet"

    await reaches(sessions, request_id, "completed", worker, within=30)
    [hang_up] = [m for m in trunk.messages() if m.direction == "sent" and m.method == "BYE"]
    assert hang_up.at is not None
    visitor_hung_up = datetime.fromtimestamp(hang_up.at, UTC)
    request = request_of(sessions, request_id)
    [attempt] = request.attempts
    [completed] = [e.at for e in request.events if e.to_status == "completed"]
    assert attempt.outcome == "answered"
    assert attempt.ended_at is not None
    assert attempt.ended_at >= visitor_hung_up, "the call ended when the visitor hung up"
    assert completed >= visitor_hung_up, "completed when the visitor hung up, not before"
    await until(lambda: alice.received("BYE"), within=5, message="the agent's leg hung up")
    assert [dialled_number(invite) for invite in dials(trunk)] == [VISITOR]


@pytest.mark.slow
async def test_killed_with_a_queue_the_restarted_worker_serves_it_without_calling_anyone_twice(
    installation: Installation, sipp: Callable[..., SippPeer]
) -> None:
    sessions, node, worker = installation.sessions, installation.node, installation.worker
    alice = sipp("alice", installation.alice_port, "agent_accepts.xml", "-d", "300")
    trunk = sipp("trunk", node.trunk_port, "uas_answer_hangup.xml", "-d", "1000")
    worker.start()
    await worker.wait_registered()
    web = node.web()
    for phone in BEFORE:
        ask(web, SLUG, phone)

    # Some done, one in a call, the rest waiting: the kill cuts the line in three.
    def mid_run() -> bool:
        now = statuses(sessions)
        return now["completed"] >= 2 and sum(now[s] for s in IN_CALL) == 1 and now["queued"] > 0

    await until(mid_run, within=30, interval=0.01, message=lambda: f"{statuses(sessions)}")
    worker.kill()
    at_the_kill = statuses(sessions)
    [in_call] = [p for p, r in requests_by_phone(sessions).items() if r.status in IN_CALL]
    for phone in WHILE_DEAD:
        ask(web, SLUG, phone)  # its wake-up finds nobody listening
    worker.start()
    await worker.wait_registered()

    everyone = BEFORE + WHILE_DEAD
    await until(
        lambda: statuses(sessions)["completed"] == len(everyone),
        within=60,
        interval=0.1,
        message=lambda: f"all completed; {statuses(sessions)}\n{worker.log_tail()}",
    )

    tally = Tally.of(sessions, len(everyone), trunk)
    requests = tally.requests
    figures = (
        f"{tally}; at the kill {dict(at_the_kill)}, {in_call} in a call; retried: {tally.retried}"
    )
    print(f"\nworker killed with a queue: {figures}")

    assert tally.lost == 0, figures
    assert tally.dialled_twice == [], figures
    assert tally.without_attempt == [], figures
    assert set(tally.retried) <= {in_call}, (
        f"only the call live at the kill is tried again; {figures}"
    )
    for phone, request in requests.items():
        assert all(a.ended_at and a.outcome for a in request.attempts), f"{phone}: left open"
        assert request.attempts[-1].outcome == "answered", phone
        claims = [e.reason for e in request.events if e.from_status == "queued"]
        assert set(claims) == {f"taken by worker {worker.name}"}, f"{phone}: {claims}"
    for phone in WHILE_DEAD:
        assert len(requests[phone].attempts) == 1, f"{phone} waited: no attempt spent"
    attempts = sum(len(r.attempts) for r in requests.values())
    assert len(dials(alice)) <= attempts, f"the agent rung only within an attempt; {figures}"
