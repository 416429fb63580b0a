"""``cbserver`` — the command line: Asterisk, agents, subscribers, database, the service itself."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, NoReturn

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cbserver import admin_tokens, audit, captcha, db, doctor, number_policy, routing, usage
from cbserver import agents as agents_service
from cbserver import subscribers as subscribers_service
from cbserver.ami import AmiConfig
from cbserver.ari import AriConfig
from cbserver.asterisk.instance import AsteriskError, AsteriskInstance, InstanceStatus
from cbserver.asterisk.provision import ProvisionError
from cbserver.callflow import call_settings
from cbserver.config import ConfigError, Settings
from cbserver.demo_gateway import DemoGateway
from cbserver.errors import FieldError
from cbserver.hours import HoursError, OpeningHours, week_from_text, week_to_text
from cbserver.models import Agent, CallOrder, Subscriber, UnknownCallers, utcnow
from cbserver.nodes import WorkerNameTaken
from cbserver.serve import WebServer, WebServerError
from cbserver.web import create_app
from cbserver.worker import Worker, WorkerThread

EXIT_NOT_RUNNING = 3
# In the order they serve the demo subscriber.
DEMO_AGENTS = ("demo-alice", "demo-bob")
DEMO_SUBSCRIBER = "acme"


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


CLI_ACTOR = "cli"


def _record(
    session: Session, action: str, detail: str, subscriber: Subscriber | None = None
) -> None:
    """Record a change made on the command line, and commit: with the change itself when it
    is still pending, else right after the service that committed it."""
    subscriber_id = subscriber.id if subscriber is not None else None
    audit.record(session, CLI_ACTOR, action, detail, subscriber_id=subscriber_id)
    session.commit()


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
        phone = f"at {contact}" if contact else "(a registering phone)"
        _record(session, "agent_added", f"added agent {name} {phone}")
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


def _print_console(settings: Settings) -> None:
    click.echo(
        f"Agent console: {_web_address(settings)}agent/login "
        "(a demo agent logs in with its SIP username and password)"
    )


def _print_sip_account(settings: Settings, name: str, password: str) -> None:
    click.echo(
        f"  SIP account for the agent's phone:\n"
        f"    username  {name}\n    password  {password}\n"
        f"    domain    {settings.effective_media_address}:{settings.sip_port} (UDP)"
    )


@agent.command("list")
@click.pass_obj
def agent_list(obj: Context) -> None:
    """List agents with their state: available, paused, on_call, wrap_up or offline."""
    now = utcnow()
    with obj.upgraded_sessions()() as session:
        for item in agents_service.list_agents(session):
            kind = f"contact {item.contact}" if item.contact else "registers"
            state = routing.shown_state(item, now)
            if item.paused and item.pause_reason:
                state += f" ({item.pause_reason})"
            # Presence as the worker last saw it over AMI; nothing until it has seen any.
            seen = (
                f" phone {item.presence} since {_when(item.presence_at)}" if item.presence else ""
            )
            click.echo(f"{item.name:<20} {state:<10} dtmf={item.dtmf_mode:<8} {kind}{seen}")


@agent.command("pause")
@click.argument("name")
@click.option("--reason", help="Shown beside the state (at most 100 characters).")
@click.pass_obj
def agent_pause(obj: Context, name: str, reason: str | None) -> None:
    """Offer the agent no call-back until it is available again; a call under way goes on."""
    with obj.upgraded_sessions()() as session:
        try:
            agents_service.pause(session, name, reason)
        except agents_service.AgentError as exc:
            _fail(str(exc))
        why = f": {reason}" if reason else ""
        _record(session, "agent_paused", f"paused agent {name}{why}")
    click.echo(f"Agent {name!r} paused{why}.")


@agent.command("available")
@click.argument("name")
@click.pass_obj
def agent_available(obj: Context, name: str) -> None:
    """End the agent's pause or wrap-up: it is offered the next call-back."""
    with obj.upgraded_sessions()() as session:
        try:
            agents_service.make_available(session, name)
        except agents_service.AgentError as exc:
            _fail(str(exc))
        _record(session, "agent_available", f"agent {name} is available")
    click.echo(f"Agent {name!r} is available.")


@agent.command("console-password")
@click.argument("name")
@click.pass_obj
def agent_console_password(obj: Context, name: str) -> None:
    """Give the agent a new password for the web console (shown once; the old one stops working)."""
    with obj.upgraded_sessions()() as session:
        try:
            password = agents_service.set_console_password(session, name)
        except agents_service.AgentError as exc:
            _fail(str(exc))
        _record(session, "agent_console_password", f"new console password for agent {name}")
    click.echo(f"New console password for agent {name!r} (shown once): {password}")
    click.echo(f"  console  {_web_address(obj.settings)}agent/login")


def _web_address(settings: Settings) -> str:
    """Where the web front end listens, as ``cbserver web`` prints it."""
    host = f"[{settings.web_host}]" if ":" in settings.web_host else settings.web_host
    return f"http://{host}:{settings.web_port}/"


