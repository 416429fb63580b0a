"""Two nodes, each a worker process on its own Asterisk, share one database and one line.

200 call-backs for one business with 16 agents: each is dialled once, the two nodes share the
load, neither carries more calls than its capacity, and when one worker is killed with -9 the
other finishes its requests once their leases have run out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.claims import IN_CALL
from cbserver.models import CallbackRequest
from cbserver.sipp import SipMessage, SippPeer
from tests.e2e.harness import Tally, dials, free_ports, statuses, until
from tests.e2e.nodes import (
    Cluster,
    InCallSampler,
    Node,
    WorkerProcess,
    add_business,
    ask,
)

SLUG = "busy"
AGENTS = [f"agent-{n:02d}" for n in range(1, 17)]
PHONES = [f"+1201555{n:04d}" for n in range(2000, 2200)]
MAX_CALLS = 8
LEASE_SECONDS = 4.0
# Worker A is killed once this many are done: a good part served, most still to come.
KILL_AT = 60
FAIR_SHARE = 0.2


@dataclass(frozen=True)
class TwoNodes:
    sessions: sessionmaker[Session]
    a: Node
    b: Node
    worker_a: WorkerProcess
    worker_b: WorkerProcess
    agents_port: int


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[TwoNodes]:
    """Nodes a and b on one database; the business's 16 agents' phones are one sipp peer."""
    with Cluster(tmp_path / "cluster") as cluster:
        [agents_port] = free_ports(1)
        add_business(cluster.sessions, SLUG, "Call centre", AGENTS, agents_port)
        a, b = cluster.node("a"), cluster.node("b")
        a.start_asterisk()
        b.start_asterisk()
        worker_a, worker_b = (
            cluster.worker(
                node, f"node-{node.name}", lease_seconds=LEASE_SECONDS, max_calls=MAX_CALLS
            )
            for node in (a, b)
        )
        yield TwoNodes(cluster.sessions, a, b, worker_a, worker_b, agents_port)


def dialled_before(peer: SippPeer, moment: float) -> list[SipMessage]:
    return [invite for invite in dials(peer) if invite.at is not None and invite.at < moment]


def in_call_of(sessions: sessionmaker[Session], worker: str) -> dict[str, datetime | None]:
    """The worker's requests in a call, with the time each one's lease runs out."""
    with sessions() as session:
        rows = session.execute(
            select(CallbackRequest.id, CallbackRequest.lease_until).where(
                CallbackRequest.claimed_by == worker, CallbackRequest.status.in_(IN_CALL)
            )
        )
        return {request_id: lease_until for request_id, lease_until in rows}


@pytest.mark.slow
async def test_two_nodes_share_200_call_backs_and_one_killed_leaves_its_calls_to_the_other(
    two_nodes: TwoNodes, sipp: Callable[..., SippPeer]
) -> None:
    sessions, worker_a, worker_b = two_nodes.sessions, two_nodes.worker_a, two_nodes.worker_b
    agents = sipp("agents", two_nodes.agents_port, "agent_accepts.xml", "-d", "300")
    trunk_a = sipp("trunk-a", two_nodes.a.trunk_port, "uas_answer_hangup.xml", "-d", "1000")
    trunk_b = sipp("trunk-b", two_nodes.b.trunk_port, "uas_answer_hangup.xml", "-d", "1000")
    worker_a.start()
    worker_b.start()
    await worker_a.wait_registered()
    await worker_b.wait_registered()

    def logs() -> str:
        return f"{statuses(sessions)}\n{worker_a.log_tail()}\n{worker_b.log_tail()}"

    started = time.monotonic()
    # Two web front ends, one per node, as behind a load balancer: each wakes its own worker.
    webs = [two_nodes.a.web(), two_nodes.b.web()]
    with InCallSampler(sessions) as sampler:
        for n, phone in enumerate(PHONES):
            ask(webs[n % 2], SLUG, phone)
        await until(
            lambda: statuses(sessions)["completed"] >= KILL_AT,
            within=60,
            interval=0.05,
            message=logs,
        )
        worker_a.kill()
        killed_at = time.time()
        left_by_a = in_call_of(sessions, worker_a.name)
        await until(
            lambda: statuses(sessions)["completed"] == len(PHONES),
            within=90,
            interval=0.1,
            message=logs,
        )
    took = time.monotonic() - started

    tally = Tally.of(sessions, len(PHONES), trunk_a, trunk_b)
    by_id = {request.id: request for request in tally.requests.values()}
    before_kill = {
        "a": len(dialled_before(trunk_a, killed_at)),
        "b": len(dialled_before(trunk_b, killed_at)),
    }
    figures = (
        f"{tally} / retried {len(tally.retried)} in {took:.1f} s; trunk INVITEs before the "
        f"kill {before_kill}, in all a {len(dials(trunk_a))} b {len(dials(trunk_b))}; most "
        f"calls at once {dict(sampler.peaks)} in {sampler.samples} samples; A's in a call at "
        f"the kill {len(left_by_a)}; agent INVITEs {len(dials(agents))}"
    )
    print(f"\nscale-out: {figures}")

    assert sampler.samples > 100, figures
    assert sampler.peaks[worker_a.name] <= MAX_CALLS, figures
    assert sampler.peaks[worker_b.name] <= MAX_CALLS, figures
    assert tally.lost == 0, figures
    assert set(tally.trunk_dials) <= set(PHONES), figures
    assert tally.without_attempt == [], f"dialled without an attempt; {figures}"
    assert tally.dialled_twice == [], figures
    assert len(tally.retried) <= MAX_CALLS, (
        f"only calls live at the kill are tried again; {figures}"
    )
    for node, dialled in before_kill.items():
        assert dialled >= FAIR_SHARE * sum(before_kill.values()), f"node {node}: {figures}"
    assert left_by_a, f"worker A had calls under way when it was killed; {figures}"
    for request_id, lease_until in left_by_a.items():
        request = by_id[request_id]
        assert lease_until is not None, f"{request_id} was claimed without a lease"
        released = [
            e for e in request.events if e.from_status in IN_CALL and e.at.timestamp() > killed_at
        ]
        assert released, f"{request_id}: {[(e.to_status, e.reason) for e in request.events]}"
        assert released[0].at > lease_until, f"{request_id} released before its lease ran out"
        retaken = [
            e.reason for e in request.events if e.from_status == "queued" and e.at > lease_until
        ]
        assert set(retaken) <= {f"taken by worker {worker_b.name}"}, retaken
