"""The worker's composition root: claims due requests and drives their calls through ARI."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.orm import Session, sessionmaker

from cbserver import adoption, db, housekeeping, nodes
from cbserver.ami import AmiConfig, DatabasePresenceStore, PresenceWatcher
from cbserver.ari import AriClient, AriConfig, AriError
from cbserver.ari_app import StasisApp
from cbserver.callflow import AgentFirstCall, CallSettings, VisitorFirstCall
from cbserver.claims import LEASE, Claim, claim_due, promote_due
from cbserver.clock import Clock, SystemClock
from cbserver.db import DatabaseThread, OutageLog
from cbserver.dialplan import agi
from cbserver.dialplan.agi import InboundCalls

log = logging.getLogger("cbserver.worker")
POLL_SECONDS = 1.0
HOUSEKEEPING_SECONDS = 30.0
RETENTION = timedelta(days=90)
ARM_TOLERANCE = timedelta(milliseconds=50)
# Requests taken in one transaction when many are due at once (a burst, a busy minute).
CLAIM_BATCH = 20
# How long a stopping worker lets a housekeeping round under way finish.
CHORE_GRACE = 10.0
# Calls one worker (and so its Asterisk) carries at once: about one core per 80 bridged calls.
MAX_CALLS = 50


def wake_by_datagram(port: int) -> None:
    """Wake a worker in another process on this host; if none listens, nothing happens."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender, suppress(OSError):
        sender.sendto(b"wake", ("127.0.0.1", port))


class _WakeProtocol(asyncio.DatagramProtocol):
    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.wake()


