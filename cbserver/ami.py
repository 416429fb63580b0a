"""Agents' presence, observed over AMI: who is free, ringing, on a call or offline.

The worker runs a ``PresenceWatcher`` beside its ARI app. It follows Asterisk's device states
(``DeviceStateChange`` for ``PJSIP/<agent>``) and the agents' registrations (``ContactStatus``),
and records each change in ``agents.presence``. Nothing routes by it yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from panoramisk import Manager  # type: ignore[import-untyped]
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from cbserver import db
from cbserver.agents import RESERVED_NAMES
from cbserver.asterisk.instance import AsteriskInstance
from cbserver.clock import Clock, SystemClock
from cbserver.config import Settings
from cbserver.db import DatabaseThread, OutageLog
from cbserver.models import Agent, AgentPresence, CallAttempt, WorkerNode

log = logging.getLogger("cbserver.ami")
# panoramisk logs every refused reconnect (one line each 2 s while Asterisk is down); the
# watcher says that once itself.
_PANORAMISK_LOG = logging.getLogger("cbserver.ami.panoramisk")
_PANORAMISK_LOG.addHandler(logging.NullHandler())
_PANORAMISK_LOG.propagate = False

AVAILABLE = "available"
RINGING = "ringing"
IN_USE = "in_use"
OFFLINE = "offline"
PRESENCES = (AVAILABLE, RINGING, IN_USE, OFFLINE)
# The Cdr event's field cdr_manager.conf maps the attempt's CDR variable to (see callflow).
CDR_ATTEMPT_FIELD = "CbserverAttempt"

_BY_DEVICE_STATE = {
    "NOT_INUSE": AVAILABLE,
    "RINGING": RINGING,
    "RINGINUSE": RINGING,
    "INUSE": IN_USE,
    "BUSY": IN_USE,
    "ONHOLD": IN_USE,
}
# A contact that went away: removed (unregistered, expired) or failing its qualify.
_GONE = frozenset({"removed", "unreachable"})
_DEVICE_PREFIX = "PJSIP/"
RECONNECT_SECONDS = 2
# How long an answer to one of seeding's actions may take before seeding gives up until the
# next login (the events are followed meanwhile).
ANSWER_SECONDS = 10.0


def presence_of(device_state: str) -> str:
    """An agent's presence from its device's state; a state that promises no call (UNAVAILABLE,
    INVALID, UNKNOWN or one not known here) is ``offline``."""
    return _BY_DEVICE_STATE.get(device_state.strip().upper(), OFFLINE)


def contact_present(status: str) -> bool:
    """Whether a contact with this ``ContactStatus`` (or ``PJSIPShowContacts`` Status) can be
    rung: Created, Reachable, Updated, NonQualified... yes; Removed or Unreachable no."""
    return status.strip().lower() not in _GONE


def aor_of_contact(object_name: str) -> str:
    """A contact's AOR from its sorcery id: ``<aor>;@<hash>`` registered, ``<aor>@@<hash>``
    configured."""
    for separator in (";@", "@@"):
        if separator in object_name:
            return object_name.split(separator, 1)[0]
    return object_name


@dataclass(frozen=True)
class AmiConfig:
    host: str
    port: int
    username: str
    password: str = field(repr=False)

    @classmethod
    def for_instance(cls, settings: Settings, instance: AsteriskInstance) -> AmiConfig | None:
        """The instance's AMI user; None when cbserver drives another Asterisk over
        CBSERVER_ARI_URL, whose AMI user it does not know."""
        if settings.uses_remote_ari:
            return None
        keys = instance.secrets().ami
        return cls("127.0.0.1", settings.ami_port, keys.username, keys.password)


class PresenceStore(Protocol):
    """Where presence (and the billable seconds of call detail records) is recorded."""

    async def agents(self) -> dict[str, str | None]:
        """Every agent's name and its recorded presence (None: unknown)."""
        ...

    async def record(self, name: str, presence: str) -> None: ...

    async def record_billable(self, attempt_id: int, seconds: int) -> None: ...