@agent.command("assign")
@click.argument("agent_name", metavar="AGENT")
@click.argument("subscriber_slug", metavar="SUBSCRIBER")
@click.option(
    "--priority",
    type=int,
    default=100,
    show_default=True,
    help="Lower is called first; assigning again changes it.",
)
@click.pass_obj
def agent_assign(obj: Context, agent_name: str, subscriber_slug: str, priority: int) -> None:
    """Let an agent take the subscriber's call-backs."""
    with obj.upgraded_sessions()() as session:
        try:
            before = _priority_of(session, subscriber_slug, agent_name)
            subscribers_service.assign_agent(
                session, subscriber_slug, agent_name, priority=priority
            )
        except subscribers_service.SubscriberError as exc:
            _fail(str(exc))
        if before != priority:
            _record(
                session,
                "agent_assigned",
                f"assigned agent {agent_name} to {subscriber_slug} (priority {priority})",
                subscribers_service.get_subscriber(session, subscriber_slug),
            )
    if before is None:
        click.echo(f"Agent {agent_name!r} assigned to {subscriber_slug!r} (priority {priority}).")
    elif before == priority:
        click.echo(f"Agent {agent_name!r} already serves {subscriber_slug!r}; nothing changed.")
    else:
        click.echo(
            f"Agent {agent_name!r} serves {subscriber_slug!r} at priority {priority} "
            f"(was {before})."
        )


def _priority_of(session: Session, subscriber_slug: str, agent_name: str) -> int | None:
    """The agent's priority for the subscriber, None when it is not assigned."""
    subscriber = subscribers_service.get_subscriber(session, subscriber_slug)
    for assignment in subscriber.assignments:
        if assignment.agent.name == agent_name:
            return assignment.priority
    return None


@agent.command("unassign")
@click.argument("agent_name", metavar="AGENT")
@click.argument("subscriber_slug", metavar="SUBSCRIBER")
@click.pass_obj
def agent_unassign(obj: Context, agent_name: str, subscriber_slug: str) -> None:
    """Stop an agent taking the subscriber's call-backs."""
    with obj.upgraded_sessions()() as session:
        try:
            removed = subscribers_service.unassign_agent(session, subscriber_slug, agent_name)
        except subscribers_service.SubscriberError as exc:
            _fail(str(exc))
        if removed:
            _record(
                session,
                "agent_unassigned",
                f"unassigned agent {agent_name} from {subscriber_slug}",
                subscribers_service.get_subscriber(session, subscriber_slug),
            )
    if removed:
        click.echo(f"Agent {agent_name!r} no longer serves {subscriber_slug!r}.")
    else:
        click.echo(f"Agent {agent_name!r} did not serve {subscriber_slug!r}; nothing changed.")


# --- subscribers ---------------------------------------------------------------------------


@main.group("subscriber")
def subscriber_group() -> None:
    """Subscribers: the businesses whose visitors ask for call-backs."""


@subscriber_group.command("add")
@click.argument("slug")
@click.option("--name", "display_name", required=True, help="The business's name, for visitors.")
@click.option(
    "--country", required=True, help="ISO country code (US, DE…) for visitors' national numbers."
)
@click.option("--caller-id", required=True, help="The number visitors see, in E.164 (+1…).")
@click.option("--time-zone", default="UTC", show_default=True, help="IANA time zone.")
@click.option(
    "--language",
    type=click.Choice(subscribers_service.LANGUAGES),
    default="en",
    show_default=True,
    help="Language of the visitor's pages and prompts.",
)
@click.option(
    "--call-order",
    type=click.Choice(subscribers_service.CALL_ORDERS),
    default=CallOrder.AGENT_FIRST.value,
    show_default=True,
    help="Whom to call first.",
)
@click.option("--max-attempts", type=int, default=3, show_default=True, help="1 to 10.")
@click.option(
    "--retry-interval",
    "retry_interval_seconds",
    type=int,
    default=300,
    show_default=True,
    help="Seconds between attempts, 30 to 86400.",
)
@click.option(
    "--wrap-up-seconds",
    type=int,
    default=0,
    show_default=True,
    help="After a call-back an agent talked in, seconds before they are offered the next "
    "(for notes), 0 to 3600.",
)
@click.option(
    "--allowed-countries",
    default="",
    help="Countries visitors' numbers may be in, like US,CA (default: --country only).",
)
@click.option(
    "--allowed-origins",
    default="",
    help="Web origins the widget may post from, like https://www.example.com,https://example.com.",
)
@click.option(
    "--inbound-number",
    help="Another number calls in reach the business's agents by, besides the caller ID, "
    "in E.164 (+1…).",
)
@click.option(
    "--unknown-callers",
    type=click.Choice(subscribers_service.UNKNOWN_CALLERS),
    default=UnknownCallers.AGENTS.value,
    show_default=True,
    help="What a caller without a waiting call-back gets: the agents, or a message "
    "('nobody is available') and the call ends.",
)
@click.pass_obj
def subscriber_add(
    obj: Context,
    slug: str,
    display_name: str,
    country: str,
    caller_id: str,
    time_zone: str,
    language: str,
    call_order: str,
    max_attempts: int,
    retry_interval_seconds: int,
    wrap_up_seconds: int,
    allowed_countries: str,
    allowed_origins: str,
    inbound_number: str | None,
    unknown_callers: str,
) -> None:
    """Add a subscriber; prints its hosted form path and widget key."""
    with obj.upgraded_sessions()() as session:
        try:
            created = subscribers_service.add_subscriber(
                session,
                slug,
                display_name=display_name,
                country=country,
                caller_id=caller_id,
                time_zone=time_zone,
                language=language,
                call_order=call_order,
                max_attempts=max_attempts,
                retry_interval_seconds=retry_interval_seconds,
                wrap_up_seconds=wrap_up_seconds,
                allowed_countries=allowed_countries,
                allowed_origins=allowed_origins,
                inbound_number=inbound_number,
                unknown_callers=unknown_callers,
            )
        except subscribers_service.SubscriberError as exc:
            _fail(str(exc))
        _record(session, "subscriber_added", f"added subscriber {slug}", created)
    click.echo(f"Subscriber {slug!r} added.")
    _print_subscriber_links(created)


