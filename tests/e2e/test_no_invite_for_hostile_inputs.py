"""No hostile input ever becomes a call: the whole corpus (tests/hostile.py) goes through the real
web app over HTTP (the JSON API and the hosted form) while the real worker runs against real
Asterisk, with sipp peers as the trunk and as the agents' phones. Then one valid control request
is sent and dialled, which proves the pipeline was live all along; its INVITE must be the only
one the trunk saw, its agent's the only one the agents' phones saw, and it the only request stored.

The web app runs with every rate limit lifted and no minimum fill time (settings): the corpus is
hundreds of requests from one address within seconds, and each must meet the refusal it is
about, not a limit.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from cbserver.asterisk.instance import AsteriskInstance
from cbserver.callflow import CallSettings
from cbserver.config import Settings
from cbserver.models import (
    Agent,
    AgentAssignment,
    CallbackRequest,
    DeniedNumber,
    RequestStatus,
    Subscriber,
)
from cbserver.scheduling import UNSERVED
from cbserver.serve import WebServer
from cbserver.sipp import SippPeer
from cbserver.web import create_app
from cbserver.worker import Worker
from tests.e2e.conftest import Ports, ari_config
from tests.e2e.harness import free_ports, until
from tests.hostile import (
    ABSENT,
    BODY,
    CORPUS,
    DENIED,
    HOME,
    IDEMPOTENCY_KEY,
    INACTIVE,
    NO_LIMITS,
    ORIGIN,
    RAW,
    SUBSCRIBERS,
    VALID_PHONE,
    Hostile,
    add_subscribers,
    base_body,
    form_submission,
    sendable_by_form,
)

WORKER_APP = "cbserver-hostile-e2e"
CONTROL_PHONE = VALID_PHONE[HOME]


@pytest.fixture
def corpus_subscribers(sessions: sessionmaker[Session]) -> Iterator[None]:
    """The corpus subscribers, served by agent alice; gone from the shared database afterwards
    (the deny-list and the agent with a number would change what other tests see)."""
    with sessions() as session:
        # Requests other tests left waiting would be dialled meanwhile: every INVITE seen here
        # must be this test's.
        session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.status.in_(UNSERVED))
            .values(status=RequestStatus.CANCELED.value)
        )
        alice = session.scalars(select(Agent).where(Agent.name == "alice")).one()
        add_subscribers(session, alice)
        session.commit()
    yield
    with sessions() as session:
        session.execute(
            delete(DeniedNumber).where(DeniedNumber.pattern.in_(d.pattern for d in DENIED))
        )
        session.execute(
            update(Subscriber)
            .where(Subscriber.slug.in_([*SUBSCRIBERS, INACTIVE]))
            .values(active=False)
        )
        number_agent = session.scalars(select(Agent).where(Agent.name == "hostile-agent")).one()
        session.execute(delete(AgentAssignment).where(AgentAssignment.agent_id == number_agent.id))
        session.delete(number_agent)
        session.commit()


@pytest.fixture
async def worker(
    asterisk: AsteriskInstance, sessions: sessionmaker[Session]
) -> AsyncIterator[Worker]:
    running = Worker(
        ari_config(asterisk, app=WORKER_APP),
        sessions,
        name="hostile-worker",
        call_settings=CallSettings(app=WORKER_APP, accept_seconds=4),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture
async def web_url(
    settings: Settings, engine: Engine, worker: Worker, corpus_subscribers: None
) -> AsyncIterator[str]:
    """The web app served over HTTP as `cbserver run` serves it, waking the test's worker."""
    loop = asyncio.get_running_loop()

    def wake_worker() -> None:
        # The server's threads store requests; the worker's loop is this one.
        loop.call_soon_threadsafe(worker.wake)

    app = create_app(settings=settings.replace(**NO_LIMITS), engine=engine, wake_worker=wake_worker)
    server = WebServer(app, "127.0.0.1", free_ports(1, socket.SOCK_STREAM)[0])
    server.start()
    yield server.base_url.rstrip("/")
    server.stop()


