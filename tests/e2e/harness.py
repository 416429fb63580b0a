"""What the e2e tests share: deadlines instead of sleeps, free ports, an ARI event recorder,
the calls a sipp peer received, and the requests as the database holds them."""

from __future__ import annotations

import asyncio
import html
import inspect
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from cbserver.ari import AriClient, Event, StreamConnected, StreamDisconnected
from cbserver.models import CallbackRequest
from cbserver.sipp import SipMessage, SippPeer

SCENARIOS = Path(__file__).parent / "scenarios"
E = TypeVar("E", bound=Event)


async def until(
    predicate: Callable[[], Any | Awaitable[Any]],
    within: float = 5.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, for ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {within} s waiting for {text}")
        await asyncio.sleep(interval)


# sipp's media ports: audio RTP and RTCP, video RTP and RTCP, from its -mp on.
SIPP_MEDIA_PORTS = 4


def free_media_ports(sip_port: int) -> int:
    """The first of SIPP_MEDIA_PORTS free UDP ports in a row for a sipp peer's -mp, none of
    them its own SIP port (free until it starts): sipp binds them all, and fails on one taken."""
    while True:
        first = free_ports(1)[0]
        block = range(first, first + SIPP_MEDIA_PORTS)
        if sip_port in block:
            continue
        with ExitStack() as stack:
            try:
                for port in block:
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first


def free_ports(count: int, kind: int = socket.SOCK_DGRAM) -> list[int]:
    """Ports free for both UDP and TCP on loopback, all different."""
    ports: list[int] = []
    with ExitStack() as stack:
        while len(ports) < count:
            first = stack.enter_context(socket.socket(socket.AF_INET, kind))
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            other_kind = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            other = stack.enter_context(socket.socket(socket.AF_INET, other_kind))
            try:
                other.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
    return ports


@dataclass
class EventRecorder:
    """Consumes an ARI event stream in the background and keeps every event for assertions."""

    client: AriClient
    events: list[Event] = field(default_factory=list)
    connections: int = 0
    disconnections: int = 0
    _task: asyncio.Task[None] | None = None

    async def start(self, within: float = 5.0) -> None:
        self._task = asyncio.create_task(self._consume())
        await until(lambda: self.connections > 0, within, message="the ARI events WebSocket")

    async def _consume(self) -> None:
        async for item in self.client.events():
            if isinstance(item, StreamConnected):
                self.connections += 1
            elif isinstance(item, StreamDisconnected):
                self.disconnections += 1
            else:
                self.events.append(item)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def of_type(self, kind: type[E], channel_id: str | None = None) -> list[E]:
        found = [e for e in self.events if isinstance(e, kind)]
        if channel_id is not None:
            found = [
                e for e in found if getattr(getattr(e, "channel", None), "id", None) == channel_id
            ]
        return found

    async def wait_for(
        self, kind: type[E], channel_id: str | None = None, within: float = 10.0
    ) -> E:
        found = await until(
            lambda: self.of_type(kind, channel_id),
            within,
            message=lambda: f"{kind.__name__} for {channel_id}; saw {self.summary()}",
        )
        return found[0]  # type: ignore[no-any-return]

    def summary(self) -> str:
        return (
            ", ".join(
                f"{e.type}({getattr(getattr(e, 'channel', None), 'id', '')})"
                for e in self.events[-30:]
            )
            or "no events"
        )


def shown_status(page_html: str) -> str:
    """The status a visitor's status page shows, as the visitor reads it."""
    found = re.search(r'data-field="status_text">([^<]*)<', page_html)
    assert found is not None, page_html
    return html.unescape(found.group(1))


def dials(peer: SippPeer) -> list[SipMessage]:
    """The INVITEs a peer received, one per call (a retransmission is the same call)."""
    calls: dict[str | None, SipMessage] = {}
    for invite in peer.received("INVITE"):
        calls.setdefault(invite.header("Call-ID"), invite)
    return list(calls.values())


def dialled_number(invite: SipMessage) -> str:
    return invite.request_uri.removeprefix("sip:").split("@", 1)[0]


def requests_by_phone(sessions: sessionmaker[Session]) -> dict[str, CallbackRequest]:
    """Every request by its visitor's number, with its attempts and history loaded."""
    with sessions() as session:
        found = session.scalars(
            select(CallbackRequest).options(
                selectinload(CallbackRequest.attempts), selectinload(CallbackRequest.events)
            )
        ).all()
        return {request.visitor_phone: request for request in found}


def statuses(sessions: sessionmaker[Session]) -> Counter[str]:
    """How many requests are in each status: one query, cheap enough to poll."""
    with sessions() as session:
        rows = session.execute(
            select(CallbackRequest.status, func.count()).group_by(CallbackRequest.status)
        )
        return Counter({status: count for status, count in rows})


@dataclass(frozen=True)
class Tally:
    """A run's figures: what became of the requests asked for, and how often each number rang
    at the trunk (a retransmission is the same call)."""

    asked: int
    requests: dict[str, CallbackRequest]
    trunk_dials: Counter[str]

    @classmethod
    def of(cls, sessions: sessionmaker[Session], asked: int, *trunks: SippPeer) -> Tally:
        dialled = Counter(dialled_number(i) for trunk in trunks for i in dials(trunk))
        return cls(asked, requests_by_phone(sessions), dialled)

    @property
    def completed(self) -> int:
        return sum(1 for r in self.requests.values() if r.status == "completed")

    @property
    def lost(self) -> int:
        return self.asked - self.completed

    @property
    def retried(self) -> dict[str, list[tuple[str | None, str | None]]]:
        """The requests tried more than once, with how each attempt ended."""
        return {
            phone: [(a.outcome, a.hangup_cause_text) for a in request.attempts]
            for phone, request in self.requests.items()
            if len(request.attempts) > 1
        }

    @property
    def dialled_twice(self) -> list[str]:
        """Numbers rung more than once without a second attempt to show for it."""
        retried = self.retried
        return sorted(p for p, n in self.trunk_dials.items() if n > 1 and p not in retried)

    @property
    def without_attempt(self) -> list[str]:
        """Numbers rung more often than their requests have attempts with a visitor's leg."""

        def legs(phone: str) -> int:
            request = self.requests.get(phone)
            attempts = request.attempts if request is not None else []
            return sum(1 for a in attempts if a.visitor_channel_id is not None)

        return sorted(p for p, n in self.trunk_dials.items() if n > legs(p))

    def __str__(self) -> str:
        return (
            f"requests submitted {self.asked} / completed {self.completed} / dialled twice "
            f"{len(self.dialled_twice)} / lost {self.lost}"
        )
