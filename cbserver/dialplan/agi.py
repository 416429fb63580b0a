"""The worker's FastAGI server (panoramisk): where a call coming in from the trunk goes.

``extensions.conf`` asks ``agi://127.0.0.1:<agi port>/inbound,<dialled number>`` for each call
from the trunk, ``/answered,<request id>`` on the agent's line when an agent answers one, and
``/ended,<request id>`` when such a call ends.

- A call to a business's number (its caller ID, the number its call-backs show, or its inbound
  number) is that business's; when several businesses show one number, the one the caller has a
  call-back waiting with. From a visitor whose call-back is still waiting, it is a **return
  call**: the caller hears "connecting you about your call-back request", the business's
  available agents ring together with the visitor's number as caller ID, and no worker calls
  the visitor meanwhile. The agent who answers completes the request; the call is an attempt of
  it (kind ``return_call``) and holds the agent like a call-back does, so the agent's console
  shows the request and, after the call, the wrap-up. Any other caller hears "please hold" and
  reaches the same agents, or, if the business's ``unknown_callers`` is "message", hears
  "nobody is available to take your call" and the call ends.
- A number that is no business's hears "not in service"; with no agent available the caller
  hears "all circuits are busy" and the call ends.
- Whatever goes wrong here (the database away, a bad request, a slow answer) the dialplan is
  told "sorry" (an error prompt) and hangs up: never a stuck channel.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from panoramisk.fast_agi import Application, Request  # type: ignore[import-untyped]
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents, routing
from cbserver.clock import Clock, SystemClock
from cbserver.db import DatabaseThread
from cbserver.models import (
    AttemptKind,
    CallAttempt,
    CallbackRequest,
    RequestStatus,
    Subscriber,
    UnknownCallers,
)
from cbserver.number_policy import as_international, e164_in
from cbserver.scheduling import UNSERVED
from cbserver.states import IllegalTransition, StaleRequest, transition

log = logging.getLogger("cbserver.dialplan")

# cbserver's own prompt (asterisk-conf/sounds/<language>/), for a visitor ringing back.
RETURN_CALL_PROMPT = "cbserver-return-call"
HOLD_PROMPT = "pls-hold-while-try"
NOT_IN_SERVICE = "ss-noservice"
ALL_BUSY = "all-circuits-busy-now"
# For a caller with no waiting call-back, when the business takes no other calls.
UNKNOWN_CALLER_MESSAGE = "vm-nobodyavail"
# The longest the dialplan waits on the database for an answer; then it apologises.
ANSWER_WITHIN = 3.0
# How long past the agents' ringing a return call keeps its request from being claimed: the
# prompt, the answer and the AGI steps.
HOLD_MARGIN = timedelta(seconds=30)
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9+&/_.:-]*$")


@dataclass(frozen=True)
class Route:
    """What the dialplan is told: the prompt (one of Asterisk's sounds, or of cbserver's own
    when ``own_prompt``), who to ring (``&``-joined PJSIP endpoints, empty for nobody), the
    request a return call is about (empty for none) and the caller's language."""

    prompt: str
    dial: str = ""
    request_id: str = ""
    language: str = "en"
    own_prompt: bool = False

    def variables(self, ring_seconds: int) -> dict[str, str]:
        return {
            "CBSERVER_PROMPT": self.prompt,
            "CBSERVER_OWN_PROMPT": "1" if self.own_prompt else "",
            "CBSERVER_LANGUAGE": self.language,
            "CBSERVER_DIAL": self.dial,
            "CBSERVER_REQUEST": self.request_id,
            "CBSERVER_RING_SECONDS": str(ring_seconds),
        }


def _numbers(subscriber: Subscriber) -> set[str]:
    """The numbers a call in reaches the business by."""
    return {n for n in (subscriber.caller_id, subscriber.inbound_number) if n is not None}


def _read(number: str, business: Subscriber) -> str | None:
    """A trunk's number as the business reads it, in E.164: a national number of its country,
    else (no such national number) an international one sent without its "+"."""
    return e164_in(number, business.country) or as_international(number)


def _businesses(session: Session, dialled: str) -> list[Subscriber]:
    """The active businesses a call to ``dialled`` reaches, first added first."""
    active = session.scalars(select(Subscriber).where(Subscriber.active).order_by(Subscriber.id))
    return [business for business in active if _read(dialled, business) in _numbers(business)]