def api_request(entry: Hostile) -> tuple[bytes, dict[bytes, bytes]]:
    """The entry as the bytes and headers of a POST to the API (a header may be Latin-1)."""
    headers = {b"Content-Type": b"application/json"}
    if entry.where == RAW:
        assert isinstance(entry.value, bytes)
        return entry.value, {b"Content-Type": entry.content_type.encode()}
    body: object = base_body(entry.subscriber)
    assert isinstance(body, dict)
    if entry.where == BODY:
        body = entry.value
    elif entry.where == IDEMPOTENCY_KEY:
        headers[b"Idempotency-Key"] = str(entry.value).encode("latin-1")
    elif entry.where == ORIGIN:
        headers[b"Origin"] = str(entry.value).encode()
    elif entry.value is ABSENT:
        del body[entry.where]
    else:
        body[entry.where] = entry.value
    # ASCII JSON: lone surrogates travel as the escapes an attacker would write.
    return json.dumps(body).encode(), headers


def send_the_corpus(base_url: str) -> list[str]:
    """Post every entry to the API and every form-sendable one to the form, in one keep-alive
    HTTP session; what was taken, in words (empty when nothing was). Which refusal
    each gets is for tests/web/test_hostile_inputs.py to say; here, only that none passes."""
    accepted: list[str] = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for entry in CORPUS:
            content, headers = api_request(entry)
            answer = client.post("/api/v1/callbacks", content=content, headers=headers)
            if answer.status_code < 400:
                accepted.append(f"API {entry.description}: {answer.status_code}")
        forms: dict[str, str] = {}
        for entry in filter(sendable_by_form, CORPUS):
            if entry.subscriber not in forms:
                page = client.get(f"/c/{entry.subscriber}")
                assert page.status_code == 200
                forms[entry.subscriber] = page.text
            data = form_submission(forms[entry.subscriber], entry)
            answer = client.post(f"/c/{entry.subscriber}", data=data)
            if answer.status_code < 400:
                accepted.append(f"form {entry.description}: {answer.status_code}")
    return accepted


def requests_of_the_corpus(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    with sessions() as session:
        return [
            (request.id, request.visitor_phone)
            for request in session.scalars(
                select(CallbackRequest)
                .join(Subscriber)
                .where(Subscriber.slug.in_([*SUBSCRIBERS, INACTIVE]))
            )
        ]


async def test_no_hostile_input_ever_becomes_an_invite(
    sessions: sessionmaker[Session],
    web_url: str,
    worker: Worker,
    sipp: Callable[..., SippPeer],
    ports: Ports,
) -> None:
    agents = [
        sipp("alice", ports.alice, "agent_accepts.xml", "-d", "500"),
        sipp("bob", ports.bob, "agent_accepts.xml", "-d", "500"),
    ]
    trunk = sipp("trunk", ports.trunk, "uas_answer_hangup.xml", "-d", "500")
    await until(lambda: worker.asterisk_connected, within=15, message="the worker on Asterisk")

    # In a thread: the worker runs on this loop meanwhile, as it would in production.
    accepted = await asyncio.to_thread(send_the_corpus, web_url)
    assert accepted == [], "every hostile input is refused"
    assert requests_of_the_corpus(sessions) == [], "no hostile input is stored"

    async with httpx.AsyncClient(base_url=web_url) as client:
        control = await client.post(
            "/api/v1/callbacks", json={"subscriber": HOME, "phone": CONTROL_PHONE, "consent": True}
        )
    assert control.status_code == 201, control.text

    def control_dialled() -> bool:
        return any(CONTROL_PHONE in invite.request_uri for invite in trunk.received("INVITE"))

    await until(control_dialled, within=30, message="the control request's INVITE at the trunk")
    dialled = [invite.request_uri for invite in trunk.received("INVITE")]
    assert dialled == [f"sip:{CONTROL_PHONE}@127.0.0.1:{ports.trunk}"], "the control's only"
    assert [len(agent.received("INVITE")) for agent in agents] == [1, 0], "alice's call only"
    control_id = control.json()["id"]
    assert requests_of_the_corpus(sessions) == [(control_id, CONTROL_PHONE)]

    def control_status() -> str:
        with sessions() as session:
            return session.get_one(CallbackRequest, control_id).status

    # The peers stop when the test ends: the control's call ends first, as a call does.
    await until(
        lambda: control_status() == RequestStatus.COMPLETED,
        within=20,
        message=lambda: f"the control completed; it is {control_status()}",
    )
