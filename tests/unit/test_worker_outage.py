"""The worker while the database is away: it pauses claiming (one warning, no flood), resumes by
itself when the database answers, and a call's bookkeeping waits for it rather than being lost.

PostgreSQL is cut with a proxy (tests/dbproxy.py), SQLite is locked by another writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cbserver import db
from cbserver.agents import add_agent
from cbserver.callflow import AgentFirstCall, CallSettings
from cbserver.claims import claim_next
from cbserver.clock import FakeClock
from cbserver.db import DatabaseThread
from cbserver.intake import Submission, submit
from cbserver.models import AgentAssignment, CallAttempt, CallbackRequest, RequestStatus, Subscriber
from tests.conftest import POSTGRES_URL
from tests.dbproxy import OutageDatabase, outage_database
from tests.e2e.harness import until
from tests.unit.test_worker_scheduler import RecordingWorker

NOW = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
CUT_SECONDS = 2.0


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutageDatabase]:
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("the proxy cut needs PostgreSQL: set CBSERVER_TEST_POSTGRES_URL")
    with outage_database(request.param, POSTGRES_URL, tmp_path) as found:
        with found.direct() as session:
            shop = Subscriber(
                slug="shop", display_name="Shop", country="US", caller_id="+12015550100"
            )
            session.add(shop)
            agent = add_agent(session, "anna", contact="sip:anna@127.0.0.1:5999").agent
            shop.assignments.append(AgentAssignment(agent=agent))
            session.commit()
        yield found
        found.outage.restore()


def warnings_about_the_database(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "database is unreachable" in record.getMessage()
    ]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What cbserver or its scheduler logged as an error (a traceback of a failed job)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith(("cbserver", "apscheduler"))
    ]


async def test_the_worker_pauses_claiming_while_the_database_is_away_and_then_resumes(
    database: OutageDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock(NOW)
    slot = NOW + timedelta(minutes=15)
    with database.direct() as session:
        booking = Submission("shop", "+12015550123", when=slot.isoformat(), consent=True)
        request_id = submit(session, booking, now=NOW).request.id
    worker = RecordingWorker(db.make_session_factory(database.engine), clock)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        # Up and looking: it knows of the booking, which is not due yet.
        await until(lambda: worker._next_due == slot, within=5, message="the worker looked")
        database.outage.cut()
        clock.set(slot)  # due now, with the database away
        worker.wake()
        await until(
            lambda: any("claiming" in w for w in warnings_about_the_database(caplog)),
            within=5,
            message="a warning that claiming waits for the database",
        )
        await asyncio.sleep(CUT_SECONDS)  # the outage's length, not a wait for something
        assert not running.done(), "the worker runs on"
        assert worker.dialled == []
        database.outage.restore()
        await until(lambda: worker.dialled == [request_id], within=10, message="claimed")
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)

    warned = warnings_about_the_database(caplog)
    assert len([w for w in warned if "claiming" in w]) == 1, warned
    # At most once each for claiming, housekeeping and the erasure: not once a try.
    assert len(warned) <= 3, warned
    assert any("claiming: the database answers again" in r.getMessage() for r in caplog.records)
    assert errors(caplog) == []
    with database.direct() as session:
        request = session.get_one(CallbackRequest, request_id)
        assert request.status == RequestStatus.DIALING_AGENT
        assert request.claimed_by == "test-worker"


async def test_a_calls_bookkeeping_waits_for_the_database_and_is_recorded_once(
    database: OutageDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with database.direct() as session:
        request_id = submit(
            session, Submission("shop", "+12015550123", consent=True), now=NOW
        ).request.id
        claim = claim_next(session, "test-worker", NOW)
    assert claim is not None
    calls = DatabaseThread("test-calls")
    settings = CallSettings(app="test", clock=FakeClock(NOW + timedelta(minutes=1)))
    sessions = db.make_session_factory(database.engine)
    ended: list[AgentFirstCall] = []
    call = AgentFirstCall(None, sessions, calls, settings, claim, ended.append)  # type: ignore[arg-type]
    try:
        database.outage.cut()
        # The agent's phone rang out while the database was away.
        closing = asyncio.create_task(call._record(call._close, 19, "No answer"))
        await until(lambda: warnings_about_the_database(caplog), within=5, message="a warning")
        assert not closing.done(), "the step waits for the database"
        database.outage.restore()
        await asyncio.wait_for(closing, 10)
    finally:
        calls.close()

    assert len(warnings_about_the_database(caplog)) == 1
    assert errors(caplog) == []
    with database.direct() as session:
        request = session.get_one(CallbackRequest, request_id)
        attempt = session.get_one(CallAttempt, claim.attempt_id)
        assert request.status == RequestStatus.RETRY_WAIT
        assert request.claimed_by is None
        assert attempt.outcome == "no_answer"
        assert attempt.ended_at == NOW + timedelta(minutes=1)


async def test_a_close_repeated_after_a_lost_answer_records_the_call_once(
    database: OutageDatabase,
) -> None:
    """A commit whose answer was lost is tried again: the second run finds it made, and does
    not take the completed call for one that ended before it was bridged."""
    with database.direct() as session:
        request_id = submit(
            session, Submission("shop", "+12015550123", consent=True), now=NOW
        ).request.id
        claim = claim_next(session, "test-worker", NOW)
    assert claim is not None
    settings = CallSettings(app="test", clock=FakeClock(NOW + timedelta(minutes=1)))
    sessions = db.make_session_factory(database.engine)
    call = AgentFirstCall(None, sessions, None, settings, claim, print)  # type: ignore[arg-type]
    call.accepted = True
    assert call._move(RequestStatus.DIALING_VISITOR, "the agent accepted")
    assert call._move(RequestStatus.CONNECTED, "talking")
    call._close(16, "Normal Clearing")
    call._close(16, "Normal Clearing")  # as run_until_done repeats it
    with database.direct() as session:
        request = session.get_one(CallbackRequest, request_id)
        attempt = session.get_one(CallAttempt, claim.attempt_id)
        assert request.status == RequestStatus.COMPLETED
        assert attempt.outcome == "answered"
