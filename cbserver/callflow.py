"""One live call-back, agent first: ring the agent, whisper, wait for "1", call the visitor, bridge.

The object owns its request's calls while they last. ARI events reach it through the Stasis
application (``ari_app.py``); every state change goes through ``states.transition`` and is
committed before the ARI action it enables.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import ParamSpec, TypeVar

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session, sessionmaker

from cbserver import routing
from cbserver.adoption import OnAsterisk, Owned
from cbserver.ari import (
    AriClient,
    AriError,
    AriUnavailable,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    Event,
    StasisStart,
)
from cbserver.claims import IN_CALL, Claim, bridge_name, channel_id
from cbserver.clock import Clock, SystemClock
from cbserver.config import Settings
from cbserver.db import DatabaseThread, OutageLog
from cbserver.models import CallAttempt, CallbackRequest, RequestStatus
from cbserver.numbers import UnsafeNumber, trunk_endpoint
from cbserver.retries import GiveUp, RetryPolicy, plan_retry
from cbserver.scheduling import UNSERVED, hours_of, local_text
from cbserver.states import IllegalTransition, StaleRequest, transition

log = logging.getLogger("cbserver.callflow")
P = ParamSpec("P")
T = TypeVar("T")

ACCEPT_DIGIT = "1"
_CHANCE = random.Random()
# Q.850 causes Asterisk reports, as the outcomes an attempt records.
OUTCOMES = {16: "answered", 17: "busy", 18: "no_answer", 19: "no_answer", 21: "rejected"}
# The stored number failed the dial-time check (numbers.trunk_endpoint): never dialled.
UNDIALLABLE = "undiallable"
# The CDR variable naming a leg's attempt; cdr_manager.conf maps it to the Cdr event's
# "CbserverAttempt" field.
CDR_ATTEMPT_VARIABLE = "cbserver_attempt"
# A channel's state once answered.
UP = "Up"


@dataclass(frozen=True)
class CallSettings:
    app: str
    agent_ring_seconds: int = 30
    visitor_ring_seconds: int = 45
    accept_seconds: float = 15.0
    # "Calling ... press 1", from Asterisk's core sounds; a subscriber's own prompt replaces it.
    whisper: tuple[str, ...] = ("sound:calling", "sound:vm-press", "digits:1")
    # What the agent hears when the visitor cannot be reached, before being released.
    visitor_unreachable: tuple[str, ...] = ("sound:sorry", "sound:please-try-call-later")
    unreachable_seconds: float = 4.0
    # Visitor first: what the visitor hears on answering, and when no agent can take the call.
    visitor_greeting: tuple[str, ...] = ("sound:one-moment-please",)
    no_agent: tuple[str, ...] = ("sound:sorry", "sound:tt-allbusy")
    # The worker's clock: attempts' times, retries and deadlines are reckoned on it.
    clock: Clock = field(default_factory=SystemClock)


def call_settings(settings: Settings) -> CallSettings:
    return CallSettings(
        app=settings.ari_app,
        agent_ring_seconds=settings.agent_ring_seconds,
        visitor_ring_seconds=settings.visitor_ring_seconds,
        accept_seconds=settings.accept_seconds,
    )


def retry_or_give_up(
    session: Session,
    request: CallbackRequest,
    outcome: str,
    now: datetime,
    chance: random.Random = _CHANCE,
    only_if: ColumnElement[bool] | None = None,
) -> None:
    """After a failed attempt: the next one by the subscriber's rules, inside its opening
    hours and before the request's deadline; else failed (no attempts left) or expired."""
    subscriber = request.subscriber
    policy = RetryPolicy.of(
        subscriber.max_attempts, subscriber.retry_interval_seconds, subscriber.retry_rules
    )
    decision = plan_retry(
        policy,
        outcome,
        request.attempt_count,
        now,
        hours_of(subscriber),
        request.deadline_at,
        chance,
    )
    if outcome == UNDIALLABLE:
        # Another try would meet the same number: nothing to wait for.
        decision = GiveUp(False, f"attempt {request.attempt_count}: the number cannot be dialled")
    if isinstance(decision, GiveUp):
        target = RequestStatus.EXPIRED if decision.expired else RequestStatus.FAILED
        transition(
            session,
            request,
            target,
            decision.reason,
            now=now,
            only_if=only_if,
            claimed_by=None,
            lease_until=None,
        )
        return
    reason = f"attempt {request.attempt_count} {outcome}; trying again later"
    if decision.moved:
        reason += f", when we open: {local_text(decision.at, subscriber.time_zone)}"
    transition(
        session,
        request,
        RequestStatus.RETRY_WAIT,
        reason,
        now=now,
        only_if=only_if,
        due_at=decision.at,
        claimed_by=None,
        lease_until=None,
    )


