"""The worker's scheduler, without Asterisk: timed wake-ups and housekeeping reach the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver.agents import add_agent
from cbserver.ari import AriConfig
from cbserver.claims import Claim
from cbserver.clock import FakeClock
from cbserver.db import DatabaseThread
from cbserver.intake import Submission, submit
from cbserver.models import AgentAssignment, CallbackRequest, RequestStatus, Subscriber
from cbserver.worker import Worker
from tests.e2e.harness import until

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


class RecordingWorker(Worker):
    """The real claim loop and scheduler; "dialling" writes the claim down."""

    def __init__(
        self, sessions: sessionmaker[Session], clock: FakeClock | None = None, **options: Any
    ) -> None:
        unused = AriConfig("http://127.0.0.1:9", "test", "test", app="test")
        super().__init__(
            unused,
            sessions,
            name="test-worker",
            clock=clock,
            poll_seconds=60,
            housekeeping_seconds=0.2,
            **options,
        )
        self.dialled: list[str] = []

    async def _serve_with(
        self, stop: asyncio.Event, claims: DatabaseThread, calls: DatabaseThread
    ) -> None:
        always = asyncio.Event()
        always.set()

        async def place(claim: Claim) -> None:
            self.dialled.append(claim.request_id)

        await self._claim_loop(stop, claims, always, place)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def shop(session: Session) -> Subscriber:
    subscriber = Subscriber(
        slug="shop", display_name="Shop", country="US", caller_id="+12015550100"
    )
    session.add(subscriber)
    agent = add_agent(session, "anna", contact="sip:anna@127.0.0.1:5999").agent
    subscriber.assignments.append(AgentAssignment(agent=agent))
    session.commit()
    return subscriber


@pytest.fixture
async def worker(
    sessions: sessionmaker[Session], clock: FakeClock
) -> AsyncIterator[RecordingWorker]:
    running = RecordingWorker(sessions, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await asyncio.wait_for(task, 10)


def status_of(sessions: sessionmaker[Session], request_id: str) -> str:
    with sessions() as session:
        return session.get_one(CallbackRequest, request_id).status


@pytest.mark.usefixtures("shop")
async def test_a_booking_is_dialled_when_its_time_comes_without_polling(
    sessions: sessionmaker[Session], clock: FakeClock, worker: RecordingWorker
) -> None:
    slot = NOW + timedelta(minutes=15)
    with sessions() as session:
        request_id = submit(
            session,
            Submission("shop", "+12015550123", when=slot.isoformat(), consent=True),
            now=NOW,
        ).request.id
    worker.wake()  # as the web does after storing it
    await asyncio.sleep(0.3)
    assert worker.dialled == [], "not before its time"
    # The clock jumps to a second before the slot; the worker, told, sets its timer for it.
    clock.set(slot - timedelta(seconds=1))
    worker.wake()
    await asyncio.sleep(0.3)
    assert worker.dialled == []
    clock.set(slot)  # the fake clock keeps still: it is moved to the slot as the second passes
    await until(lambda: worker.dialled == [request_id], within=3, message="the booking dialled")
    assert status_of(sessions, request_id) == RequestStatus.DIALING_AGENT


@pytest.mark.usefixtures("shop")
async def test_housekeeping_expires_what_waited_past_its_deadline(
    sessions: sessionmaker[Session], clock: FakeClock, worker: RecordingWorker
) -> None:
    with sessions() as session:
        shop = session.scalars(select(Subscriber).where(Subscriber.slug == "shop")).one()
        shop.assignments.clear()  # nobody to call: the request only waits
        session.commit()
        request_id = submit(
            session, Submission("shop", "+12015550123", consent=True), now=NOW
        ).request.id
    clock.advance(timedelta(days=2))
    await until(
        lambda: status_of(sessions, request_id) == RequestStatus.EXPIRED,
        within=3,
        message="expired by the housekeeping job",
    )
    assert worker.dialled == []