class DatabasePresenceStore:
    """Presence as ``node`` sees it in ``agent_presence``, and what the nodes' views add up to
    in ``agents.presence`` (see ``combined``), written on a database thread of its own."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        thread: DatabaseThread,
        clock: Clock | None = None,
        node: str = "",
    ) -> None:
        self.sessions = sessions
        self.thread = thread
        self.clock: Clock = clock or SystemClock()
        self.node = node

    async def agents(self) -> dict[str, str | None]:
        return await self.thread.run(self._agents)

    async def record(self, name: str, presence: str) -> None:
        await self.thread.run(self._record, name, presence, self.clock.now())

    async def record_billable(self, attempt_id: int, seconds: int) -> None:
        await self.thread.run(self._record_billable, attempt_id, seconds)

    def _record_billable(self, attempt_id: int, seconds: int) -> None:
        with self.sessions() as session:
            attempt = session.get(CallAttempt, attempt_id)
            # The longest record counts: a record heard twice (two workers on one Asterisk)
            # is not added twice.
            if attempt is not None and (attempt.billable_seconds or 0) < seconds:
                attempt.billable_seconds = seconds
                session.commit()

    def _agents(self) -> dict[str, str | None]:
        """Every agent, with its presence as this node recorded it."""
        with self.sessions() as session:
            rows = session.execute(
                select(Agent.name, AgentPresence.presence).outerjoin(
                    AgentPresence,
                    and_(AgentPresence.agent_id == Agent.id, AgentPresence.node == self.node),
                )
            )
            return {name: presence for name, presence in rows}

    def _record(self, name: str, presence: str, at: datetime) -> None:
        with self.sessions() as session:
            # Locked first: two nodes recording at once each add up the other's view as
            # committed, never one read before the other's write.
            agent = session.scalars(
                select(Agent).where(Agent.name == name).with_for_update()
            ).one_or_none()
            if agent is None:
                return
            mine = session.get(AgentPresence, (agent.id, self.node))
            if mine is None:
                session.add(
                    AgentPresence(agent_id=agent.id, node=self.node, presence=presence, at=at)
                )
            else:
                mine.presence, mine.at = presence, at
            session.flush()
            # A node that stopped gave up its name, and one silent past its own lease (killed)
            # is as good as gone: their views no longer count.
            live = [
                node.name
                for node in session.scalars(select(WorkerNode))
                if node.seen_at + timedelta(seconds=node.lease_seconds) >= at
            ]
            views = session.scalars(
                select(AgentPresence.presence).where(
                    AgentPresence.agent_id == agent.id,
                    or_(AgentPresence.node == self.node, AgentPresence.node.in_(live)),
                )
            ).all()
            overall = combined(views)
            # Compared in the database, inside this write: the row as loaded may be stale.
            session.execute(
                update(Agent)
                .where(Agent.id == agent.id, Agent.presence.is_distinct_from(overall))
                .values(presence=overall, presence_at=at)
                .execution_options(synchronize_session=False)
            )
            session.commit()


def combined(views: Iterable[str]) -> str:
    """An agent's presence from the nodes' views: busy on any node is busy (in use, then
    ringing); else available on any is available; offline only when offline on every one."""
    seen = set(views)
    return next((p for p in (IN_USE, RINGING, AVAILABLE) if p in seen), OFFLINE)


class _AgentSeen:
    """What AMI said of one agent: its device's state and the registered contacts that can be
    rung. A fixed contact is never listed (``PJSIPShowContacts`` lists registrations only):
    the device's state alone speaks for it."""

    def __init__(self) -> None:
        self.device_state: str | None = None
        self.contacts: set[str] = set()
        self.registers = False

    def presence(self) -> str | None:
        """None while AMI has said nothing of it."""
        if self.registers and not self.contacts:
            # Its last registration went, whichever of the two events comes first.
            return OFFLINE
        if self.device_state is not None:
            return presence_of(self.device_state)
        return AVAILABLE if self.contacts else None


class _WatchingManager(Manager):  # type: ignore[misc]
    """panoramisk's Manager, telling the watcher how connecting and logging in went, and
    connecting no more once the watcher stopped."""

    def __init__(self, watcher: PresenceWatcher, **config: Any) -> None:
        super().__init__(**config)
        self.watcher = watcher

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self.watcher.stopped:
            return None
        return super().connect(*args, **kwargs)

    def connection_made(self, connecting: asyncio.Future[Any]) -> None:
        if connecting.cancelled():
            return
        if self.watcher.stopped:
            if connecting.exception() is None:
                _transport, protocol = connecting.result()
                protocol.close()
            return
        if connecting.exception() is not None:
            self.watcher.lost(connecting.exception())
        super().connection_made(connecting)

    def login(self, future: asyncio.Future[Any]) -> bool:
        authenticated = bool(super().login(future))
        if not authenticated:
            self.watcher.lost(RuntimeError("AMI refused the login"))
        return authenticated


