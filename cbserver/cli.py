"""``cbserver`` — the command line: Asterisk, agents, database, and the service itself."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import asdict
from functools import cached_property
from typing import Any, NoReturn

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cbserver import agents as agents_service
from cbserver import db
from cbserver.asterisk.instance import AsteriskError, AsteriskInstance, InstanceStatus
from cbserver.asterisk.provision import ProvisionError
from cbserver.config import ConfigError, Settings
from cbserver.demo_gateway import DemoGateway
from cbserver.models import Agent

EXIT_NOT_RUNNING = 3
DEMO_AGENTS = ("demo-alice", "demo-bob")


class Context:
    """The composition root of a ``cbserver`` command: settings and what is built from them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = AsteriskInstance(settings)

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.settings.effective_database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return db.make_session_factory(self.engine)

    def upgraded_sessions(self) -> sessionmaker[Session]:
        db.upgrade(self.engine)
        return self.sessions

    def active_agents(self) -> list[Agent]:
        with self.upgraded_sessions()() as session:
            return agents_service.list_agents(session, active_only=True)


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """cbserver: a self-hosted web call-back server on Asterisk."""
    try:
        ctx.obj = Context(Settings.load())
    except ConfigError as exc:
        _fail(str(exc))


# --- asterisk ------------------------------------------------------------------------------


@main.group()
def asterisk() -> None:
    """Run cbserver's own Asterisk: provision, start, stop, status, cli."""


@asterisk.command()
@click.pass_obj
def provision(obj: Context) -> None:
    """Find an Asterisk >= 20, or build the Debian sid root for one (once; about a minute)."""
    try:
        runtime = obj.instance.resolve_runtime(_progress)
    except ProvisionError as exc:
        _fail(str(exc))
    click.echo(f"Asterisk: {runtime.description}")


@asterisk.command()
@click.pass_obj
def start(obj: Context) -> None:
    """Render asterisk-conf/ for this instance, start Asterisk, wait until ARI answers."""
    try:
        started = obj.instance.start(obj.active_agents(), _progress)
    except (ProvisionError, AsteriskError) as exc:
        _fail(str(exc))
    if not started:
        click.echo(f"Asterisk instance {obj.instance.name!r} is already running.")
        return
    _print_status(obj.instance.status())


@asterisk.command()
@click.pass_obj
def stop(obj: Context) -> None:
    """Stop this instance's Asterisk."""
    if obj.instance.stop():
        click.echo(f"Asterisk instance {obj.instance.name!r} stopped.")
    else:
        click.echo(f"Asterisk instance {obj.instance.name!r} was not running.")


@asterisk.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Version, uptime, ports and key modules of this instance (exit 3 when not running)."""
    current = obj.instance.status()
    if as_json:
        click.echo(json.dumps(asdict(current), indent=2))
    else:
        _print_status(current)
    if not current.running:
        sys.exit(EXIT_NOT_RUNNING)


def _print_status(current: InstanceStatus) -> None:
    if not current.running:
        click.echo(f"Asterisk instance {current.name!r}: not running ({current.directory})")
        return
    uptime = f"{current.uptime_seconds:.0f} s" if current.uptime_seconds is not None else "?"
    lines = [
        f"Asterisk instance {current.name!r}: running, pid {current.pid}",
        f"  version   {current.version or current.runtime}",
        f"  up since  {current.started_at} ({uptime})",
        f"  ARI       {current.ari_url}  (credentials in {current.directory}/secrets.json)",
        "  ports     " + ", ".join(f"{name} {port}" for name, port in current.ports.items()),
        "  modules   "
        + ", ".join(
            f"{name.removesuffix('.so')}: {state}" for name, state in current.modules.items()
        ),
    ]
    click.echo("\n".join(lines))


@asterisk.command(context_settings={"ignore_unknown_options": True})
@click.option("-x", "command", help="Run one CLI command and print its output.")
@click.pass_obj
def cli(obj: Context, command: str | None) -> None:
    """Open Asterisk's console (asterisk -r) on this instance."""
    try:
        if command is not None:
            click.echo(obj.instance.cli(["-rx", command]), nl=False)
            return
        argv = obj.instance.cli_command(["-r"])
    except AsteriskError as exc:
        _fail(str(exc), EXIT_NOT_RUNNING)
    os.execvp(argv[0], argv)


# --- agents --------------------------------------------------------------------------------


@main.group()
def agent() -> None:
    """Agents: the SIP phones that take call-backs."""


