"""``cbserver doctor``: is everything a call-back needs there and answering? Said in plain words.

Each check gives one ``Finding``: what was checked, what was found and, on a problem, what to
do. Every network step has a short timeout, so a dead service never hangs the command, and no
finding ever carries a password.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from panoramisk import Manager  # type: ignore[import-untyped]
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from cbserver import agents as agents_service
from cbserver import db
from cbserver.asterisk.instance import AsteriskInstance, Credentials
from cbserver.config import Settings

TIMEOUT = 2.0
# RFC 3261's T1: an OPTIONS over UDP is sent again after 0.5 s, then 1 s, ... until answered.
SIP_T1 = 0.5
TRUNK_AOR = "trunk"
_SIP_TARGET = re.compile(
    r"^sips?:(?:[^@;]+@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^:;>]+)(?::(?P<port>\d{1,5}))?"
)
# A contact's sorcery id: "<aor>;@<hash>" when it registered, "<aor>@@<hash>" when configured.
_CONTACT_ID = re.compile(r";@|@@")
# panoramisk logs every refused connection and lost session; doctor says that in its findings.
_AMI_LOG = logging.getLogger("cbserver.doctor.ami")
_AMI_LOG.addHandler(logging.NullHandler())
_AMI_LOG.propagate = False


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: ``found`` says what is so; ``fix`` what to do when not ok."""

    check: str
    ok: bool
    found: str
    fix: str = ""

    def line(self) -> str:
        label = "ok" if self.ok else "PROBLEM"
        advice = f". {self.fix}" if self.fix and not self.ok else ""
        return f"{label:<8} {self.check}: {self.found}{advice}"


@dataclass(frozen=True)
class AgentPhone:
    """An active agent as the checks need it: a fixed contact, or None when the phone registers."""

    name: str
    contact: str | None


@dataclass(frozen=True)
class Contact:
    """One contact Asterisk knows, from AMI ``PJSIPShowContacts``."""

    aor: str
    uri: str
    # Asterisk's own view: Reachable/Unreachable when it qualifies the contact, else
    # NonQualified/Unknown.
    status: str


@dataclass(frozen=True)
class OptionsAnswer:
    """How a SIP peer answered an OPTIONS request: ``status`` 0 when it did not."""

    status: int
    reason: str
    milliseconds: float


def all_ok(findings: Sequence[Finding]) -> bool:
    return all(f.ok for f in findings)


def as_json(findings: Sequence[Finding]) -> dict[str, Any]:
    return {"ok": all_ok(findings), "checks": [asdict(f) for f in findings]}


def diagnose(settings: Settings, within: float = TIMEOUT) -> list[Finding]:
    """Run every check, in the order an admin would fix what they find."""
    instance = AsteriskInstance(settings)
    findings, agents = check_database(settings.effective_database_url, within)
    findings += check_ari(settings, instance, within)
    findings += asyncio.run(_check_sip(settings, instance, agents, within))
    return findings


# --- the database ----------------------------------------------------------------------------


