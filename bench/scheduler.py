"""Scheduled call-backs at scale: are N booked requests dialled on time, and in how much memory?

Stores N requests (default 100,000) due at times spread evenly over the next M minutes
(default 15) in a fresh PostgreSQL schema (or SQLite), then runs the real worker loop in a
process of its own: promotion of due requests, claims, APScheduler's timed wake-ups and
housekeeping. A dry-run dialler stands in for Asterisk: it records the moment it would dial
and ends the calls at once (see DryRunWorker). Prints
lateness (dial time minus due time) percentiles, requests dialled twice or never, and the
worker process's peak RSS.

    .venv/bin/python -m bench.scheduler --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.scheduler --count 10000 --minutes 2      # SQLite, quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import resource
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bench.dispatch_latency import fresh_database, percentiles
from cbserver import db
from cbserver.ari import AriConfig
from cbserver.claims import Claim
from cbserver.db import DatabaseThread
from cbserver.models import Agent, AgentAssignment, CallbackRequest, RequestStatus, Subscriber
from cbserver.worker import Worker

# Calls end once a second: these many agents take 1,000 calls a second, beyond any rate here.
AGENTS = 1000
BATCH = 5000
# Time for the worker process to start before the first request comes due.
LEAD = timedelta(seconds=15)


def store_requests(sessions: sessionmaker[Session], count: int, minutes: float) -> datetime:
    """A subscriber open around the clock with AGENTS agents, and ``count`` booked requests
    due evenly over ``minutes`` from a moment LEAD ahead; returns that first due time."""
    with sessions() as session:
        subscriber = Subscriber(
            slug="bench", display_name="Bench", country="US", caller_id="+12015550100"
        )
        session.add(subscriber)
        for n in range(AGENTS):
            agent = Agent(name=f"bench{n}", contact=f"sip:bench{n}@127.0.0.1:9")
            subscriber.assignments.append(AgentAssignment(agent=agent))
        session.commit()
        subscriber_id = subscriber.id
    first = datetime.now(UTC) + LEAD
    step = timedelta(minutes=minutes) / count
    with sessions() as session:
        for start in range(0, count, BATCH):
            rows: list[dict[str, Any]] = []
            for n in range(start, min(start + BATCH, count)):
                due = first + step * n
                rows.append(
                    {
                        "id": str(uuid.uuid4()),
                        "subscriber_id": subscriber_id,
                        # Valid numbers: the claim checks each against the policy again.
                        "visitor_phone": f"+1201{2_000_000 + n:07d}",
                        "due_at": due,
                        "slot_start": due,
                        "requested_time": due,
                        "deadline_at": due + timedelta(days=1),
                        "status": RequestStatus.SCHEDULED.value,
                        "attempt_count": 0,
                        "visitor_token": secrets.token_urlsafe(32),
                        "created_at": first - LEAD,
                        "updated_at": first - LEAD,
                    }
                )
            session.execute(insert(CallbackRequest), rows)
            session.commit()
        if session.get_bind().dialect.name == "postgresql":
            # Statistics as a database in service has them (autovacuum would, later).
            session.execute(text("ANALYZE"))
            session.commit()
    return first


class DryRunWorker(Worker):
    """The worker's own claim loop and scheduler, with a dialler that only writes down.

    Calls end at once: once a second every dialled request is marked completed in one
    statement, and there are AGENTS agents, so agents are never what a request waits for: the
    figures are the scheduler's (promotion, claims, timers), not the call bookkeeping's
    (bench/dispatch_latency measures real calls)."""

    def __init__(self, sessions: sessionmaker[Session], expected: int) -> None:
        unused = AriConfig("http://127.0.0.1:9", "bench", "bench", app="bench")
        super().__init__(unused, sessions, name="bench-dry-run")
        self.expected = expected
        self.dialled: list[tuple[str, float]] = []

    async def _serve_with(
        self, stop: asyncio.Event, claims: DatabaseThread, calls: DatabaseThread
    ) -> None:
        always = asyncio.Event()
        always.set()

        async def place(claim: Claim) -> None:
            self.dialled.append((claim.request_id, time.time()))
            if len(self.dialled) >= self.expected:
                stop.set()

        async def hang_up_every_second() -> None:
            while not stop.is_set():
                await asyncio.sleep(1)
                if await calls.run(self._all_calls_ended):
                    self.wake()

        ending = asyncio.create_task(hang_up_every_second())
        await self._claim_loop(stop, claims, always, place)
        ending.cancel()
        await calls.run(self._all_calls_ended)

    def _all_calls_ended(self) -> int:
        with self.sessions() as session:
            ended = session.execute(
                update(CallbackRequest)
                .where(CallbackRequest.status == RequestStatus.DIALING_AGENT)
                .values(status=RequestStatus.COMPLETED.value, claimed_by=None, lease_until=None)
            )
            session.commit()
            return int(ended.rowcount)  # type: ignore[attr-defined]


class Vacuum:
    """VACUUM ANALYZE the request table every minute, as autovacuum would: each call updates
    its row several times, and some test machines run PostgreSQL with autovacuum off."""

    def __init__(self, engine: Engine, every: float = 60.0) -> None:
        self.engine = engine
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE callback_requests"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def serve(database_url: str, expected: int, out: str, verbose: bool) -> None:
    """The worker process: serves until every request was dialled, then reports."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("cbserver.states").setLevel(logging.WARNING)
    engine = db.make_engine(database_url)
    worker = DryRunWorker(db.make_session_factory(engine), expected)
    stop = asyncio.Event()
    asyncio.run(worker.run(stop))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(out).write_text(json.dumps({"dialled": worker.dialled, "peak_rss_kib": peak_kib}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="booked requests")
    parser.add_argument("--minutes", type=float, default=15.0, help="spread over this long")
    parser.add_argument(
        "--database-url",
        default="",
        help="a PostgreSQL database to use a fresh schema of (default: SQLite in a temp dir)",
    )
    parser.add_argument(
        "--measure-minutes",
        type=float,
        default=0.0,
        help="stop after the requests due in this first part of the spread (default: all)",
    )
    parser.add_argument("--verbose", action="store_true", help="log what the worker does")
    args = parser.parse_args(argv)
    # Killed, it still drops its schema (the finally below).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(1))
    state = Path(tempfile.mkdtemp(prefix="cbserver-bench-scheduler-"))
    database_url, drop_schema = fresh_database(args.database_url)
    database_url = database_url or f"sqlite:///{state / 'cbserver.sqlite3'}"
    engine = db.make_engine(database_url)
    try:
        db.upgrade(engine)
        sessions = db.make_session_factory(engine)
        started = time.monotonic()
        first_due = store_requests(sessions, args.count, args.minutes)
        print(
            f"stored {args.count} requests in {time.monotonic() - started:.1f} s, due "
            f"{first_due:%H:%M:%S} to {first_due + timedelta(minutes=args.minutes):%H:%M:%S} UTC "
            f"({args.count / (args.minutes * 60):.0f}/s)",
            flush=True,
        )
        measured = min(args.measure_minutes or args.minutes, args.minutes)
        expected = round(args.count * measured / args.minutes)
        if expected < args.count:
            print(f"measuring the first {measured:g} minutes: {expected} requests", flush=True)
        out = state / "dialled.json"
        worker = multiprocessing.get_context("spawn").Process(
            target=serve, args=(database_url, expected, str(out), args.verbose)
        )
        worker.start()
        vacuum = Vacuum(engine) if engine.dialect.name == "postgresql" else None
        try:
            worker.join(timeout=measured * 60 + LEAD.total_seconds() + 600)
        finally:
            if vacuum is not None:
                vacuum.stop()
            if worker.is_alive():
                worker.kill()
        if not out.exists():
            print("the worker did not finish in time", file=sys.stderr)
            return 1
        report = json.loads(out.read_text())
        report_figures(sessions, expected, report)
    finally:
        engine.dispose()
        drop_schema()
    return 0


def report_figures(sessions: sessionmaker[Session], count: int, report: dict[str, Any]) -> None:
    dialled: list[tuple[str, float]] = [(rid, at) for rid, at in report["dialled"]]
    times = Counter(rid for rid, _ in dialled)
    with sessions() as session:
        due = {
            rid: at
            for rid, at in session.execute(select(CallbackRequest.id, CallbackRequest.due_at))
        }
        statuses = Counter(session.scalars(select(CallbackRequest.status)))
    lateness = [at - due[rid].timestamp() for rid, at in dialled]
    print(f"scheduler: {count} booked requests, dry-run dialler")
    print(f"  lateness (dial - due) {percentiles(lateness)}")
    print(f"  earliest              {min(lateness) * 1000:+.1f} ms (negative: dialled early)")
    print(f"  dialled twice         {sum(1 for n in times.values() if n > 1)}")
    print(f"  never dialled         {count - len(times)}")
    print(f"  final states          {dict(statuses)}")
    print(f"  worker peak RSS       {report['peak_rss_kib'] / 1024:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