async def _first_of(*events: asyncio.Event, at_most: float | None = None) -> None:
    """Until any of ``events`` is set, or ``at_most`` seconds have passed."""
    waits = {asyncio.create_task(event.wait()) for event in events}
    try:
        await asyncio.wait(waits, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


async def _unless_unreachable(outage: OutageLog, work: Awaitable[None]) -> bool:
    """Whether ``work`` was done: a scheduled job meets an unreachable database with one
    warning (the scheduler runs it again at its next time), not a traceback every run."""
    try:
        await work
    except Exception as exc:
        if not db.unreachable(exc):
            raise
        outage.failed(exc)
        return False
    outage.succeeded()
    return True


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(
        self,
        ari_config: AriConfig,
        sessions: sessionmaker[Session],
        *,
        name: str | None = None,
        call_settings: CallSettings | None = None,
        drain_seconds: float = 60.0,
        poll_seconds: float = POLL_SECONDS,
        wake_port: int | None = None,
        clock: Clock | None = None,
        retention: timedelta = RETENTION,
        housekeeping_seconds: float = HOUSEKEEPING_SECONDS,
        max_calls: int = MAX_CALLS,
        lease: timedelta = LEASE,
        ami: AmiConfig | None = None,
        agi_port: int | None = None,
    ) -> None:
        self.ari_config = ari_config
        self.ami = ami
        # Where the worker answers the dialplan's FastAGI requests; None: it does not.
        self.agi_port = agi_port
        self.sessions = sessions
        self.name = name or worker_id()
        self.clock: Clock = clock or SystemClock()
        # One clock for the whole worker: claims, housekeeping and the calls' bookkeeping.
        self.call_settings = dataclasses.replace(
            call_settings or CallSettings(app=ari_config.app), clock=self.clock
        )
        self.drain_seconds = drain_seconds
        self.poll_seconds = poll_seconds
        self.wake_port = wake_port
        self.retention = retention
        self.housekeeping_seconds = housekeeping_seconds
        self.max_calls = max_calls
        self.lease = lease
        self._wake = asyncio.Event()
        self._next_promotion = 0.0
        self._next_due: datetime | None = None
        self._armed_for: datetime | None = None
        self._app: StasisApp | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._claiming = OutageLog(log, f"worker {self.name}: claiming")
        # Claiming and adopting take turns: what one takes, the other must see as carried.
        self._handover = asyncio.Lock()
        self._instance = nodes.this_instance()
        # Until the first adoption, this worker's old claims are its previous life's to adopt.
        self._adopted = False
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._was_displaced = False
        self._chores: set[asyncio.Task[Any]] = set()

    @property
    def asterisk_connected(self) -> bool:
        """Whether the worker's event stream to Asterisk is up (it claims only then)."""
        return self._app is not None and self._app.connected.is_set()

    def wake(self) -> None:
        """Look for due requests now, not at the next poll."""
        self._wake.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        """Until stopped, woken, or the next poll: polling is the fallback, not the path."""
        await _first_of(stop, self._wake, at_most=self.poll_seconds)

    def _ended(self, app: StasisApp) -> Callable[[AgentFirstCall], None]:
        """A call ended: an agent is free, so the next request may be claimed now."""

        def ended(call: AgentFirstCall) -> None:
            app.remove(call)
            if call.refused_by_stopping_asterisk:
                app.shutting_down()
            self.wake()

        return ended

    async def _until_connected(self, connected: asyncio.Event, stop: asyncio.Event) -> None:
        log.warning(
            "worker %s: Asterisk is away (stopped, restarting or unreachable); "
            "claiming nothing until it is back",
            self.name,
        )
        await _first_of(stop, connected)
        if connected.is_set():
            log.info("worker %s: Asterisk is back; claiming again", self.name)

    async def _drain(self, app: StasisApp) -> None:
        """Stopping: claim nothing more, let live calls end (bounded), end the rest honestly."""
        if app.calls:
            log.info("worker %s: waiting for %d live call(s)", self.name, len(app.calls))
        with suppress(TimeoutError):
            await asyncio.wait_for(app.idle.wait(), self.drain_seconds)
        for call in list(app.calls.values()):
            await call.abandon("the worker stopped before the call ended")

    def _room(self) -> int:
        """How many more calls this worker (its Asterisk) may carry now."""
        carried = len(self._app.calls) if self._app is not None else 0
        return self.max_calls - carried

    def _claim(self, most: int) -> list[Claim]:
        with self.sessions() as session:
            now = self.clock.now()
            # Retries and slots come due on the clock: at the due time the scheduler wakes us
            # (see _arm_next_due); between those, once per poll is soon enough, and a burst of
            # wake-ups then costs a statement less each.
            due_now = self._next_due is not None and self._next_due <= now
            if due_now or time.monotonic() >= self._next_promotion:
                promote_due(session, now)
                self._next_due = housekeeping.next_due(session)
                self._next_promotion = time.monotonic() + self.poll_seconds
            claims = claim_due(session, self.name, now, most, self.lease)
            if not claims:
                # About to rest: learn of anything booked meanwhile, so the timer wakes us
                # at its time (a new booking's wake-up lands here).
                self._next_due = housekeeping.next_due(session)
            return claims

    # --- the scheduler: timed wake-ups and housekeeping (the database stays the record) -------

    def _start_scheduler(
        self, database: DatabaseThread, retention: DatabaseThread
    ) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            timezone=UTC,
            # However late a job runs (a busy loop, a suspended machine), it still runs, once.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )

        tidying = OutageLog(log, f"worker {self.name}: housekeeping")
        erasing = OutageLog(log, f"worker {self.name}: erasing old visitor data")

        async def tidy() -> None:
            async with self._chore():
                # Read here, on the loop that changes them; the round runs on its own thread.
                live = frozenset(self._app.calls) if self._app is not None else frozenset()
                work = database.run(self._housekeeping, live, self._adopted)
                if await _unless_unreachable(tidying, work):
                    self._arm_next_due()

        async def erase_old() -> None:
            async with self._chore():
                # A thread of its own: a long first erasure never delays the lease renewals.
                await _unless_unreachable(erasing, retention.run(self._erase_old_visitor_data))

        scheduler.add_job(
            tidy,
            "interval",
            # Several renewals within a lease: one slow round never loses a live call.
            seconds=min(self.housekeeping_seconds, self.lease.total_seconds() / 4),
            id="housekeeping",
            next_run_time=datetime.now(UTC),
        )
        scheduler.add_job(
            erase_old, "interval", hours=6, id="retention", next_run_time=datetime.now(UTC)
        )
        scheduler.start()
        self._scheduler = scheduler
        return scheduler

    @contextlib.asynccontextmanager
    async def _chore(self) -> AsyncIterator[None]:
        """A scheduled job under way: a stopping worker lets it finish rather than cut it."""
        task = asyncio.current_task()
        if task is not None:
            self._chores.add(task)
        try:
            yield
        finally:
            self._chores.discard(task)

    async def _stop_scheduler(self, scheduler: AsyncIOScheduler) -> None:
        scheduler.pause()
        if self._chores:
            await asyncio.wait(set(self._chores), timeout=CHORE_GRACE)
        scheduler.shutdown(wait=False)
        self._scheduler = None

    def _housekeeping(self, live: frozenset[str], adopted: bool) -> None:
        with self.sessions() as session:
            now = self.clock.now()
            if not nodes.heartbeat(session, self.name, self._instance, now):
                self._displaced()
                return
            done = housekeeping.one_round(
                session, self.name, now, live, lease=self.lease, adopted=adopted
            )
            if done.released or done.expired or done.moved_to_opening:
                log.info("worker %s: housekeeping %s", self.name, done)
            closing = housekeeping.next_closing(session, now)
            self._next_due = housekeeping.next_due(session)
        if closing is not None and self._scheduler is not None:
            self._at(closing, "closing", self._housekeeping_soon)

    def _erase_old_visitor_data(self) -> None:
        with self.sessions() as session:
            housekeeping.anonymise_old_requests(session, self.clock.now(), self.retention)
            housekeeping.anonymise_old_refusals(session, self.clock.now(), self.retention)

    def _wall_time(self, moment: datetime) -> datetime:
        """When ``moment`` on the worker's clock comes on the system's (the scheduler's)."""
        return datetime.now(UTC) + (moment - self.clock.now())

    def _at(self, moment: datetime, job_id: str, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` at ``moment`` (given on the worker's clock), replacing an earlier one."""
        assert self._scheduler is not None
        self._scheduler.add_job(
            job, "date", run_date=self._wall_time(moment), id=job_id, replace_existing=True
        )

    async def _housekeeping_soon(self) -> None:
        if self._scheduler is not None:
            self._scheduler.modify_job("housekeeping", next_run_time=datetime.now(UTC))

    async def _due_now(self) -> None:
        self.wake()

    def _arm_next_due(self) -> None:
        """Set the timer for the next due time, unless it is set for that time already."""
        due = self._next_due
        if due is None or self._scheduler is None:
            return
        wall = self._wall_time(due)
        # Re-armed only when the time moved (a new earlier booking, or a clock set anew).
        if self._armed_for is None or abs(wall - self._armed_for) > ARM_TOLERANCE:
            self._at(due, "next-due", self._due_now)
            self._armed_for = wall

    def _displaced(self) -> None:
        """Another process took this worker's name (this one was silent for a lease): its
        claims are that one's now, so this one stops, leaving the calls to it."""
        log.error("worker %s: another process took this worker's name; stopping", self.name)
        self._was_displaced = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set. Raises nodes.WorkerNameTaken when another live worker
        runs under this worker's name."""
        self._stop = stop
        self._loop = asyncio.get_running_loop()
        listener = await self._listen_for_wakes()
        try:
            await self._serve(stop)
        finally:
            if listener is not None:
                listener.close()
        if self._was_displaced:
            raise nodes.WorkerNameTaken(
                f"worker {self.name}: another process took this worker's name after this one "
                "was silent for a lease; give each worker its own name (CBSERVER_WORKER_NAME)"
            )

    async def _listen_for_wakes(self) -> asyncio.DatagramTransport | None:
        if self.wake_port is None:
            return None
        try:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _WakeProtocol(self.wake), local_addr=("127.0.0.1", self.wake_port)
            )
        except OSError as exc:
            log.warning(
                "worker %s: cannot listen for wake-ups on 127.0.0.1:%d (%s); polling only",
                self.name,
                self.wake_port,
                exc.strerror,
            )
            return None
        return transport

    async def _serve(self, stop: asyncio.Event) -> None:
        # Claims on a thread of their own: a click is never queued behind call bookkeeping.
        claims = DatabaseThread("cbserver-claims")
        calls = DatabaseThread("cbserver-calls")
        chores = DatabaseThread("cbserver-housekeeping")
        erasing = DatabaseThread("cbserver-retention")
        try:
            await self._register(claims)
        except BaseException:
            for thread in (claims, calls, chores, erasing):
                thread.close()
            raise
        scheduler = self._start_scheduler(chores, erasing)
        try:
            async with self._presence(), self._answering_calls():
                await self._serve_with(stop, claims, calls)
        finally:
            await self._stop_scheduler(scheduler)
        try:
            if not self._was_displaced:
                await self._let_name_go(claims)
        finally:
            claims.close()
            calls.close()
            chores.close()
            erasing.close()

    @contextlib.asynccontextmanager
    async def _presence(self) -> AsyncIterator[None]:
        """The agents' presence followed over AMI beside the calls: its own task and database
        thread, so an AMI or database failure there never holds up a claim or a call."""
        if self.ami is None:
            yield
            return
        thread = DatabaseThread("cbserver-presence")
        store = DatabasePresenceStore(self.sessions, thread, self.clock, node=self.name)
        watching = asyncio.create_task(PresenceWatcher(self.ami, store, self.wake).run())
        try:
            yield
        finally:
            watching.cancel()
            with suppress(asyncio.CancelledError):
                await watching
            thread.close()

    @contextlib.asynccontextmanager
    async def _answering_calls(self) -> AsyncIterator[None]:
        """The FastAGI server the dialplan asks where calls coming in go (dialplan/agi.py);
        should its port be taken, calls coming in hear an apology and call-backs go on."""
        if self.agi_port is None:
            yield
            return
        thread = DatabaseThread("cbserver-agi")
        calls = InboundCalls(
            self.sessions, thread, self.call_settings.agent_ring_seconds, self.clock
        )
        try:
            server = await agi.serve(calls, self.agi_port)
        except OSError as exc:
            log.error("worker %s: no FastAGI on port %d (%s)", self.name, self.agi_port, exc)
            thread.close()
            yield
            return
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()
            thread.close()

    async def _register(self, claims: DatabaseThread) -> None:
        """Take this worker's name; waits out an unreachable database."""
        registering = OutageLog(log, f"worker {self.name}: registering")

        def register() -> None:
            with self.sessions() as session:
                nodes.register(session, self.name, self._instance, self.clock.now(), self.lease)

        await claims.run_until_done(registering, register)

    async def _let_name_go(self, claims: DatabaseThread) -> None:
        """A clean stop: a worker started under this name may take it at once, anywhere."""

        def release() -> None:
            with self.sessions() as session:
                nodes.release(session, self.name, self._instance)

        try:
            await claims.run(release)
        except Exception as exc:
            if not db.unreachable(exc):
                raise
            # The name is then taken over a lease from now, as a dead worker's would be.

    def _call(
        self, ari: AriClient, calls: DatabaseThread, app: StasisApp, claim: Claim
    ) -> AgentFirstCall:
        flow = VisitorFirstCall if claim.visitor_first else AgentFirstCall
        return flow(ari, self.sessions, calls, self.call_settings, claim, self._ended(app))

    async def _adopt(self, ari: AriClient, calls: DatabaseThread, app: StasisApp) -> bool:
        """Take up the calls this worker owns but does not carry: its previous life's after a
        restart. False when the database or Asterisk could not be asked (tried again)."""
        async with self._handover:
            try:
                owned = await calls.run(self._owned, frozenset(app.calls))
                found = await adoption.look_up(ari, owned) if owned else adoption.OnAsterisk()
            except AriError as exc:
                log.warning("worker %s: Asterisk did not answer while adopting: %s", self.name, exc)
                return False
            except Exception as exc:
                if db.unreachable(exc):
                    self._claiming.failed(exc)
                else:
                    log.exception("worker %s: adopting failed; trying again", self.name)
                return False
            if owned:
                log.warning(
                    "worker %s: taking up %d call(s) left by its previous run",
                    self.name,
                    len(owned),
                )
            for left in owned:
                call = self._call(ari, calls, app, left.claim)
                call.take_up(left, found)
                # Carried on first thing in its own queue: one call's steps hold no other's.
                app.add(call, functools.partial(self._resume, call, left, found))
            self._adopted = True
            return True

    async def _resume(
        self, call: AgentFirstCall, left: adoption.Owned, found: adoption.OnAsterisk
    ) -> None:
        try:
            await call.resume(left, found)
        except Exception as exc:
            # It changed between the look and the step (a hang-up): end it honestly.
            log.warning("request %s: not taken up: %s", call.request_id, exc, exc_info=True)
            message = exc.message if isinstance(exc, AriError) else type(exc).__name__
            reason = f"could not be taken up after a restart: {message}"
            await call.abandon(reason[:100])  # the column's length

    def _owned(self, carried: frozenset[str]) -> list[adoption.Owned]:
        with self.sessions() as session:
            return adoption.owned_calls(session, self.name, carried, self.clock.now(), self.lease)

    async def _serve_with(
        self, stop: asyncio.Event, claims: DatabaseThread, calls: DatabaseThread
    ) -> None:
        async with AriClient(self.ari_config) as ari:

            async def adopt() -> bool:
                return await self._adopt(ari, calls, app)

            app = self._app = StasisApp(ari, adopt)
            events = asyncio.create_task(app.run())

            async def place(claim: Claim) -> None:
                call = self._call(ari, calls, app, claim)
                app.add(call)
                await call.start()

            def failed(task: asyncio.Task[None]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    # Raised again below, where the task is awaited: the process ends loudly.
                    log.error("worker %s: routing Asterisk's events failed; stopping", self.name)
                    stop.set()

            events.add_done_callback(failed)

            try:
                await app.connected.wait()
                log.info("worker %s: Stasis app %s registered", self.name, self.ari_config.app)
                await self._claim_loop(stop, claims, app.connected, place)
                if not self._was_displaced:
                    await self._drain(app)
            finally:
                events.cancel()
                with suppress(asyncio.CancelledError):
                    await events
                await app.stop()

    async def _claim_loop(
        self,
        stop: asyncio.Event,
        claims: DatabaseThread,
        connected: asyncio.Event,
        place: Callable[[Claim], Awaitable[None]],
    ) -> None:
        """Claim due requests and ``place`` their calls until stopped; while the database is
        unreachable, claim nothing and try again after a pause (``db.waits``)."""
        pause = db.waits()
        while not stop.is_set():
            if not connected.is_set():
                # Asterisk is away: what is queued waits for it, rather than spending an
                # attempt on a call that cannot be placed.
                await self._until_connected(connected, stop)
                continue
            # Cleared before looking, never after: a wake-up that arrives while we look must
            # survive to end the idle wait at once.
            self._wake.clear()
            room = min(CLAIM_BATCH, self._room())
            if room <= 0:
                # Full: a call's end wakes us.
                await self._idle(stop)
                continue
            taken: list[Claim] | None = None
            async with self._handover:
                # Looked at again: an adoption may have taken room, or Asterisk gone, meanwhile.
                room = min(CLAIM_BATCH, self._room())
                if not connected.is_set() or room <= 0:
                    continue
                try:
                    taken = await claims.run(self._claim, room)
                except Exception as exc:
                    if not db.unreachable(exc):
                        raise
                    # What is queued waits in the database; a wake-up cannot hurry it back.
                    self._claiming.failed(exc)
                for claim in taken or ():
                    await place(claim)
            if taken is None:
                await _first_of(stop, at_most=next(pause))
                continue
            if self._claiming.succeeded():
                pause = db.waits()
            self._arm_next_due()
            if not taken:
                await self._idle(stop)


class WorkerThread:
    """The worker on an event loop of its own, beside the web server in ``cbserver run``."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="cbserver-worker", daemon=True)
        # Why the worker could not run, for the process that started it to say.
        self.failure: str | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except nodes.WorkerNameTaken as exc:
            self.failure = str(exc)
        except Exception as exc:
            log.exception("the worker stopped")
            self.failure = f"the worker stopped: {exc}"
        self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self.worker.run(self._stop)

    def wake(self) -> None:
        """Safe from any thread; a no-op until the worker runs."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.worker.wake)

    def stop(self, timeout: float = 15.0) -> None:
        if not self._thread.is_alive():
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