@subscriber_group.command("schedule")
@click.argument("slug")
@click.option(
    "--hours",
    help="Weekly opening hours in the subscriber's time zone, like "
    "'mon-fri 09:00-12:30,13:30-17:00; sat 10:00-14:00', or 'always'. Days left out are closed.",
)
@click.option("--closed", "closed_days", multiple=True, help="A date closed, like 2026-12-25.")
@click.option("--special", multiple=True, help="A date's own hours, like 2026-12-24=09:00-12:00.")
@click.option("--clear-exceptions", is_flag=True, help="Forget every dated exception first.")
@click.option(
    "--outside-hours",
    type=click.Choice(subscribers_service.OUTSIDE_HOURS),
    help="'As soon as possible' while closed: schedule for the opening, or refuse.",
)
@click.option("--slot-minutes", type=int, help="Length of a bookable slot, 5 to 240.")
@click.option(
    "--slot-capacity", help="Bookings per slot, 1 to 1000, or 'agents' (one per active agent)."
)
@click.option("--booking-days", type=int, help="How many days ahead slots are offered, 1 to 60.")
@click.option(
    "--deadline-days",
    type=int,
    help="A request not called by the end of this many days after its day expires, 0 to 30.",
)
@click.option(
    "--retry-rules",
    help='Retry rules per outcome as JSON, like \'{"visitor_busy": {"max_attempts": 5}}\'.',
)
@click.option(
    "--wrap-up-seconds",
    type=int,
    help="After a call-back an agent talked in, seconds before they are offered the next "
    "(for notes), 0 to 3600.",
)
@click.option(
    "--inbound-number",
    help="Another number calls in reach the business's agents by, besides the caller ID, "
    "in E.164 (+1…), or 'none'.",
)
@click.option(
    "--unknown-callers",
    type=click.Choice(subscribers_service.UNKNOWN_CALLERS),
    help="What a caller without a waiting call-back gets: the agents, or a message "
    "('nobody is available') and the call ends.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the schedule as JSON.")
@click.pass_obj
def subscriber_schedule(
    obj: Context,
    slug: str,
    hours: str | None,
    closed_days: tuple[str, ...],
    special: tuple[str, ...],
    clear_exceptions: bool,
    outside_hours: str | None,
    slot_minutes: int | None,
    slot_capacity: str | None,
    booking_days: int | None,
    deadline_days: int | None,
    retry_rules: str | None,
    wrap_up_seconds: int | None,
    inbound_number: str | None,
    unknown_callers: str | None,
    as_json: bool,
) -> None:
    """Show or change when a subscriber takes call-backs: hours, slots, deadlines, retries,
    the agents' wrap-up, and who reaches the agents calling in."""
    with obj.upgraded_sessions()() as session:
        try:
            subscriber = subscribers_service.get_subscriber(session, slug)
            changes = _schedule_changes(
                subscriber,
                hours=hours,
                closed_days=closed_days,
                special=special,
                clear_exceptions=clear_exceptions,
            )
            options = {
                "outside_hours": outside_hours,
                "slot_minutes": slot_minutes,
                "booking_days": booking_days,
                "deadline_days": deadline_days,
                "wrap_up_seconds": wrap_up_seconds,
                "unknown_callers": unknown_callers,
            }
            changes.update({k: v for k, v in options.items() if v is not None})
            if inbound_number is not None:
                changes["inbound_number"] = _inbound_number(inbound_number)
            if slot_capacity is not None:
                changes["slot_capacity"] = _slot_capacity(slot_capacity)
            if retry_rules is not None:
                changes["retry_rules"] = _json_option("--retry-rules", retry_rules)
            if changes:
                subscribers_service.set_schedule(session, slug, changes)
        except (subscribers_service.SubscriberError, HoursError) as exc:
            _fail(str(exc))
        if changes:
            fields = ", ".join(sorted(changes))
            _record(
                session, "schedule_changed", f"changed the schedule of {slug}: {fields}", subscriber
            )
        shown = subscribers_service.schedule_of(subscriber)
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    if changes:
        click.echo(f"Schedule of {slug!r} changed.")
    _print_schedule(slug, shown)