class PresenceWatcher:
    """Follows the agents' presence over AMI and records each change through ``store``.

    ``run`` lasts until cancelled; panoramisk reconnects on its own, and on each login every
    agent's presence is read afresh. It never raises: presence is an observation, and an AMI or
    database failure must not stop the worker's calls.
    """

    def __init__(
        self,
        config: AmiConfig,
        store: PresenceStore,
        on_available: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        # Told when an agent's phone is free again: a call-back waiting for it may go now.
        self.on_available = on_available
        self.stopped = False
        self._seen: dict[str, _AgentSeen] = {}
        self._recorded: dict[str, str | None] = {}
        # Events wait here to be handled in their order, one at a time.
        self._queue: asyncio.Queue[Mapping[str, str] | None] = asyncio.Queue()
        self._away_since: float | None = None
        self._recording = OutageLog(log, "presence")

    # --- what AMI tells ---------------------------------------------------------------------

    def lost(self, error: BaseException | None) -> None:
        """AMI refused, dropped or could not be reached: said once, until it is back."""
        if self._away_since is None:
            self._away_since = asyncio.get_running_loop().time()
            reason = f" ({db.first_line(error)})" if error is not None else ""
            log.warning(
                "presence: AMI at %s:%d is unreachable%s; trying again every %d s",
                self.config.host,
                self.config.port,
                reason,
                RECONNECT_SECONDS,
            )

    def _logged_in(self, manager: Any) -> None:
        if self._away_since is not None:
            away = asyncio.get_running_loop().time() - self._away_since
            log.info("presence: AMI answers again after %.1f s", away)
            self._away_since = None
        # None asks the loop to read every agent's presence afresh.
        self._queue.put_nowait(None)

    def _disconnected(self, manager: Any, error: BaseException | None) -> None:
        self.lost(error if isinstance(error, BaseException) else None)

    def _event(self, manager: Any, event: Mapping[str, str]) -> None:
        self._queue.put_nowait(event)

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        manager = _WatchingManager(
            self,
            host=self.config.host,
            port=self.config.port,
            username=self.config.username,
            secret=self.config.password,
            events="on",
            reconnect_timeout=RECONNECT_SECONDS,
            log=_PANORAMISK_LOG,
            loop=asyncio.get_running_loop(),
            on_login=self._logged_in,
            on_disconnect=self._disconnected,
        )
        manager.register_event("DeviceStateChange", self._event)
        manager.register_event("ContactStatus", self._event)
        manager.register_event("Cdr", self._event)
        manager.connect()
        try:
            while True:
                event = await self._queue.get()
                try:
                    if event is None:
                        await self.seed(manager)
                    else:
                        await self.handle(event)
                except asyncio.CancelledError:
                    raise
                except TimeoutError:
                    log.warning(
                        "presence: AMI did not answer; presence is read again at its next login"
                    )
                except Exception:
                    log.exception("presence: an AMI event could not be handled; going on")
        finally:
            self.stopped = True
            manager.close()

    async def seed(self, manager: Any) -> None:
        """Every agent's presence as Asterisk sees it now (after a (re)connect)."""
        contacts = await _ask(manager, {"Action": "PJSIPShowContacts"})
        answer = await _ask(manager, {"Action": "DeviceStateList"})
        if not await self._load_agents():
            return
        states = _listed(answer, "DeviceStateChange")
        # DeviceStateList holds only the devices whose state changed since Asterisk started:
        # a new agent's phone that never registered is asked for by name.
        listed = {_agent_of_device(state.get("Device", "")) for state in states}
        for name in sorted(set(self._recorded) - listed):
            device = f"{_DEVICE_PREFIX}{name}"
            state = await _ask(manager, {"Action": "Getvar", "Variable": f"DEVICE_STATE({device})"})
            if state.success:
                states.append({"Device": device, "State": str(state.get("Value", ""))})
        await self._start_over(_listed(contacts, "ContactList"), states)

    async def reseed(
        self, contacts: Iterable[Mapping[str, str]], device_states: Iterable[Mapping[str, str]]
    ) -> None:
        """Start over from AMI's lists: ``ContactList`` and ``DeviceStateChange`` entries."""
        if await self._load_agents():
            await self._start_over(contacts, device_states)

    async def _start_over(
        self, contacts: Iterable[Mapping[str, str]], device_states: Iterable[Mapping[str, str]]
    ) -> None:
        self._seen = {name: _AgentSeen() for name in self._recorded}
        for contact in contacts:
            seen_agent = self._seen.get(aor_of_contact(contact.get("ObjectName", "")))
            if seen_agent is not None:
                seen_agent.registers = True
                if contact_present(contact.get("Status", "")):
                    seen_agent.contacts.add(contact.get("Uri", ""))
        for state in device_states:
            name = _agent_of_device(state.get("Device", ""))
            if name in self._seen:
                self._seen[name].device_state = state.get("State", "")
        for name in sorted(self._seen):
            await self._write(name)

    async def handle(self, event: Mapping[str, str]) -> None:
        """One AMI event: a device's new state, a contact's new status, or a call detail
        record."""
        kind = event.get("Event", "")
        if kind == "Cdr":
            await self._billable(event)
            return
        if kind == "DeviceStateChange":
            name = _agent_of_device(event.get("Device", ""))
        elif kind == "ContactStatus":
            name = event.get("AOR", "") or aor_of_contact(event.get("URI", ""))
        else:
            return
        if not name or name in RESERVED_NAMES:
            return
        seen = self._seen.get(name)
        if seen is None:
            # Perhaps an agent added since the last look: looked for once more.
            if not await self._load_agents() or name not in self._recorded:
                return
            seen = self._seen[name] = _AgentSeen()
        if kind == "DeviceStateChange":
            seen.device_state = event.get("State", "")
        else:
            seen.registers = True
            uri = event.get("URI", "")
            if contact_present(event.get("ContactStatus", "")):
                seen.contacts.add(uri)
            else:
                seen.contacts.discard(uri)
        await self._write(name)

    async def _load_agents(self) -> bool:
        try:
            self._recorded = await self.store.agents()
        except Exception as exc:
            if not db.unreachable(exc):
                raise
            self._recording.failed(exc)
            return False
        self._recording.succeeded()
        return True

    async def _billable(self, record: Mapping[str, str]) -> None:
        """A call-back's bridged legs (the record names both parties): its attempt's billable
        seconds. A leg's own record before the bridge, or any other call's, is not billed."""
        attempt = record.get(CDR_ATTEMPT_FIELD, "")
        seconds = record.get("BillableSeconds", "")
        if not (attempt.isdigit() and seconds.isdigit() and record.get("DestinationChannel")):
            return
        if await self._stored(self.store.record_billable(int(attempt), int(seconds))):
            log.info("attempt %s: %s billable seconds", attempt, seconds)

    async def _stored(self, write: Awaitable[None]) -> bool:
        """Run a write to the store; False (said once, until one succeeds) while the database is
        unreachable, the write then lost: presence is written again at the next change or
        seeding, a record is not."""
        try:
            await write
        except Exception as exc:
            if not db.unreachable(exc):
                raise
            self._recording.failed(exc)
            return False
        self._recording.succeeded()
        return True

    async def _write(self, name: str) -> None:
        """Record ``name``'s presence if it changed (only then)."""
        presence = self._seen[name].presence()
        if presence is None or self._recorded.get(name) == presence:
            return
        if not await self._stored(self.store.record(name, presence)):
            return  # not remembered as recorded: the next change, or the next seeding, writes it
        self._recorded[name] = presence
        log.info("presence: agent %s is %s", name, presence)
        if presence == AVAILABLE and self.on_available is not None:
            self.on_available()


def _agent_of_device(device: str) -> str:
    """``PJSIP/alice`` -> ``alice``; "" for any other technology (Local/, Queue:...)."""
    if not device.startswith(_DEVICE_PREFIX):
        return ""
    return device.removeprefix(_DEVICE_PREFIX)


async def _ask(manager: Any, action: dict[str, str]) -> Any:
    return await asyncio.wait_for(manager.send_action(action), ANSWER_SECONDS)


def _listed(answer: Any, event: str) -> list[Mapping[str, str]]:
    # With nothing to list Asterisk answers an error, not an empty list.
    messages = answer if isinstance(answer, list) else []
    return [m for m in messages if m.get("Event") == event]
