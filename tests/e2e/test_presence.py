"""An agent's presence follows its softphone: available once it registers, offline once it
un-registers, as the worker's presence watcher records it from Asterisk's AMI."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver.ami import AmiConfig, DatabasePresenceStore, PresenceWatcher
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.config import Settings
from cbserver.db import DatabaseThread
from cbserver.models import Agent
from cbserver.sipp import SippPeer
from tests.e2e.harness import SCENARIOS, free_ports, until


@contextlib.asynccontextmanager
async def watching(
    settings: Settings, asterisk: AsteriskInstance, sessions: sessionmaker[Session]
) -> AsyncIterator[None]:
    """The worker's presence watcher, in this process, on the session's Asterisk."""
    keys = asterisk.secrets().ami
    config = AmiConfig("127.0.0.1", settings.ami_port, keys.username, keys.password)
    thread = DatabaseThread("e2e-presence")
    watcher = asyncio.create_task(
        PresenceWatcher(config, DatabasePresenceStore(sessions, thread)).run()
    )
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        thread.close()


def presence(sessions: sessionmaker[Session], name: str) -> str | None:
    with sessions() as session:
        return session.scalar(select(Agent.presence).where(Agent.name == name))


async def run_scenario(
    scenario: str, workdir: Path, asterisk: AsteriskInstance, port: int, user: str, password: str
) -> list[int | None]:
    """The phone on ``port`` runs ``scenario`` as ``user``; the statuses Asterisk answered."""
    phone = SippPeer(
        name=f"{user}-{scenario}",
        port=port,
        workdir=workdir,
        scenario=SCENARIOS / scenario,
        extra_args=("-s", user, "-au", user, "-ap", password),
    )
    # On a thread: the watcher goes on reading AMI meanwhile.
    await asyncio.to_thread(phone.call, f"127.0.0.1:{asterisk.settings.sip_port}", timeout=10)
    return [m.status for m in phone.received()]


async def test_a_registering_agent_is_available_then_offline_once_unregistered(
    settings: Settings,
    asterisk: AsteriskInstance,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    name = f"presence-{secrets.token_hex(3)}"
    with sessions() as session:
        password = agents_service.add_agent(session, name).sip_password
        asterisk.sync_agents(agents_service.list_agents(session))
    assert password is not None

    async with watching(settings, asterisk, sessions):
        # Seeded on login: no phone has registered yet.
        await until(lambda: presence(sessions, name) == "offline", message=f"{name} offline")

        port = free_ports(1)[0]
        registered = await run_scenario(
            "uac_register.xml", tmp_path, asterisk, port, name, password
        )
        assert registered[-1] == 200, registered
        await until(lambda: presence(sessions, name) == "available", message=f"{name} available")

        unregistered = await run_scenario(
            "uac_unregister.xml", tmp_path, asterisk, port, name, password
        )
        assert unregistered[-1] == 200, unregistered
        await until(lambda: presence(sessions, name) == "offline", message=f"{name} offline")