def _print_schedule(slug: str, shown: dict[str, Any]) -> None:
    hours = shown["hours"]
    exceptions = "; ".join(
        f"{day} {','.join(openings) or 'closed'}"
        for day, openings in (hours or {}).get("exceptions", {}).items()
    )
    places = shown["slot_capacity"]
    capacity = f"{places} places each" if places else "a place per active agent"
    slots = f"{shown['slot_minutes']} min, {capacity}, {shown['booking_days']} days ahead"
    retries = (
        f"{shown['max_attempts']} attempts, {shown['retry_interval_seconds']} s apart at first"
    )
    rules = json.dumps(shown["retry_rules"]) if shown["retry_rules"] else "none"
    rows = [
        ["hours", week_to_text(hours)],
        ["exceptions", exceptions or "none"],
        ["outside hours", shown["outside_hours"]],
        ["slots", slots],
        ["deadline", f"end of the day {shown['deadline_days']} day(s) after the request's day"],
        ["retries", retries],
        ["retry rules", rules],
        ["wrap-up", _wrap_up_text(shown["wrap_up_seconds"])],
        ["inbound", _inbound_text(shown["inbound_number"])],
        ["other callers", _unknown_callers_text(shown["unknown_callers"])],
    ]
    click.echo(f"Schedule of {slug!r} ({shown['time_zone']}):")
    for label, value in rows:
        click.echo(f"  {label:<14} {value}")


def _wrap_up_text(seconds: int) -> str:
    if seconds == 0:
        return "none: an agent is offered the next call-back at once"
    return f"{seconds} s after a call-back the agent talked in"


def _inbound_text(number: str | None) -> str:
    if number is None:
        return "none: calls in reach the agents by the caller ID only"
    return f"{number}, besides the caller ID"


def _unknown_callers_text(choice: str) -> str:
    if choice == UnknownCallers.MESSAGE:
        return "message: callers without a waiting call-back are told nobody is available"
    return "agents: callers without a waiting call-back reach the agents too"


def _schedule_changes(
    subscriber: Subscriber,
    *,
    hours: str | None,
    closed_days: tuple[str, ...],
    special: tuple[str, ...],
    clear_exceptions: bool,
) -> dict[str, Any]:
    """The hours a schedule command asks for, merged with what the subscriber has."""
    if hours is None and not closed_days and not special and not clear_exceptions:
        return {}
    current = OpeningHours.parse(subscriber.time_zone, subscriber.hours).to_json()
    wanted = week_from_text(hours) if hours is not None else current
    if wanted is None:
        if closed_days or special:
            raise HoursError("dated exceptions need weekly hours: give --hours as well")
        return {"hours": None}
    exceptions: dict[str, list[str]] = {}
    if current is not None and not clear_exceptions:
        exceptions.update(current["exceptions"])
    for day in closed_days:
        exceptions[day] = []
    for item in special:
        day, _, openings = item.partition("=")
        exceptions[day.strip()] = [o.strip() for o in openings.split(",") if o.strip()]
    return {"hours": {"weekly": wanted["weekly"], "exceptions": exceptions}}


def _inbound_number(text: str) -> str | None:
    return None if text.strip().lower() == "none" else text


def _slot_capacity(text: str) -> int | None:
    if text.strip().lower() == "agents":
        return None
    if not text.strip().isdigit():
        _fail(f"--slot-capacity {text!r}: give a whole number or 'agents'")
    return int(text)


