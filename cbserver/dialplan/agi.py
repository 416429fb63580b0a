"""The worker's FastAGI server (panoramisk): where a call coming in from the trunk goes.

``extensions.conf`` asks ``agi://127.0.0.1:<agi port>/inbound,<dialled number>`` for each call
from the trunk, and ``/answered,<request id>`` on the agent's line when an agent answers one.

- A call to a business's number (its caller ID, the number its call-backs show, or its inbound
  number) is that business's. From a visitor whose call-back is still waiting, it is a **return
  call**: the caller hears "please hold while I try to connect you", the business's available
  agents ring together with the visitor's number as caller ID, and the agent who answers
  completes the request. Any other caller hears the same and reaches the same agents, or, if the
  business's ``unknown_callers`` is "message", hears "nobody is available to take your call" and
  the call ends.
- A number that is no business's hears "not in service"; with no agent available the caller
  hears "all circuits are busy" and the call ends.
- Whatever goes wrong here (the database away, a bad request, a slow answer) the dialplan is
  told "sorry" (an error prompt) and hangs up: never a stuck channel.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from panoramisk.fast_agi import Application, Request  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import routing
from cbserver.clock import Clock, SystemClock
from cbserver.db import DatabaseThread
from cbserver.models import (
    CallbackRequest,
    RequestStatus,
    Subscriber,
    UnknownCallers,
)
from cbserver.number_policy import e164_in
from cbserver.scheduling import UNSERVED
from cbserver.states import IllegalTransition, StaleRequest, transition

log = logging.getLogger("cbserver.dialplan")

HOLD_PROMPT = "pls-hold-while-try"
NOT_IN_SERVICE = "ss-noservice"
ALL_BUSY = "all-circuits-busy-now"
# For a caller with no waiting call-back, when the business takes no other calls.
UNKNOWN_CALLER_MESSAGE = "vm-nobodyavail"
# The longest the dialplan waits on the database for an answer; then it apologises.
ANSWER_WITHIN = 3.0
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9+&/_.:-]*$")


@dataclass(frozen=True)
class Route:
    """What the dialplan is told: the prompt, who to ring (``&``-joined PJSIP endpoints, empty
    for nobody) and the request a return call is about (empty for none)."""

    prompt: str
    dial: str = ""
    request_id: str = ""

    def variables(self, ring_seconds: int) -> dict[str, str]:
        return {
            "CBSERVER_PROMPT": self.prompt,
            "CBSERVER_DIAL": self.dial,
            "CBSERVER_REQUEST": self.request_id,
            "CBSERVER_RING_SECONDS": str(ring_seconds),
        }


def _numbers(subscriber: Subscriber) -> set[str]:
    """The numbers a call in reaches the business by."""
    return {n for n in (subscriber.caller_id, subscriber.inbound_number) if n is not None}


def route_call(session: Session, dialled: str, caller: str, now: datetime) -> Route:
    """Where a call to ``dialled`` from ``caller`` goes."""
    subscriber = next(
        (
            s
            for s in session.scalars(select(Subscriber).where(Subscriber.active))
            if e164_in(dialled, s.country) in _numbers(s)
        ),
        None,
    )
    if subscriber is None:
        log.info("a call to %s: no business has that number", dialled)
        return Route(NOT_IN_SERVICE)
    request_id = ""
    visitor = e164_in(caller, subscriber.country)
    if visitor is not None:
        waiting = session.scalars(
            select(CallbackRequest.id)
            .where(
                CallbackRequest.subscriber_id == subscriber.id,
                CallbackRequest.visitor_phone == visitor,
                CallbackRequest.status.in_(UNSERVED),
            )
            .order_by(CallbackRequest.created_at.desc())
            .limit(1)
        ).first()
        request_id = waiting or ""
    if not request_id and subscriber.unknown_callers == UnknownCallers.MESSAGE:
        log.info("a call for %s from %s (no waiting request): the message", subscriber.slug, caller)
        return Route(UNKNOWN_CALLER_MESSAGE)
    agents = [name for _, name in routing.available_in_offer_order(session, subscriber.id, now)]
    about = f"about request {request_id}" if request_id else "(no waiting request)"
    if not agents:
        log.info("a call for %s from %s %s: no agent available", subscriber.slug, caller, about)
        return Route(ALL_BUSY, request_id=request_id)
    log.info("a call for %s from %s %s: ringing %s", subscriber.slug, caller, about, agents)
    return Route(HOLD_PROMPT, "&".join(f"PJSIP/{name}" for name in agents), request_id)


def complete_return_call(session: Session, request_id: str, agent: str, now: datetime) -> bool:
    """An agent answered the visitor's return call: the call-back is done. False when the
    request is not waiting any more (taken up meanwhile, canceled)."""
    request = session.get(CallbackRequest, request_id)
    if request is None or request.status not in UNSERVED:
        return False
    try:
        transition(
            session,
            request,
            RequestStatus.COMPLETED,
            f"the visitor called back and {agent} answered",
            now=now,
        )
    except (StaleRequest, IllegalTransition):
        session.rollback()
        return False
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
        with self.sessions() as session:
            return route_call(session, dialled, caller, self.clock.now())

    async def answered(self, headers: Mapping[str, str]) -> dict[str, str]:
        request_id = headers.get("agi_arg_1", "")
        agent = headers.get("agi_channel", "").removeprefix("PJSIP/").rsplit("-", 1)[0]
        if request_id:
            done = await self.database.run(self._complete, request_id, agent)
            log.info(
                "request %s: return call answered by %s; completed: %s", request_id, agent, done
            )
        return {}

    def _complete(self, request_id: str, agent: str) -> bool:
        with self.sessions() as session:
            return complete_return_call(session, request_id, agent, self.clock.now())


async def serve(calls: InboundCalls, port: int) -> Any:
    """Listen on loopback; the server, to be closed by the caller."""
    return await asyncio.start_server(calls.application().handler, "127.0.0.1", port)