def check_database(
    url: str, within: float = TIMEOUT
) -> tuple[list[Finding], list[AgentPhone] | None]:
    """The database and its migrations; the active agents too (None when they cannot be read)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).exists():
            return [
                Finding(
                    "database",
                    False,
                    f"the SQLite database {path} does not exist",
                    "Create it with `cbserver db upgrade`, or check CBSERVER_DATABASE_URL "
                    "and CBSERVER_STATE_DIR",
                )
            ], None
        engine = db.make_engine(url)
    else:
        engine = db.make_engine(url, connect_args={"connect_timeout": max(2, round(within))})
    try:
        return check_schema(engine, url)
    finally:
        engine.dispose()


def check_schema(engine: Engine, url: str) -> tuple[list[Finding], list[AgentPhone] | None]:
    """The database behind ``engine`` (made from ``url``): answers, migrated, its agents."""
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = _without_password(_first_line(getattr(exc, "orig", None) or exc), url)
        return [
            Finding(
                "database",
                False,
                f"{shown} does not answer: {reason}",
                "Check that the database server runs and that CBSERVER_DATABASE_URL names it "
                "with the right user and password",
            )
        ], None
    findings = [Finding("database", True, f"{shown} answers")]
    try:
        pending = db.pending_migrations(engine)
    except SQLAlchemyError as exc:
        reason = _without_password(_first_line(getattr(exc, "orig", None) or exc), url)
        findings.append(
            Finding("migrations", False, f"the schema's version is unreadable: {reason}")
        )
        return findings, None
    if pending:
        findings.append(
            Finding(
                "migrations",
                False,
                f"{len(pending)} migration(s) not applied: {', '.join(pending)}",
                "Apply them with `cbserver db upgrade` (the web and the worker also apply "
                "them when they start)",
            )
        )
        return findings, None
    findings.append(Finding("migrations", True, "the schema is the newest"))
    with db.make_session_factory(engine)() as session:
        agents = [
            AgentPhone(agent.name, agent.contact)
            for agent in agents_service.list_agents(session, active_only=True)
        ]
    return findings, agents


def _first_line(error: object) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _without_password(message: str, url: str) -> str:
    password = make_url(url).password
    return message.replace(str(password), "***") if password else message


# --- ARI -----------------------------------------------------------------------------------


def _secrets_file(instance: AsteriskInstance) -> Path:
    return instance.directory / "secrets.json"


def _keys(instance: AsteriskInstance) -> tuple[Credentials, Credentials] | None:
    """The instance's ARI and AMI credentials; None when it was never started (read only:
    ``AsteriskInstance.secrets`` would make new ones)."""
    if not _secrets_file(instance).exists():
        return None
    keys = instance.secrets()
    return keys.ari, keys.ami


def _never_started(instance: AsteriskInstance, check: str) -> Finding:
    return Finding(
        check,
        False,
        f"there are no credentials in {_secrets_file(instance)}: the Asterisk instance "
        f"{instance.name!r} was never started here",
        "Start it with `cbserver asterisk start` (or `cbserver run`), or check "
        "CBSERVER_STATE_DIR and CBSERVER_ASTERISK_INSTANCE",
    )


def check_ari(
    settings: Settings, instance: AsteriskInstance, within: float = TIMEOUT
) -> list[Finding]:
    """ARI answers and takes its credentials (those of CBSERVER_ARI_URL's Asterisk when it is
    set, else the instance's); a worker has registered its app."""
    remote = settings.uses_remote_ari
    if remote:
        url = settings.ari_url.rstrip("/")
        ari = Credentials(settings.ari_username, settings.ari_password)
        which = "CBSERVER_ARI_URL"
    else:
        keys = _keys(instance)
        if keys is None:
            return [_never_started(instance, "ARI")]
        ari, _ami = keys
        url = instance.ari_url
        which = f"the Asterisk instance {instance.name!r}"
    auth = (ari.username, ari.password)
    try:
        response = httpx.get(f"{url}/asterisk/info", auth=auth, timeout=within)
    except httpx.TimeoutException:
        found = f"ARI at {url} did not answer within {within:g} s"
        return [_remote_down(found) if remote else _asterisk_down(instance, found)]
    except httpx.TransportError:
        found = f"nothing answers at {url}"
        return [_remote_down(found) if remote else _asterisk_down(instance, found)]
    if response.status_code == httpx.codes.UNAUTHORIZED:
        return [_refused(url, ari.username, instance, remote)]
    if not response.is_success:
        return [
            Finding(
                "ARI",
                False,
                f"ARI at {url} answered {response.status_code} {response.reason_phrase}",
                "See that Asterisk's log for why"
                if remote
                else "See Asterisk's log (`cbserver asterisk cli`) for why",
            )
        ]
    try:
        version = str(response.json()["system"]["version"])
    except (ValueError, KeyError, TypeError):
        version = "of an unknown version"
    findings = [
        Finding(
            "ARI", True, f"{url} ({which}) accepts the user {ari.username} (Asterisk {version})"
        )
    ]
    findings.append(_check_app(settings.ari_app, url, auth, within))
    return findings


def _refused(url: str, username: str, instance: AsteriskInstance, remote: bool) -> Finding:
    if remote:
        return Finding(
            "ARI",
            False,
            f"ARI at {url} refused the user {username}: CBSERVER_ARI_USERNAME and "
            "CBSERVER_ARI_PASSWORD do not match that Asterisk's ari.conf",
            "Set them to a user of its ari.conf (and reload its res_ari.so after changing it)",
        )
    return Finding(
        "ARI",
        False,
        f"ARI at {url} refused the user {username}: the password in "
        f"{_secrets_file(instance)} does not match Asterisk's ari.conf",
        "Restart Asterisk so that it reads them again: `cbserver asterisk stop`, then "
        "`cbserver asterisk start`",
    )


def _remote_down(found: str) -> Finding:
    return Finding(
        "ARI",
        False,
        f"{found} (CBSERVER_ARI_URL)",
        "Check that Asterisk runs there, that its http.conf listens on an address this host "
        "reaches, and that no firewall drops the port",
    )


def _asterisk_down(instance: AsteriskInstance, found: str) -> Finding:
    pid = instance.pid()
    if pid is None:
        return Finding(
            "ARI",
            False,
            f"{found}: the Asterisk instance {instance.name!r} is not running",
            "Start it with `cbserver asterisk start` (or `cbserver run`)",
        )
    return Finding(
        "ARI",
        False,
        f"{found}, although Asterisk runs (pid {pid})",
        "See `cbserver asterisk status` and Asterisk's log; restart it with "
        "`cbserver asterisk stop`, then `cbserver asterisk start`",
    )


def _check_app(app: str, url: str, auth: tuple[str, str], within: float) -> Finding:
    try:
        response = httpx.get(f"{url}/applications", auth=auth, timeout=within)
        response.raise_for_status()
        names = {str(item.get("name")) for item in response.json()}
    except (httpx.HTTPError, ValueError) as exc:
        return Finding("worker", False, f"ARI did not list its applications: {exc}")
    if app in names:
        return Finding("worker", True, f"a worker is connected (Stasis app {app!r})")
    return Finding(
        "worker",
        False,
        f"no worker is connected: Asterisk knows no Stasis app {app!r}, so nobody places the calls",
        "Start it with `cbserver worker` (or `cbserver run`); if it runs, see its log and "
        "check that it has the same CBSERVER_ARI_APP",
    )


# --- AMI, the trunk and the agents' phones ---------------------------------------------------


class _QuietManager(Manager):  # type: ignore[misc]
    """panoramisk's Manager, minus the error its connect callback logs when doctor gives up."""

    def connection_made(self, connecting: asyncio.Future[Any]) -> None:
        if not connecting.cancelled():
            super().connection_made(connecting)


async def _check_sip(
    settings: Settings,
    instance: AsteriskInstance,
    agents: list[AgentPhone] | None,
    within: float,
) -> list[Finding]:
    keys = _keys(instance)
    manager: Any = None
    if settings.uses_remote_ari:
        # AMI is checked on cbserver's own instance only; no AMI user of another is known.
        ami = Finding(
            "AMI",
            True,
            f"not checked: the Asterisk at {settings.ari_url.rstrip('/')} (CBSERVER_ARI_URL) "
            "is not cbserver's own",
        )
    elif keys is None:
        ami = Finding("AMI", False, "not checked: the instance's credentials are missing (see ARI)")
    else:
        ami, manager = await check_ami(
            settings.ami_port, keys[1], within, keys_file=str(_secrets_file(instance))
        )
    try:
        contacts = await _contacts(manager, within) if manager is not None else None
        trunk, phones = await asyncio.gather(
            _check_trunk(settings.effective_trunk_uri, contacts, within),
            _check_agents(agents, contacts, within, ami_checked=not settings.uses_remote_ari),
        )
        return [ami, trunk, *phones]
    finally:
        if manager is not None:
            manager.close()


async def check_ami(
    port: int, keys: Credentials, within: float = TIMEOUT, keys_file: str = "secrets.json"
) -> tuple[Finding, Any]:
    """Log in to AMI and ping it; the logged-in manager too (None on a problem)."""
    where = f"127.0.0.1:{port}"
    manager = _QuietManager(
        host="127.0.0.1",
        port=port,
        username=keys.username,
        secret=keys.password,
        events="off",
        # Doctor's session is short: panoramisk must neither ping nor reconnect meanwhile.
        ping_delay=3600,
        reconnect_timeout=3600,
        log=_AMI_LOG,
        loop=asyncio.get_running_loop(),
    )
    connecting = manager.connect()
    done, _ = await asyncio.wait({connecting}, timeout=within)
    if not done:
        connecting.cancel()
        return Finding("AMI", False, f"AMI at {where} did not answer within {within:g} s"), None
    if connecting.exception() is not None:
        return (
            Finding(
                "AMI",
                False,
                f"nothing answers at {where} (AMI)",
                "Start Asterisk with `cbserver asterisk start`; if it runs, check that "
                "CBSERVER_AMI_PORT is the port it was started with",
            ),
            None,
        )
    try:
        # The login is sent by the connect task's own callback, which has run by now.
        await asyncio.sleep(0)
        login = await asyncio.wait_for(asyncio.shield(manager.authenticated_future), within)
        if not login.success:
            manager.close()
            return (
                Finding(
                    "AMI",
                    False,
                    f"AMI at {where} refused the user {keys.username}: the password in "
                    f"{keys_file} does not match Asterisk's manager.conf",
                    "Restart Asterisk so that it reads them again: `cbserver asterisk stop`, "
                    "then `cbserver asterisk start`",
                ),
                None,
            )
        pong = await asyncio.wait_for(manager.send_action({"Action": "Ping"}), within)
    except TimeoutError:
        manager.close()
        return Finding("AMI", False, f"AMI at {where} did not answer within {within:g} s"), None
    if not pong.success:
        manager.close()
        return Finding("AMI", False, f"AMI at {where} did not answer a Ping: {pong}"), None
    return Finding("AMI", True, f"{where} accepts the user {keys.username}"), manager


async def _contacts(manager: Any, within: float) -> list[Contact] | None:
    """Every contact Asterisk knows (registered or configured); None when AMI did not say."""
    try:
        answer = await asyncio.wait_for(
            manager.send_action({"Action": "PJSIPShowContacts"}), within
        )
    except TimeoutError:
        return None
    # With no contact at all Asterisk answers an error, not an empty list.
    messages = answer if isinstance(answer, list) else []
    return [
        Contact(
            aor=_CONTACT_ID.split(str(m.get("ObjectName", "")), maxsplit=1)[0],
            uri=str(m.get("Uri", "")),
            status=str(m.get("Status", "")),
        )
        for m in messages
        if m.get("Event") == "ContactList"
    ]


async def _check_trunk(uri: str, contacts: list[Contact] | None, within: float) -> Finding:
    # Asterisk drops the answer to an explicit qualify (AMI PJSIPQualify) of an AOR whose
    # qualify_frequency is 0, the trunk's default: so doctor sends the OPTIONS itself.
    answer = await options_ping(uri, within)
    if answer.status == 0:
        return Finding(
            "trunk",
            False,
            f"{uri} is unreachable: {answer.reason}",
            "Check that the SIP provider (or the demo gateway `cbserver run` starts) is up, "
            "that CBSERVER_TRUNK_URI is right and that no firewall drops SIP",
        )
    marked = [c for c in contacts or [] if c.aor == TRUNK_AOR and c.status == "Unreachable"]
    if marked:
        return Finding(
            "trunk",
            False,
            f"{uri} answers, but Asterisk marked it unreachable and will not dial it until "
            "its next OPTIONS is answered",
            "Wait for the next qualify, or set CBSERVER_TRUNK_QUALIFY_SECONDS=0 if the provider "
            "does not answer Asterisk's OPTIONS",
        )
    return Finding("trunk", True, f"{uri} is reachable in {_answered(answer)}")


async def _check_agents(
    agents: list[AgentPhone] | None,
    contacts: list[Contact] | None,
    within: float,
    *,
    ami_checked: bool = True,
) -> list[Finding]:
    if agents is None:
        return [
            Finding(
                "agents", False, "not checked: they are kept in the database, which is not ready"
            )
        ]
    if not agents:
        return [
            Finding(
                "agents",
                False,
                "there is no active agent, so nobody can take a call-back",
                "Add one with `cbserver agent add NAME`",
            )
        ]
    return list(
        await asyncio.gather(*(_check_agent(a, contacts, within, ami_checked) for a in agents))
    )


async def _check_agent(
    agent: AgentPhone, contacts: list[Contact] | None, within: float, ami_checked: bool = True
) -> Finding:
    check = f"agent {agent.name}"
    if agent.contact is not None:
        uri = agent.contact
    elif not ami_checked:
        return Finding(check, True, "not checked: registrations are read over AMI (see AMI)")
    elif contacts is None:
        return Finding(
            check, False, "cannot tell whether the phone is registered: AMI did not answer"
        )
    else:
        registered = [c.uri for c in contacts if c.aor == agent.name]
        if not registered:
            return Finding(
                check,
                False,
                "the phone is not registered",
                f"Sign in the phone with the SIP account {agent.name!r} printed by "
                "`cbserver agent add` (from an address in CBSERVER_AGENT_NETWORKS)",
            )
        uri = registered[0]
    answer = await options_ping(uri, within)
    kind = "fixed phone" if agent.contact is not None else "registered phone"
    if answer.status == 0:
        return Finding(
            check,
            False,
            f"the {kind} at {uri} is unreachable: {answer.reason}",
            "Check that the phone is on and connected"
            + ("" if agent.contact is None else ", and its address in `cbserver agent list`"),
        )
    return Finding(check, True, f"the {kind} at {uri} is reachable in {_answered(answer)}")


def _answered(answer: OptionsAnswer) -> str:
    return f"{answer.milliseconds:.0f} ms ({answer.status} {answer.reason})"


# --- SIP OPTIONS ---------------------------------------------------------------------------


def sip_target(uri: str) -> tuple[str, int] | None:
    """Host and UDP port of a SIP URI (5060 when it names none); None when it is no SIP URI."""
    match = _SIP_TARGET.match(uri.strip().strip("<>"))
    if match is None:
        return None
    return match.group("host").strip("[]"), int(match.group("port") or 5060)


def options_request(uri: str, local: tuple[str, int], call_id: str) -> bytes:
    host, port = local[0], local[1]
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    branch = "z9hG4bK" + secrets.token_hex(8)
    lines = [
        f"OPTIONS {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {hostport};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:cbserver-doctor@{hostport}>;tag={secrets.token_hex(6)}",
        f"To: <{uri}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:cbserver-doctor@{hostport}>",
        "Accept: application/sdp",
        "User-Agent: cbserver-doctor",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def final_response(data: bytes, call_id: str) -> tuple[int, str] | None:
    """Status and reason of a final SIP response to our request; None for anything else."""
    text_ = data.decode("utf-8", "replace")
    head, _, _ = text_.partition("\r\n\r\n")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        return None
    found_id = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("call-id", "i"):
            found_id = value.strip()
    status = int(parts[1])
    if found_id != call_id or status < 200:
        return None
    return status, parts[2].strip() if len(parts) > 2 else ""


class _OptionsClient(asyncio.DatagramProtocol):
    def __init__(self, call_id: str, answer: asyncio.Future[tuple[int, str]]) -> None:
        self.call_id = call_id
        self.answer = answer

    def datagram_received(self, data: bytes, addr: Any) -> None:
        found = final_response(data, self.call_id)
        if found is not None and not self.answer.done():
            self.answer.set_result(found)

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable": nothing listens there.
        if not self.answer.done():
            self.answer.set_exception(exc)


async def options_ping(uri: str, within: float = TIMEOUT) -> OptionsAnswer:
    """Send a SIP OPTIONS over UDP (again per RFC 3261's timer) until a final answer, for
    ``within`` seconds. Any answer, even 404 or 405, means that the peer is there."""
    target = sip_target(uri)
    if target is None:
        return OptionsAnswer(0, f"{uri!r} is not a SIP URI", 0.0)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        resolved = await asyncio.wait_for(loop.getaddrinfo(*target, type=socket.SOCK_DGRAM), within)
    except (OSError, TimeoutError):
        return OptionsAnswer(0, f"its host {target[0]} cannot be resolved", 0.0)
    family, _type, _proto, _name, address = resolved[0]
    remote = (str(address[0]), int(address[1]))
    call_id = f"{secrets.token_hex(12)}@cbserver-doctor"
    answer: asyncio.Future[tuple[int, str]] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _OptionsClient(call_id, answer), remote_addr=remote, family=family
    )
    try:
        request = options_request(uri, transport.get_extra_info("sockname")[:2], call_id)
        deadline = started + within
        interval = SIP_T1
        while (remaining := deadline - time.monotonic()) > 0:
            transport.sendto(request)
            done, _ = await asyncio.wait({answer}, timeout=min(interval, remaining))
            if done:
                status, reason = answer.result()
                return OptionsAnswer(status, reason, (time.monotonic() - started) * 1000)
            interval *= 2
    except ConnectionRefusedError:
        return OptionsAnswer(0, f"nothing listens on {target[0]} port {target[1]}", 0.0)
    except OSError as exc:
        return OptionsAnswer(0, f"sending to it failed: {exc.strerror or exc}", 0.0)
    finally:
        transport.close()
    return OptionsAnswer(0, f"no answer to SIP OPTIONS within {within:g} s", 0.0)