def app_args(request_id: str, leg: str) -> list[str]:
    """What the Stasis application routes by: ``callback,<request id>,<leg>``."""
    return ["callback", request_id, leg]


class AgentFirstCall:
    def __init__(
        self,
        ari: AriClient,
        sessions: sessionmaker[Session],
        database: DatabaseThread,
        settings: CallSettings,
        claim: Claim,
        on_finished: Callable[[AgentFirstCall], None],
    ) -> None:
        self.ari = ari
        self.sessions = sessions
        self.database = database
        self.settings = settings
        self.claim = claim
        self.request_id = claim.request_id
        self.attempt_id = claim.attempt_id
        self.on_finished = on_finished
        self.agent_channel: str | None = None
        self.visitor_channel: str | None = None
        self.bridge_id: str | None = None
        self.accepted = False
        self.finished = False
        self._visitor_taken_up = False
        self._accept_timer: asyncio.Task[None] | None = None
        self.agents = list(claim.agents)
        self.visitor_phone = claim.visitor_phone
        self.business_caller_id = claim.business_caller_id
        prompt = claim.whisper_prompt
        self.whisper = (f"sound:{prompt}",) if prompt else settings.whisper
        self.whisper_playback: str | None = None
        self._outage = OutageLog(log, f"request {self.request_id}: recording the call")
        # When the attempt ended, kept for a retry of _close (see there).
        self._closed_at: datetime | None = None
        # Whether anything of this attempt was dialled: until then it can be given back.
        self._dialled = False
        # The agent this call holds (routing.py): the claim reserved the first one already.
        self._held: int | None = claim.agents[0][0] if claim.agents else None
        # Set when Asterisk, shutting down, refused the attempt's first call (see _give_back).
        self.refused_by_stopping_asterisk = False

    def _channel_for(self, leg: str) -> str:
        return channel_id(self.request_id, self.claim.attempt_number, leg)

    @property
    def _cdr_variables(self) -> dict[str, str]:
        """Each leg's call detail record names the attempt: its billable seconds come back
        over AMI (cdr_manager) and are recorded on it (see ami.py)."""
        return {f"CDR({CDR_ATTEMPT_VARIABLE})": str(self.attempt_id)}

    @property
    def channels(self) -> set[str]:
        return {c for c in (self.agent_channel, self.visitor_channel) if c is not None}

    # --- database steps (short transactions, run off the event loop) ------------------------

    async def _record(self, step: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a database step, tried again for as long as the database is unreachable: what
        it records must be in the database before what it enables happens, and the call's
        events wait meanwhile. Were the worker stopped for good meanwhile, its lease runs out
        and another worker's housekeeping closes the attempt. Each step is safe to repeat."""
        return await self.database.run_until_done(self._outage, step, *args, **kwargs)

    def _update_attempt(self, **values: object) -> None:
        with self.sessions() as session:
            attempt = session.get_one(CallAttempt, self.attempt_id)
            for name, value in values.items():
                setattr(attempt, name, value)
            session.commit()

    def _move(self, target: RequestStatus, reason: str, **attempt_values: object) -> bool:
        """Move the request, and record ``attempt_values`` in the same transaction."""
        with self.sessions() as session:
            request = session.get_one(CallbackRequest, self.request_id)
            if request.status == target:
                return True
            try:
                transition(session, request, target, reason)
            except (ValueError, RuntimeError) as exc:
                log.warning("request %s: %s", self.request_id, exc)
                session.rollback()
                return False
            if attempt_values:
                attempt = session.get_one(CallAttempt, self.attempt_id)
                for name, value in attempt_values.items():
                    setattr(attempt, name, value)
            session.commit()
            return True

    def _hand_over(self, agent_id: int) -> bool:
        """Hold ``agent_id`` for this call (the first agent is held from the claim on), and
        free the one it held before; False when that agent is not available."""
        with self.sessions() as session:
            reserved = routing.hand_over(
                session, agent_id, self.request_id, self.settings.clock.now()
            )
            session.commit()
            return reserved

    def _visitor_call(self) -> tuple[str, str]:
        """The visitor's dial string (re-validated here, at dial time) and the caller ID."""
        return trunk_endpoint(self.visitor_phone), self.business_caller_id

    def _close(self, cause: int, cause_text: str, outcome: str | None = None) -> None:
        """Complete the request, or record a failed attempt and retry, give up or expire."""
        if self._closed_at is None:
            self._closed_at = self.settings.clock.now()
        now = self._closed_at
        with self.sessions() as session:
            if session.get_one(CallAttempt, self.attempt_id).ended_at == now:
                # Tried again after the database's answer was lost: the commit was made.
                return
            request = session.get_one(CallbackRequest, self.request_id)
            connected = request.status == RequestStatus.CONNECTED
            if connected:
                ended = "answered"
            else:
                ended = outcome or OUTCOMES.get(cause, "failed")
                if ended == "answered":
                    # Normal clearing before the bridge: the agent (or visitor) hung up early.
                    ended = "failed" if self.accepted else "rejected"
            ours = request.attempt_count == self.claim.attempt_number and (
                request.status in IN_CALL
            )
            moved = False
            try:
                if ours and connected:
                    transition(
                        session,
                        request,
                        RequestStatus.COMPLETED,
                        "the call ended",
                        now=now,
                        claimed_by=None,
                        lease_until=None,
                    )
                    moved = True
                elif ours:
                    retry_or_give_up(session, request, ended, now)
                    moved = True
            except (StaleRequest, IllegalTransition) as exc:
                log.warning("request %s: changed meanwhile: %s", self.request_id, exc)
                session.rollback()
            # Its agent is free when the request is this call's (moved here, or still in this
            # call), or over for good (canceled meanwhile). Not when another worker or
            # housekeeping moved it back to waiting: they freed this call's agent, and a claim
            # may hold one for it again by the time this is written.
            still_ours = request.status in IN_CALL and (
                request.attempt_count == self.claim.attempt_number
            )
            if moved or still_ours or request.status not in (*IN_CALL, *UNSERVED):
                routing.release(
                    session,
                    self.request_id,
                    now,
                    talked=connected,
                    wrap_up_seconds=request.subscriber.wrap_up_seconds,
                )
            # Whoever moves the request now (its claim released and taken up again, or
            # canceled), this attempt's own record ends here.
            attempt = session.get_one(CallAttempt, self.attempt_id)
            attempt.ended_at = now
            attempt.hangup_cause = cause
            attempt.hangup_cause_text = cause_text
            attempt.outcome = ended
            session.commit()

    # --- the call ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._ring_next_agent(0, "no agent is assigned")

    async def _ring_next_agent(self, last_cause: int, last_text: str) -> None:
        """Ring the next agent in order; when none is left, the attempt has failed."""
        while self.agents:
            agent_id, agent_name = self.agents.pop(0)
            if agent_id != self._held and not await self._record(self._hand_over, agent_id):
                continue  # paused, offline or on another call since: the next one
            self._held = agent_id
            self.agent_channel = self._channel_for(agent_name)
            if self.agent_channel != self.claim.first_channel:
                await self._record(
                    self._update_attempt, agent_id=agent_id, agent_channel_id=self.agent_channel
                )
            try:
                await self.ari.originate(
                    f"PJSIP/{agent_name}",
                    app=self.settings.app,
                    app_args=app_args(self.request_id, "agent"),
                    caller_id=self.visitor_phone,
                    timeout=self.settings.agent_ring_seconds,
                    channel_id=self.agent_channel,
                    variables=self._cdr_variables,
                )
                self._dialled = True
            except AriUnavailable as exc:
                # Asterisk itself is away (stopped, restarting): no agent can be rung, and that
                # is no agent's doing. The attempt fails and is retried by the rules.
                log.warning("request %s: Asterisk unreachable: %s", self.request_id, exc)
                self.agent_channel = None
                await self._hang_up(self.channels)
                text = f"Asterisk unreachable: {exc.message}"[:100]  # the column's length
                await self._record(self._close, 0, text)
                self._finish()
                return
            except AriError as exc:
                if await self._refused_while_shutting_down(exc):
                    self.agent_channel = None
                    await self._give_back()
                    return
                log.warning("request %s: ringing %s failed: %s", self.request_id, agent_name, exc)
                last_cause, last_text = 0, f"could not ring {agent_name}: {exc.message}"
                continue
            return
        self.agent_channel = None
        await self._no_agent_left(last_cause, last_text)

    async def _refused_while_shutting_down(self, exc: AriError) -> bool:
        """The attempt's first call was refused, and Asterisk makes no channel at all: it is
        shutting down (or went away meanwhile). Nobody was rung, nobody answered."""
        if self._dialled or exc.status != 500:
            return False
        try:
            return not await self.ari.accepts_new_channels()
        except AriUnavailable:
            return True
        except AriError:
            return False

    async def _give_back(self) -> None:
        """Undo the attempt Asterisk refused while shutting down: it is no one's answer, so
        the request waits for Asterisk with its attempts as they were."""
        log.warning("request %s: Asterisk is shutting down; attempt given back", self.request_id)
        self.refused_by_stopping_asterisk = True
        await self._hang_up(self.channels)
        reason = "Asterisk was shutting down; not counted as an attempt, tried when it is back"
        if not await self._record(self._return_to_queue, reason):
            await self._record(self._close, 0, "Asterisk was shutting down")
        self._finish()

    def _return_to_queue(self, reason: str) -> bool:
        """False when the request moved meanwhile (canceled): the attempt is then closed."""
        now = self.settings.clock.now()
        with self.sessions() as session:
            request = session.get_one(CallbackRequest, self.request_id)
            given_back = self.claim.attempt_number - 1
            if request.status == RequestStatus.RETRY_WAIT and request.attempt_count == given_back:
                return True  # tried again after the database's answer was lost
            if request.attempt_count != self.claim.attempt_number or (
                request.status not in IN_CALL
            ):
                return False
            try:
                transition(
                    session,
                    request,
                    RequestStatus.RETRY_WAIT,
                    reason,
                    now=now,
                    due_at=now,
                    claimed_by=None,
                    lease_until=None,
                    attempt_count=given_back,
                )
            except (StaleRequest, IllegalTransition):
                session.rollback()
                return False
            attempt = session.get(CallAttempt, self.attempt_id)
            if attempt is not None:  # else given back already, the answer lost on its way
                session.delete(attempt)
            routing.release(session, self.request_id, now, talked=False, wrap_up_seconds=0)
            session.commit()
            return True

    async def _no_agent_left(self, cause: int, cause_text: str) -> None:
        await self._record(self._close, cause, cause_text, "no_agent")
        self._finish()

    async def handle(self, event: Event) -> None:
        if self.finished:
            return
        match event:
            case StasisStart(channel=channel) if channel.id == self.agent_channel:
                if self.whisper_playback is None:  # else taken up already (see resume)
                    await self._agent_answered()
            case ChannelDtmfReceived(channel=channel, digit=digit) if (
                channel.id == self.agent_channel and not self.accepted
            ):
                if digit == ACCEPT_DIGIT:
                    await self._agent_accepted()
            case StasisStart(channel=channel) if channel.id == self.visitor_channel:
                await self._take_up_visitor()
            case ChannelDestroyed(channel=channel, cause=cause, cause_txt=text) if (
                channel.id in self.channels
            ):
                await self._hung_up(channel.id, cause, text)

    async def _take_up_visitor(self) -> None:
        """The visitor answered: once, whether told by its StasisStart or found Up (resume)."""
        if not self._visitor_taken_up:
            self._visitor_taken_up = True
            await self._visitor_answered()

    async def _agent_answered(self) -> None:
        answered_at = self.settings.clock.now()
        assert self.agent_channel is not None
        self.whisper_playback = f"{self.agent_channel}-whisper"
        await self.ari.play(
            self.agent_channel, list(self.whisper), playback_id=self.whisper_playback
        )
        self._accept_timer = asyncio.create_task(self._accept_deadline())
        # After the whisper has started: the agent hears it without waiting for the database.
        await self._record(self._update_attempt, answered_at=answered_at)

    def _stop_accept_timer(self) -> None:
        if self._accept_timer is not None:
            self._accept_timer.cancel()

    async def _accept_deadline(self) -> None:
        await asyncio.sleep(self.settings.accept_seconds)
        if not self.accepted and self.agent_channel is not None:
            log.info("request %s: the agent did not press %s", self.request_id, ACCEPT_DIGIT)
            await self.ari.hangup(self.agent_channel)

    async def _agent_accepted(self) -> None:
        self.accepted = True
        self._stop_accept_timer()
        try:
            endpoint, caller_id = self._visitor_call()
        except UnsafeNumber as exc:
            await self._refuse_to_dial(exc)
            return
        self.visitor_channel = self._channel_for("visitor")
        if not await self._record(
            self._move,
            RequestStatus.DIALING_VISITOR,
            "the agent accepted; calling the visitor",
            visitor_channel_id=self.visitor_channel,
        ):
            self.visitor_channel = None
            return
        assert self.agent_channel is not None
        # The visitor first: ARI queues a channel's operations, so ringback for the agent
        # would wait behind the whisper; the whisper is cut short, its job done.
        await self.ari.originate(
            endpoint,
            app=self.settings.app,
            app_args=app_args(self.request_id, "visitor"),
            caller_id=caller_id,
            timeout=self.settings.visitor_ring_seconds,
            channel_id=self.visitor_channel,
            variables=self._cdr_variables,
        )
        if self.whisper_playback is not None:
            await self.ari.stop_playback(self.whisper_playback)
        await self.ari.ring(self.agent_channel)

    async def _visitor_answered(self) -> None:
        assert self.agent_channel is not None
        assert self.visitor_channel is not None
        await self.ari.ring_stop(self.agent_channel)
        bridge = await self.ari.create_bridge("mixing", name=bridge_name(self.request_id))
        self.bridge_id = bridge.id
        try:
            await self.ari.add_channel(bridge.id, [self.agent_channel, self.visitor_channel])
        except AriError as exc:
            # One side hung up in this very moment: its ChannelDestroyed closes the attempt.
            log.info("request %s: not bridged: %s", self.request_id, exc)
            return
        await self._record(
            self._move, RequestStatus.CONNECTED, "the agent and the visitor are talking"
        )

    async def _hung_up(self, gone_channel: str, cause: int, cause_text: str) -> None:
        if gone_channel == self.agent_channel and not self.accepted:
            # Busy, no answer, rejected, or did not press 1: the next agent, same attempt.
            self._stop_accept_timer()
            log.info("request %s: agent gone (%s %s)", self.request_id, cause, cause_text)
            await self._ring_next_agent(cause, cause_text)
            return
        self.finished = True
        self._stop_accept_timer()
        visitor_never_answered = gone_channel == self.visitor_channel and self.bridge_id is None
        if visitor_never_answered and self.agent_channel is not None:
            await self._tell_agent_and_release(self.agent_channel)
        await self._hang_up(self.channels - {gone_channel})
        await self._record(self._close, cause, cause_text)
        self._finish()

    async def _hang_up(self, channels: set[str]) -> None:
        """Hang up ``channels`` and the bridge. Asterisk not answering (it stopped, it
        restarts) must not keep the request open: the attempt is closed all the same."""
        for channel in channels:
            try:
                await self.ari.hangup(channel)
            except AriError as exc:
                log.warning("request %s: hanging up %s: %s", self.request_id, channel, exc)
        if self.bridge_id is not None:
            try:
                await self.ari.destroy_bridge(self.bridge_id)
            except AriError as exc:
                log.warning("request %s: destroying the bridge: %s", self.request_id, exc)

    async def _tell_agent_and_release(self, agent_channel: str) -> None:
        """The visitor did not answer: the agent hears why before the line drops."""
        try:
            await self.ari.ring_stop(agent_channel)
            await self.ari.play(agent_channel, list(self.settings.visitor_unreachable))
        except AriError:
            return
        await asyncio.sleep(self.settings.unreachable_seconds)

    async def abandon(self, reason: str) -> None:
        """End the call now (the worker stops, or part of it went while the worker was away):
        hang up, and close the request honestly."""
        if self.finished:
            return
        self.finished = True
        self._stop_accept_timer()
        await self._hang_up(self.channels)
        await self._record(self._close, 0, reason)
        self._finish()

    def _finish(self) -> None:
        self.finished = True
        self.on_finished(self)

    # --- a call a previous life of this worker left on Asterisk (see adoption.py) ------------

    def take_up(self, owned: Owned, found: OnAsterisk) -> None:
        """Know the call's live channels and bridge before its first event is routed by them;
        ``resume`` then carries it on."""
        agent = found.channel(owned.agent_channel)
        visitor = found.channel(owned.visitor_channel)
        bridge = found.bridge_of(self.request_id)
        self.agent_channel = agent.id if agent is not None else None
        self.visitor_channel = visitor.id if visitor is not None else None
        self.bridge_id = bridge.id if bridge is not None else None
        # The previous life placed this attempt's calls: never given back (see _give_back).
        self._dialled = True
        self._held = None  # held again on ringing: harmless for the agent held all along
        self.agents = list(owned.agents_after)
        if agent is None and owned.agent_rung is not None:
            # Its channel is gone, or was never made: that agent is rung (again) first.
            self.agents.insert(0, owned.agent_rung)

    async def resume(self, owned: Owned, found: OnAsterisk) -> None:
        """Carry on a call this worker's previous life left on Asterisk (after ``take_up``):
        what still rings or talks is taken up where it stands; what vanished meanwhile closes
        the attempt."""
        agent = found.channel(owned.agent_channel)
        visitor = found.channel(owned.visitor_channel)
        bridge = found.bridge_of(self.request_id)
        log.info(
            "request %s: taken up (%s; live: %s)",
            self.request_id,
            owned.status,
            ", ".join(sorted(self.channels)) or "nothing",
        )
        both_bridged = (
            bridge is not None
            and agent is not None
            and visitor is not None
            and {agent.id, visitor.id} <= set(bridge.channels)
        )
        if both_bridged:
            # Talking, maybe since a moment before the stop that recorded it.
            self.accepted = True
            if owned.status != RequestStatus.CONNECTED:
                await self._record(
                    self._move, RequestStatus.CONNECTED, "the agent and the visitor are talking"
                )
            return
        if owned.status == RequestStatus.CONNECTED:
            self.accepted = True
            await self.abandon("the call ended while the worker was away")
            return
        await self._resume_ringing(owned.status, agent, visitor)

    async def _resume_ringing(
        self, status: RequestStatus, agent: Channel | None, visitor: Channel | None
    ) -> None:
        if status == RequestStatus.DIALING_VISITOR:
            self.accepted = True
            if agent is None or visitor is None:
                await self.abandon("a line ended while the worker was away")
            elif visitor.state == UP:
                # Answered just before the stop, or after the worker was back but before it
                # looked (its StasisStart, still on its way, is then ignored). Asterisk hangs
                # up a phone answered in between: no app listened.
                await self._take_up_visitor()
            return
        await self._resume_agent(agent)

    async def _resume_agent(self, agent: Channel | None) -> None:
        """The agent rang or listened to the whisper when the worker stopped."""
        if agent is None:
            await self._ring_next_agent(0, "the agent's line ended while the worker was away")
        elif agent.state == UP:
            # Whether "1" was pressed meanwhile is unknown: the agent hears the whisper again.
            with suppress(AriError):
                await self.ari.stop_playback(f"{agent.id}-whisper")
            await self._agent_answered()

    async def _refuse_to_dial(self, exc: UnsafeNumber) -> None:
        """The stored number fails the dial-time check: hang up what rings, fail the request."""
        log.error("request %s: %s", self.request_id, exc)
        self.finished = True
        self._stop_accept_timer()
        await self._hang_up(self.channels)
        await self._record(self._close, 0, "the number cannot be dialled", UNDIALLABLE)
        self._finish()


class VisitorFirstCall(AgentFirstCall):
    """Visitor first: call the visitor, hold them with music while agents ring, then bridge."""

    async def start(self) -> None:
        try:
            endpoint, caller_id = self._visitor_call()
        except UnsafeNumber as exc:
            await self._refuse_to_dial(exc)
            return
        self.visitor_channel = self.claim.first_channel
        assert self.visitor_channel is not None
        try:
            await self.ari.originate(
                endpoint,
                app=self.settings.app,
                app_args=app_args(self.request_id, "visitor"),
                caller_id=caller_id,
                timeout=self.settings.visitor_ring_seconds,
                channel_id=self.visitor_channel,
                variables=self._cdr_variables,
            )
            self._dialled = True
        except AriError as exc:
            if await self._refused_while_shutting_down(exc):
                self.visitor_channel = None
                await self._give_back()
                return
            await self._record(self._close, 0, f"originate failed: {exc.message}")
            self._finish()

    async def _visitor_answered(self) -> None:
        assert self.visitor_channel is not None
        if not await self._record(
            self._move, RequestStatus.DIALING_AGENT, "the visitor answered; calling an agent"
        ):
            return
        await self.ari.play(self.visitor_channel, list(self.settings.visitor_greeting))
        await self.ari.start_moh(self.visitor_channel)
        await self._ring_next_agent(0, "no agent is assigned")

    async def _agent_accepted(self) -> None:
        self.accepted = True
        self._stop_accept_timer()
        assert self.agent_channel is not None
        assert self.visitor_channel is not None
        await self.ari.stop_moh(self.visitor_channel)
        bridge = await self.ari.create_bridge("mixing", name=bridge_name(self.request_id))
        self.bridge_id = bridge.id
        await self.ari.add_channel(bridge.id, [self.agent_channel, self.visitor_channel])
        await self._record(
            self._move, RequestStatus.CONNECTED, "the agent and the visitor are talking"
        )

    async def _resume_ringing(
        self, status: RequestStatus, agent: Channel | None, visitor: Channel | None
    ) -> None:
        if visitor is None:
            await self.abandon("the visitor's line ended while the worker was away")
        elif status == RequestStatus.DIALING_VISITOR:
            if visitor.state == UP:
                await self._take_up_visitor()
        else:
            # The visitor holds, with music, while agents are rung.
            await self._resume_agent(agent)

    async def _no_agent_left(self, cause: int, cause_text: str) -> None:
        """Nobody could take the call: the visitor hears so, and the attempt fails."""
        visitor = self.visitor_channel
        if visitor is not None:
            try:
                await self.ari.stop_moh(visitor)
                await self.ari.play(visitor, list(self.settings.no_agent))
                await asyncio.sleep(self.settings.unreachable_seconds)
            except AriError:
                pass
            self.finished = True
            await self._hang_up({visitor})
        await self._record(self._close, cause, cause_text, "no_agent")
        self._finish()

    async def _hung_up(self, gone_channel: str, cause: int, cause_text: str) -> None:
        if gone_channel == self.visitor_channel and self.agent_channel is not None:
            # The visitor left while agents rang: stop ringing them.
            self.agents.clear()
        await super()._hung_up(gone_channel, cause, cause_text)