def _json_option(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{name}: not valid JSON ({exc.msg})")


def _print_subscriber_links(subscriber: Subscriber) -> None:
    click.echo(f"  hosted form  /c/{subscriber.slug}\n  widget key   {subscriber.widget_key}")


@subscriber_group.command("list")
@click.pass_obj
def subscriber_list(obj: Context) -> None:
    """List subscribers and the agents serving each, in the order they are called."""
    with obj.upgraded_sessions()() as session:
        rows = [
            [
                item.slug,
                item.display_name,
                item.country,
                item.time_zone,
                ",".join(_agent_label(a.agent) for a in item.assignments) or "-",
                "active" if item.active else "inactive",
            ]
            for item in subscribers_service.list_subscribers(session)
        ]
    if not rows:
        click.echo("No subscribers yet (add one with: cbserver subscriber add).")
        return
    _print_table(["SLUG", "NAME", "COUNTRY", "TIME ZONE", "AGENTS", "STATE"], rows)


def _agent_label(item: Agent) -> str:
    return item.name if item.active else f"{item.name}(inactive)"


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@subscriber_group.command("captcha")
@click.argument("slug")
@click.option(
    "--provider", type=click.Choice(sorted(captcha.PROVIDERS)), help="Turn the CAPTCHA on."
)
@click.option("--site-key", help="The provider's site key (public: shown on the form).")
@click.option(
    "--secret",
    help="The provider's secret key; - reads it from standard input, out of the shell's history.",
)
@click.option("--verify-url", help="Check answers here instead of at the provider's address.")
@click.option("--off", is_flag=True, help="Turn the CAPTCHA off.")
@click.pass_obj
def subscriber_captcha(
    obj: Context,
    slug: str,
    provider: str | None,
    site_key: str | None,
    secret: str | None,
    verify_url: str | None,
    off: bool,
) -> None:
    """Show, set or turn off the CAPTCHA on a subscriber's form and widget (off by default)."""
    if off and (provider or site_key or secret or verify_url):
        _fail("give --off alone, or the CAPTCHA's settings")
    if secret == "-":
        secret = sys.stdin.readline().strip()
    changing = off or provider is not None
    if not changing and (site_key or secret or verify_url):
        _fail("say which --provider the keys are for")
    with obj.upgraded_sessions()() as session:
        try:
            subscriber = subscribers_service.get_subscriber(session, slug)
            if changing:
                captcha.configure(
                    subscriber,
                    provider=None if off else provider,
                    site_key=site_key,
                    secret=secret,
                    verify_url=verify_url,
                )
                session.commit()
                detail = f"CAPTCHA of {slug}: {captcha.describe(subscriber)}"
                _record(session, "captcha_changed", detail, subscriber)
                click.echo(f"CAPTCHA of {slug!r} changed.")
        except FieldError as exc:
            _fail(str(exc))
        click.echo(f"{slug} CAPTCHA: {captcha.describe(subscriber)}")


# --- admin API tokens ----------------------------------------------------------------------


@main.group()
def token() -> None:
    """Tokens for the admin API (/api/v1/admin): for all subscribers, or for one."""


@token.command("create")
@click.argument("name")
@click.option(
    "--subscriber", "subscriber_slug", metavar="SLUG", help="Only this subscriber (default: all)."
)
@click.pass_obj
def token_create(obj: Context, name: str, subscriber_slug: str | None) -> None:
    """Create a token; its secret is printed once (only a hash of it is stored)."""
    with obj.upgraded_sessions()() as session:
        try:
            scope = None
            if subscriber_slug is not None:
                scope = subscribers_service.get_subscriber(session, subscriber_slug)
            created, secret = admin_tokens.create_token(session, name, subscriber=scope)
        except FieldError as exc:
            _fail(str(exc))
        # Never the secret: only which token, and what it may see.
        _record(
            session,
            "token_created",
            f"created token {created.id} ({created.name!r}) for {_scope_text(scope)}",
            scope,
        )
    click.echo(f"Token {created.id} ({created.name!r}) created for {_scope_text(scope)}.")
    click.echo(f"  secret  {secret}")
    click.echo(
        "Copy the secret now: it will not be shown again (only its hash is stored).\n"
        "Send it as: Authorization: Bearer <secret>"
    )


def _scope_text(subscriber: Subscriber | None) -> str:
    return "all subscribers" if subscriber is None else f"subscriber {subscriber.slug!r}"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}Z"


@token.command("list")
@click.pass_obj
def token_list(obj: Context) -> None:
    """List tokens (never their secrets)."""
    with obj.upgraded_sessions()() as session:
        rows = [
            [
                str(item.id),
                item.name,
                item.scope_subscriber.slug if item.scope_subscriber else "all",
                _when(item.created_at),
                _when(item.last_used_at),
                _when(item.revoked_at),
            ]
            for item in admin_tokens.list_tokens(session)
        ]
    if not rows:
        click.echo("No tokens yet (create one with: cbserver token create NAME).")
        return
    _print_table(["ID", "NAME", "SUBSCRIBER", "CREATED", "LAST USED", "REVOKED"], rows)


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@click.pass_obj
def token_revoke(obj: Context, token_id: int) -> None:
    """Revoke a token: the admin API refuses it from now on."""
    with obj.upgraded_sessions()() as session:
        try:
            revoked = admin_tokens.revoke_token(session, token_id)
        except admin_tokens.TokenError as exc:
            _fail(str(exc))
        if revoked:
            gone = admin_tokens.get_token(session, token_id)
            _record(
                session,
                "token_revoked",
                f"revoked token {token_id} ({gone.name!r})",
                gone.scope_subscriber,
            )
    if revoked:
        click.echo(f"Token {token_id} revoked.")
    else:
        click.echo(f"Token {token_id} was already revoked; nothing changed.")


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


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_obj
def doctor_command(obj: Context, as_json: bool) -> None:
    """Check the database, migrations, ARI, AMI, the trunk and the agents' phones (exit 1 on a
    problem); says what is wrong and what to do."""
    findings = doctor.diagnose(obj.settings)
    if as_json:
        click.echo(json.dumps(doctor.as_json(findings), indent=2))
    else:
        for finding in findings:
            click.echo(finding.line())
    if not doctor.all_ok(findings):
        sys.exit(1)


# --- the service ---------------------------------------------------------------------------