def _waiting_request(
    session: Session, businesses: Sequence[Subscriber], caller: str
) -> CallbackRequest | None:
    """The caller's latest call-back still waiting with one of ``businesses``."""
    found: list[CallbackRequest] = []
    for business in businesses:
        visitor = _read(caller, business)
        if visitor is None:
            continue
        latest = session.scalars(
            select(CallbackRequest)
            .where(
                CallbackRequest.subscriber_id == business.id,
                CallbackRequest.visitor_phone == visitor,
                CallbackRequest.status.in_(UNSERVED),
            )
            .order_by(CallbackRequest.created_at.desc())
            .limit(1)
        ).first()
        if latest is not None:
            found.append(latest)
    return max(found, key=lambda request: request.created_at, default=None)


def _hold(session: Session, request_id: str, until: datetime) -> bool:
    """No worker claims the waiting request before ``until``; its place in the queue stays.
    False when it is not waiting any more (a worker took it meanwhile). Committed."""
    result = session.execute(
        update(CallbackRequest)
        .where(CallbackRequest.id == request_id, CallbackRequest.status.in_(UNSERVED))
        .values(held_until=until)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def route_call(
    session: Session, dialled: str, caller: str, now: datetime, hold: timedelta
) -> Route:
    """Where a call to ``dialled`` from ``caller`` goes. A return call's request is held from
    claims for ``hold`` while its agents ring."""
    businesses = _businesses(session, dialled)
    if not businesses:
        log.info("a call to %s: no business has that number", dialled)
        return Route(NOT_IN_SERVICE)
    waiting = _waiting_request(session, businesses, caller)
    subscriber = waiting.subscriber if waiting is not None else businesses[0]
    language = subscriber.language
    if waiting is None and subscriber.unknown_callers == UnknownCallers.MESSAGE:
        log.info("a call for %s from %s (no waiting request): the message", subscriber.slug, caller)
        return Route(UNKNOWN_CALLER_MESSAGE, language=language)
    agents = [name for _, name in routing.available_in_offer_order(session, subscriber.id, now)]
    about = f"about request {waiting.id}" if waiting is not None else "(no waiting request)"
    request_id = waiting.id if waiting is not None else ""
    if not agents:
        log.info("a call for %s from %s %s: no agent available", subscriber.slug, caller, about)
        return Route(ALL_BUSY, request_id=request_id, language=language)
    log.info("a call for %s from %s %s: ringing %s", subscriber.slug, caller, about, agents)
    dial = "&".join(f"PJSIP/{name}" for name in agents)
    if waiting is None:
        return Route(HOLD_PROMPT, dial, language=language)
    if not _hold(session, waiting.id, now + hold):
        # A worker is calling the visitor this moment: their call is an ordinary one.
        log.info("request %s: taken by a worker meanwhile; not a return call", waiting.id)
        return Route(HOLD_PROMPT, dial, language=language)
    return Route(RETURN_CALL_PROMPT, dial, waiting.id, language, own_prompt=True)


def answer_return_call(session: Session, request_id: str, agent_name: str, now: datetime) -> bool:
    """An agent answered the visitor's return call: the call-back is done, the call is its
    attempt, and the agent is held by it until it ends. False when the request is not waiting
    any more (taken up meanwhile, canceled)."""
    request = session.get(CallbackRequest, request_id)
    if request is None or request.status not in UNSERVED:
        return False
    try:
        transition(
            session,
            request,
            RequestStatus.COMPLETED,
            f"the visitor called back and {agent_name} answered",
            now=now,
        )
    except (StaleRequest, IllegalTransition):
        session.rollback()
        return False
    agent = agents.named(session, agent_name)
    request.attempt_count += 1
    session.add(
        CallAttempt(
            request_id=request.id,
            number=request.attempt_count,
            kind=AttemptKind.RETURN_CALL,
            agent_id=agent.id if agent is not None else None,
            started_at=now,
            answered_at=now,
        )
    )
    if agent is not None and not routing.hold_for_return_call(session, agent.id, request.id):
        log.warning(
            "request %s: %s answered its return call while held by a call-back",
            request.id,
            agent_name,
        )
    session.commit()
    return True


def end_return_call(session: Session, request_id: str, now: datetime) -> bool:
    """The return call of ``request_id`` ended: its attempt is closed with the seconds agent
    and caller talked, and its agent, after the wrap-up, free. False when no such call is
    open."""
    attempt = session.scalars(
        select(CallAttempt)
        .where(
            CallAttempt.request_id == request_id,
            CallAttempt.kind == AttemptKind.RETURN_CALL,
            CallAttempt.ended_at.is_(None),
        )
        .order_by(CallAttempt.id.desc())
        .limit(1)
    ).first()
    if attempt is None:
        return False
    attempt.ended_at = now
    attempt.outcome = "answered"
    # Asterisk's ANSWEREDTIME would count from the caller's answer, before the greeting.
    talked = now - (attempt.answered_at or attempt.started_at)
    attempt.billable_seconds = max(0, round(talked.total_seconds()))
    routing.release(
        session,
        request_id,
        now,
        talked=True,
        wrap_up_seconds=attempt.request.subscriber.wrap_up_seconds,
    )
    session.commit()
    return True


class InboundCalls:
    """The FastAGI routes, their database steps on a thread of their own."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        database: DatabaseThread,
        ring_seconds: int,
        clock: Clock | None = None,
    ) -> None:
        self.sessions = sessions
        self.database = database
        self.ring_seconds = ring_seconds
        self.clock: Clock = clock or SystemClock()

    def application(self) -> Application:
        app = Application(loop=asyncio.get_running_loop())
        app.add_route("inbound", self._answering(self.inbound))
        app.add_route("answered", self._answering(self.answered))
        app.add_route("ended", self._answering(self.ended))
        return app

    def _answering(
        self, route: Callable[[Mapping[str, str]], Awaitable[dict[str, str]]]
    ) -> Callable[[Request], Awaitable[None]]:
        async def answer(request: Request) -> None:
            try:
                variables = await asyncio.wait_for(route(request.headers), ANSWER_WITHIN)
            except Exception:
                # The dialplan's own path for a worker that cannot answer: the apology.
                log.exception("AGI %s failed; the caller hears the apology", route.__name__)
                variables = {"CBSERVER_PROMPT": ""}
            for name, value in variables.items():
                if not _SAFE_VALUE.fullmatch(value):
                    raise ValueError(f"refusing to pass {name}={value!r} to the dialplan")
                await request.send_command(f'SET VARIABLE {name} "{value}"')

        return answer

    async def inbound(self, headers: Mapping[str, str]) -> dict[str, str]:
        dialled = headers.get("agi_arg_1") or headers.get("agi_extension", "")
        caller = headers.get("agi_callerid", "")
        route = await self.database.run(self._route, dialled, caller)
        return route.variables(self.ring_seconds)

    def _route(self, dialled: str, caller: str) -> Route:
        hold = timedelta(seconds=self.ring_seconds) + HOLD_MARGIN
        with self.sessions() as session:
            return route_call(session, dialled, caller, self.clock.now(), hold)

    async def answered(self, headers: Mapping[str, str]) -> dict[str, str]:
        request_id = headers.get("agi_arg_1", "")
        agent = headers.get("agi_channel", "").removeprefix("PJSIP/").rsplit("-", 1)[0]
        if request_id:
            done = await self.database.run(self._answer, request_id, agent)
            log.info(
                "request %s: return call answered by %s; completed: %s", request_id, agent, done
            )
        return {}

    def _answer(self, request_id: str, agent: str) -> bool:
        with self.sessions() as session:
            return answer_return_call(session, request_id, agent, self.clock.now())

    async def ended(self, headers: Mapping[str, str]) -> dict[str, str]:
        request_id = headers.get("agi_arg_1", "")
        if request_id:
            closed = await self.database.run(self._end, request_id)
            log.info("request %s: return call ended; attempt closed: %s", request_id, closed)
        return {}

    def _end(self, request_id: str) -> bool:
        with self.sessions() as session:
            return end_return_call(session, request_id, self.clock.now())


async def serve(calls: InboundCalls, port: int) -> Any:
    """Listen on loopback; the server, to be closed by the caller."""
    return await asyncio.start_server(calls.application().handler, "127.0.0.1", port)