@agent.command("add")
@click.argument("name")
@click.option("--contact", help="Fixed contact URI (sip:USER@HOST:PORT); else the phone registers.")
@click.option(
    "--dtmf-mode",
    type=click.Choice(agents_service.DTMF_MODES),
    default="rfc4733",
    show_default=True,
    help="How the phone sends key presses.",
)
@click.pass_obj
def agent_add(obj: Context, name: str, contact: str | None, dtmf_mode: str) -> None:
    """Add an agent; a running Asterisk knows it at once (no restart)."""
    with obj.upgraded_sessions()() as session:
        try:
            created = agents_service.add_agent(session, name, contact=contact, dtmf_mode=dtmf_mode)
        except agents_service.AgentError as exc:
            _fail(str(exc))
    click.echo(f"Agent {name!r} added.")
    if created.sip_password:
        _print_sip_account(obj.settings, name, created.sip_password)
    _sync_agents(obj)


def _sync_agents(obj: Context) -> None:
    try:
        reloaded = obj.instance.sync_agents(obj.active_agents())
    except AsteriskError as exc:
        _fail(f"the agent is saved, but Asterisk did not take it: {exc}")
    if reloaded:
        click.echo("Asterisk reloaded its PJSIP configuration; the agent is reachable now.")


def _print_sip_account(settings: Settings, name: str, password: str) -> None:
    click.echo(
        f"  SIP account for the agent's phone:\n"
        f"    username  {name}\n    password  {password}\n"
        f"    domain    {settings.effective_media_address}:{settings.sip_port} (UDP)"
    )


@agent.command("list")
@click.pass_obj
def agent_list(obj: Context) -> None:
    """List agents."""
    with obj.upgraded_sessions()() as session:
        for item in agents_service.list_agents(session):
            kind = f"contact {item.contact}" if item.contact else "registers"
            state = "active" if item.active else "inactive"
            click.echo(f"{item.name:<20} {state:<8} dtmf={item.dtmf_mode:<8} {kind}")


# --- database ------------------------------------------------------------------------------


@main.group("db")
def database() -> None:
    """The database (CBSERVER_DATABASE_URL; SQLite by default)."""


@database.command()
@click.pass_obj
def upgrade(obj: Context) -> None:
    """Create the database or bring it to the newest schema."""
    pending = db.pending_migrations(obj.engine)
    db.upgrade(obj.engine)
    click.echo(f"database at the newest schema ({len(pending)} migration(s) applied)")


# --- the service ---------------------------------------------------------------------------


@main.command()
@click.option("--demo", is_flag=True, help="Create demo agents and print their SIP accounts.")
@click.pass_obj
def run(obj: Context, demo: bool) -> None:
    """Run cbserver in the foreground: Asterisk (and the demo gateway) until Ctrl-C."""
    sessions = obj.upgraded_sessions()
    accounts = _ensure_demo_agents(sessions) if demo else {}
    stop_requested = threading.Event()

    def request_stop(_signum: int, _frame: Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    gateway = DemoGateway(obj.settings) if obj.settings.uses_demo_gateway else None
    try:
        started = obj.instance.start(obj.active_agents(), _progress)
    except (ProvisionError, AsteriskError) as exc:
        _fail(str(exc))
    try:
        if gateway is not None:
            gateway.start()
        _print_status(obj.instance.status())
        _print_reach(obj.settings, accounts, gateway)
        while not stop_requested.wait(1.0):
            if obj.instance.pid() is None:
                _fail("Asterisk stopped unexpectedly.\n" + obj.instance.log_tail())
    finally:
        if gateway is not None:
            gateway.stop()
        if started:
            obj.instance.stop()
            click.echo("Asterisk stopped.", err=True)


def _ensure_demo_agents(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as session:
        existing = {a.name: a for a in agents_service.list_agents(session)}
        accounts = {}
        for name in DEMO_AGENTS:
            if name in existing:
                accounts[name] = existing[name].sip_password or ""
            else:
                accounts[name] = agents_service.add_agent(session, name).sip_password or ""
    return accounts


def _print_reach(settings: Settings, accounts: dict[str, str], gateway: DemoGateway | None) -> None:
    click.echo("")
    if gateway is not None:
        click.echo(
            f"Demo PSTN gateway (sipp, answers and echoes audio) on {settings.effective_trunk_uri}"
        )
    else:
        click.echo(f"Trunk: {settings.effective_trunk_uri}")
    for name, password in accounts.items():
        _print_sip_account(settings, name, password)
    click.echo(
        "Softphones: register with an account above, then dial 600 for an echo test.\n"
        "Asterisk console: cbserver asterisk cli      Stop: Ctrl-C"
    )