@main.command()
@click.option(
    "--demo", is_flag=True, help="Seed the demo (as `cbserver demo`) and print its SIP accounts."
)
@click.pass_obj
def run(obj: Context, demo: bool) -> None:
    """Run cbserver in the foreground: web front end and Asterisk (with the demo gateway)."""
    sessions = obj.upgraded_sessions()
    accounts = {}
    agents_added = False
    demo_subscriber: Subscriber | None = None
    if demo:
        seeded = _seed_demo(sessions)
        for change in seeded.changes:
            _progress(change)
        accounts, agents_added = seeded.accounts, seeded.agents_added
        demo_subscriber = seeded.subscriber
    stop_requested = threading.Event()

    def request_stop(_signum: int, _frame: Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    worker = WorkerThread(_worker(obj, sessions))
    web = WebServer(
        create_app(settings=obj.settings, engine=obj.engine, wake_worker=worker.wake),
        obj.settings.web_host,
        obj.settings.web_port,
    )
    try:
        web.start()
    except WebServerError as exc:
        _fail(str(exc))
    gateway = DemoGateway(obj.settings) if obj.settings.uses_demo_gateway else None
    started = False
    try:
        try:
            started = obj.instance.start(obj.active_agents(), _progress)
        except (ProvisionError, AsteriskError) as exc:
            _fail(str(exc))
        if agents_added and not started:
            # An Asterisk that was already running has not read the new demo agents yet.
            _sync_agents(obj)
        if gateway is not None:
            gateway.start()
        worker.start()
        _print_status(obj.instance.status())
        _print_reach(obj.settings, accounts, gateway)
        click.echo(f"\ncbserver is ready: {web.base_url}")
        if demo_subscriber is not None:
            click.echo(f"Demo form: {web.base_url}c/{demo_subscriber.slug}")
        while not stop_requested.wait(1.0):
            if obj.instance.pid() is None:
                _fail("Asterisk stopped unexpectedly.\n" + obj.instance.log_tail())
            if worker.failure is not None:
                _fail(worker.failure)
    finally:
        web.stop()
        worker.stop()
        if gateway is not None:
            gateway.stop()
        if started:
            obj.instance.stop()
            click.echo("Asterisk stopped.", err=True)


def _ari_config(obj: Context) -> AriConfig:
    settings = obj.settings
    if settings.uses_remote_ari:
        # An Asterisk of someone else's: its own ari.conf user; the instance is not touched.
        return AriConfig(
            base_url=settings.ari_url,
            username=settings.ari_username,
            password=settings.ari_password,
            app=settings.ari_app,
        )
    keys = obj.instance.secrets().ari
    return AriConfig(
        base_url=obj.instance.ari_url,
        username=keys.username,
        password=keys.password,
        app=settings.ari_app,
    )


def _worker(obj: Context, sessions: sessionmaker[Session], wake_port: int | None = None) -> Worker:
    """The worker the settings describe, for ``cbserver run`` and ``cbserver worker``."""
    settings = obj.settings
    return Worker(
        _ari_config(obj),
        sessions,
        name=settings.effective_worker_name,
        call_settings=call_settings(settings),
        wake_port=wake_port,
        retention=timedelta(days=settings.retention_days),
        max_calls=settings.worker_max_calls,
        lease=timedelta(seconds=settings.worker_lease_seconds),
        ami=AmiConfig.for_instance(settings, obj.instance),
        # Another host's Asterisk cannot reach this loopback server: its own dialplan decides.
        agi_port=None if settings.uses_remote_ari else settings.agi_port,
    )


@main.command("worker")
@click.pass_obj
def worker_command(obj: Context) -> None:
    """Run only the worker in the foreground: claim due requests and place their calls."""
    sessions = obj.upgraded_sessions()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every ARI request at INFO: a dozen lines per call-back that say nothing new.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Its INFO lines are one per job run: every timed wake-up would be logged twice.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await _worker(obj, sessions, wake_port=obj.settings.worker_wake_port).run(stop)

    try:
        asyncio.run(serve())
    except WorkerNameTaken as exc:
        _fail(str(exc))


@main.command()
@click.pass_obj
def web(obj: Context) -> None:
    """Serve only the web front end in the foreground (production: gunicorn cbserver.wsgi:app)."""
    obj.upgraded_sessions()
    server = WebServer(
        create_app(settings=obj.settings, engine=obj.engine),
        obj.settings.web_host,
        obj.settings.web_port,
    )
    try:
        server.start()
    except WebServerError as exc:
        _fail(str(exc))
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop_requested.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop_requested.set())
    click.echo(f"cbserver web front end: {server.base_url}  (Ctrl-C stops it)")
    stop_requested.wait()
    server.stop()


@main.command("demo")
@click.pass_obj
def demo_command(obj: Context) -> None:
    """Seed the demo: subscriber acme, served by demo-alice, then demo-bob (idempotent)."""
    seeded = _seed_demo(obj.upgraded_sessions())
    for change in seeded.changes:
        click.echo(change)
    if not seeded.changes:
        click.echo("The demo is already seeded; nothing changed.")
    if seeded.agents_added:
        _sync_agents(obj)
    else:
        # Nothing new for a running Asterisk to reload; the file is written all the same.
        obj.instance.write_agents(obj.active_agents())
    click.echo(f"Subscriber {seeded.subscriber.slug!r} ({seeded.subscriber.display_name}):")
    _print_subscriber_links(seeded.subscriber)
    for name, password in seeded.accounts.items():
        _print_sip_account(obj.settings, name, password)
    _print_console(obj.settings)


@dataclass(frozen=True)
class DemoSeed:
    subscriber: Subscriber
    # Agent name -> SIP password, for the softphones.
    accounts: dict[str, str]
    # What this run changed, one sentence each; empty when the demo was complete.
    changes: list[str]
    agents_added: bool


def _seed_demo(sessions: sessionmaker[Session]) -> DemoSeed:
    """Seed the demo, for ``cbserver demo`` and ``cbserver run --demo``; idempotent.

    An existing acme is left as it is (it may have been changed on purpose); only what is
    missing is added, and the demo agents' order restored.
    """
    with sessions() as session:
        accounts, added = _ensure_demo_agents(session)
        changes = [f"Agent {name!r} added." for name in added]
        try:
            subscriber = subscribers_service.get_subscriber(session, DEMO_SUBSCRIBER)
        except subscribers_service.SubscriberError:
            subscriber = subscribers_service.add_subscriber(
                session,
                DEMO_SUBSCRIBER,
                display_name="Acme Plumbing",
                country="US",
                time_zone="America/Los_Angeles",
                caller_id="+12015550100",
                language="en",
                allowed_origins="",
            )
            changes.append(f"Subscriber {DEMO_SUBSCRIBER!r} added.")
        for rank, name in enumerate(DEMO_AGENTS, start=1):
            priority = rank * 10
            if _priority_of(session, DEMO_SUBSCRIBER, name) != priority:
                subscribers_service.assign_agent(session, DEMO_SUBSCRIBER, name, priority=priority)
                changes.append(
                    f"Agent {name!r} assigned to {DEMO_SUBSCRIBER!r} (priority {priority})."
                )
        for change in changes:
            _record(session, "demo_seeded", change, subscriber)
        session.refresh(subscriber)  # loaded for printing after the session closes
    return DemoSeed(subscriber, accounts, changes, agents_added=bool(added))


def _ensure_demo_agents(session: Session) -> tuple[dict[str, str], list[str]]:
    """The demo agents' SIP accounts, and the names of those added now."""
    existing = {a.name: a for a in agents_service.list_agents(session)}
    accounts = {}
    added = []
    for name in DEMO_AGENTS:
        if name in existing:
            accounts[name] = existing[name].sip_password or ""
        else:
            accounts[name] = agents_service.add_agent(session, name).sip_password or ""
            added.append(name)
        if accounts[name] and (name not in existing or not existing[name].console_password_hash):
            # A demo agent logs in to the console as its softphone registers: one password.
            agents_service.set_console_password(session, name, accounts[name])
    return accounts, added


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
    _print_console(settings)
    click.echo(
        "Softphones: register with an account above, then dial 600 for an echo test.\n"
        "Asterisk console: cbserver asterisk cli      Stop: Ctrl-C"
    )


# --- which numbers are called --------------------------------------------------------------


@subscriber_group.command("number-types")
@click.argument("slug")
@click.argument("types", required=False)
@click.option("--default", "use_default", is_flag=True, help="Back to the default types.")
@click.pass_obj
def subscriber_number_types(obj: Context, slug: str, types: str | None, use_default: bool) -> None:
    """Show or set which kinds of numbers visitors may give, like fixed_line,mobile.

    Known types: fixed_line, mobile, fixed_line_or_mobile, toll_free, premium_rate,
    shared_cost, voip, personal_number, pager, uan, voicemail. The default is fixed_line,
    mobile and fixed_line_or_mobile (numbers that may be either, as in the US).
    """
    if types is not None and use_default:
        _fail("give the types or --default, not both")
    with obj.upgraded_sessions()() as session:
        try:
            subscriber = subscribers_service.get_subscriber(session, slug)
            if types is not None or use_default:
                number_policy.set_number_types(
                    session, subscriber, None if use_default else types, actor=CLI_ACTOR
                )
                session.commit()
                click.echo(f"Number types of {slug!r} changed.")
        except FieldError as exc:
            _fail(str(exc))
        default = " (the default)" if subscriber.number_types is None else ""
        click.echo(f"{slug} calls: {', '.join(number_policy.type_names(subscriber))}{default}")


# --- the deny-list -------------------------------------------------------------------------


@main.group()
def deny() -> None:
    """The deny-list: numbers and prefixes never called, for every subscriber or for one."""


@deny.command("add")
@click.argument("pattern")
@click.option("--prefix", is_flag=True, help="Deny every number that starts so (like +4490).")
@click.option("--reason", default="", help="Why, for the admins who read the list.")
@click.option(
    "--subscriber",
    "subscriber_slug",
    metavar="SLUG",
    help="Only for this subscriber (default: all).",
)
@click.pass_obj
def deny_add(
    obj: Context, pattern: str, prefix: bool, reason: str, subscriber_slug: str | None
) -> None:
    """Deny a number in E.164 (+12015550123), or with --prefix every number under a prefix."""
    with obj.upgraded_sessions()() as session:
        try:
            owner = None
            if subscriber_slug is not None:
                owner = subscribers_service.get_subscriber(session, subscriber_slug)
            entry = number_policy.validate_entry(pattern, prefix=prefix, reason=reason)
            denied = number_policy.add_entry(session, entry, owner, actor=CLI_ACTOR)
        except FieldError as exc:
            _fail(str(exc))
        session.commit()
        click.echo(f"Denied ({denied.id}): {number_policy.describe(denied, subscriber_slug)}.")


@deny.command("list")
@click.option(
    "--subscriber",
    "subscriber_slug",
    metavar="SLUG",
    help="Only what counts for this subscriber: its entries and those for all.",
)
@click.pass_obj
def deny_list(obj: Context, subscriber_slug: str | None) -> None:
    """List the deny-list, oldest first."""
    with obj.upgraded_sessions()() as session:
        subscriber_id = None
        if subscriber_slug is not None:
            try:
                subscriber_id = subscribers_service.get_subscriber(session, subscriber_slug).id
            except subscribers_service.SubscriberError as exc:
                _fail(str(exc))
        slugs = {s.id: s.slug for s in subscribers_service.list_subscribers(session)}
        rows = [
            [
                str(item.id),
                item.pattern + ("*" if item.is_prefix else ""),
                slugs.get(item.subscriber_id, "all") if item.subscriber_id else "all",
                _when(item.created_at),
                item.reason or "-",
            ]
            for item in number_policy.list_entries(session, subscriber_id=subscriber_id)
        ]
    if not rows:
        click.echo("The deny-list is empty (add with: cbserver deny add +4490 --prefix).")
        return
    _print_table(["ID", "NUMBER", "SUBSCRIBER", "ADDED", "REASON"], rows)


@deny.command("remove")
@click.argument("entry_id", metavar="ID", type=int)
@click.pass_obj
def deny_remove(obj: Context, entry_id: int) -> None:
    """Remove an entry from the deny-list (its ID is in `cbserver deny list`)."""
    with obj.upgraded_sessions()() as session:
        found = number_policy.entry_by_id(session, entry_id)
        if found is None:
            _fail(f"there is no deny-list entry with id {entry_id}")
        detail = number_policy.remove_entry(session, found, actor=CLI_ACTOR)
        session.commit()
    click.echo(f"Removed ({entry_id}): {detail}.")


# --- the audit log -------------------------------------------------------------------------


@main.command("audit")
@click.option("--subscriber", "subscriber_slug", metavar="SLUG", help="Only this subscriber's.")
@click.option("--action", help="Only these actions, comma-separated, like number_refused.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.pass_obj
def audit_command(
    obj: Context, subscriber_slug: str | None, action: str | None, limit: int
) -> None:
    """What admins did and what was refused, newest first."""
    with obj.upgraded_sessions()() as session:
        try:
            subscriber_id = None
            if subscriber_slug is not None:
                subscriber_id = subscribers_service.get_subscriber(session, subscriber_slug).id
            actions = audit.action_codes(action) if action else None
        except FieldError as exc:
            _fail(str(exc))
        rows = [
            [_when(event.at), event.actor, event.action, slug or "-", event.detail]
            for event, slug in audit.events(
                session, limit=limit, subscriber_id=subscriber_id, actions=actions
            )
        ]
    if not rows:
        click.echo("The audit log has nothing to show.")
        return
    _print_table(["AT", "ACTOR", "ACTION", "SUBSCRIBER", "DETAIL"], rows)


# --- usage ---------------------------------------------------------------------------------


@main.command("usage")
@click.option("--subscriber", "subscriber_slug", metavar="SLUG", required=True, help="Its slug.")
@click.option(
    "--month", metavar="YYYY-MM", help="Like 2026-11 (default: this month, in its time zone)."
)
@click.option("--json", "as_json", is_flag=True, help="Print every day of the month as JSON.")
@click.pass_obj
def usage_command(obj: Context, subscriber_slug: str, month: str | None, as_json: bool) -> None:
    """A subscriber's call-back attempts, connected calls and billable minutes in a month, day
    by day in the subscriber's time zone."""
    with obj.upgraded_sessions()() as session:
        try:
            subscriber = subscribers_service.get_subscriber(session, subscriber_slug)
            first_day = (
                usage.parse_month(month)
                if month is not None
                else usage.this_month(subscriber, utcnow())
            )
        except (subscribers_service.SubscriberError, usage.UsageError) as exc:
            _fail(str(exc))
        counted = usage.month_usage(session, subscriber, first_day)
    if as_json:
        click.echo(json.dumps(counted.as_json(), indent=2))
        return
    click.echo(f"Usage of {counted.subscriber} in {counted.month} (days in {counted.time_zone}):")
    rows = [
        [day.isoformat(), *_usage_cells(figures)]
        for day, figures in counted.days.items()
        if figures.attempts
    ]
    _print_table(
        ["DATE", "ATTEMPTS", "CONNECTED", "MINUTES", "SECONDS"],
        [*rows, ["total", *_usage_cells(counted.total)]],
    )


def _usage_cells(figures: usage.Usage) -> list[str]:
    return [
        str(figures.attempts),
        str(figures.connected),
        f"{figures.billable_minutes:.1f}",
        str(figures.billable_seconds),
    ]
