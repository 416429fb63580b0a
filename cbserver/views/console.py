"""The agent console ``/agent/``: an agent logs in with its own name and console password, says
whether it is available, sees the queue of the businesses it serves and, during and just after
a call, the request the call is about (the screen-pop) with a wrap-up note.

The page works without JavaScript: its forms post and come back to it. ``console.js`` keeps it
current from ``/agent/state.json``, polled every second.

Logged in means the Flask session (a signed cookie) holds the agent's id and a mark of its
console password: a new password (``cbserver agent console-password``) logs the agent out of
every browser, and so does making the agent inactive.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, g, jsonify, redirect, render_template, request, url_for
from flask import session as browser_session
from flask_wtf import FlaskForm
from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import HiddenField, PasswordField, StringField, TextAreaField

from cbserver import agents, audit, queue_eta
from cbserver.agents import PAUSE_REASON_LENGTH
from cbserver.errors import CbError
from cbserver.i18n import _, _l
from cbserver.models import (
    Agent,
    AgentAssignment,
    AttemptKind,
    CallAttempt,
    CallbackRequest,
    RequestStatus,
    Subscriber,
)
from cbserver.routing import AgentState, state_of
from cbserver.scheduling import local_text
from cbserver.web import db_session, now

blueprint = Blueprint("console", __name__, url_prefix="/agent")

NOTE_LENGTH = 2000
# How long the request of a call the agent talked in stays on screen after it, for the note.
RECENT_CALL = timedelta(minutes=10)
# What the queue counts as waiting for a call-back.
WAITING = (RequestStatus.QUEUED, RequestStatus.RETRY_WAIT, RequestStatus.SCHEDULED)
SESSION_AGENT = "console_agent"
SESSION_MARK = "console_mark"

STATE_TEXT = {
    AgentState.AVAILABLE: _l("Available"),
    AgentState.PAUSED: _l("Paused"),
    AgentState.ON_CALL: _l("On a call"),
    AgentState.WRAP_UP: _l("Wrap-up"),
    AgentState.OFFLINE: _l("Offline: your phone is not registered"),
}
# The request's status in the agent's words (present.STATUS_TEXT speaks to the visitor).
REQUEST_TEXT = {
    RequestStatus.SCHEDULED: _l("Booked"),
    RequestStatus.QUEUED: _l("Waiting"),
    RequestStatus.DIALING_AGENT: _l("Ringing the agent"),
    RequestStatus.DIALING_VISITOR: _l("Calling the visitor"),
    RequestStatus.CONNECTED: _l("Connected"),
    RequestStatus.RETRY_WAIT: _l("Waiting to try again"),
    RequestStatus.COMPLETED: _l("Completed"),
    RequestStatus.FAILED: _l("Failed"),
    RequestStatus.CANCELED: _l("Canceled"),
    RequestStatus.EXPIRED: _l("Expired"),
}
OUTCOME_TEXT = {
    "answered": _l("talked"),
    "busy": _l("busy"),
    "no_answer": _l("no answer"),
    "rejected": _l("rejected"),
    "no_agent": _l("no agent"),
    "failed": _l("failed"),
}


class NotLoggedIn(CbError):
    status = 401
    code = "not_logged_in"


# Flask-WTF is untyped (see pyproject.toml): its forms are subclassed as Any.


class ConsoleForm(FlaskForm):
    """The CSRF token of the console's buttons (state, logout)."""


class LoginForm(FlaskForm):
    name = StringField(
        _l("Agent name"), render_kw={"autocomplete": "username", "autocapitalize": "none"}
    )
    password = PasswordField(_l("Password"), render_kw={"autocomplete": "current-password"})


class NoteForm(FlaskForm):
    request_id = HiddenField()
    note = TextAreaField(_l("Wrap-up note"), render_kw={"maxlength": NOTE_LENGTH, "rows": 6})


def _expired() -> str:
    return _("This page had expired. Please try again.")


# --- who is logged in ------------------------------------------------------------------------


def _mark(agent: Agent) -> str:
    """What ties a login to the console password it was made with."""
    return hashlib.sha256((agent.console_password_hash or "").encode()).hexdigest()


def _logged_in(session: Session) -> Agent | None:
    agent_id = browser_session.get(SESSION_AGENT)
    mark = browser_session.get(SESSION_MARK)
    if not isinstance(agent_id, int) or not isinstance(mark, str):
        return None
    agent = session.get(Agent, agent_id)
    if agent is None or not agent.active or agent.console_password_hash is None:
        return None
    return agent if hmac.compare_digest(_mark(agent), mark) else None


@blueprint.before_request
def require_login() -> Response | None:
    if request.endpoint == "console.login":
        return None
    agent = _logged_in(db_session())
    if agent is not None:
        g.console_agent = agent
        return None
    if request.path.endswith(".json"):
        raise NotLoggedIn(_("You are not logged in to the agent console."))
    return redirect(url_for("console.login"), code=303)


@blueprint.after_request
def no_copies(response: Response) -> Response:
    # Pages name visitors and their numbers, and carry the agent's CSRF token.
    response.headers["Cache-Control"] = "no-store"
    return response


def _agent() -> Agent:
    agent: Agent = g.console_agent
    return agent


def _actor(agent: Agent) -> str:
    return f"agent {agent.name}"


# --- what the console shows ------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _eta_text(seconds: int | None) -> str:
    if seconds is None:
        return _("no agent on duty")
    if seconds == 0:
        return _("now")
    return _("about %(minutes)s min", minutes=math.ceil(seconds / 60))


def _queue(session: Session, agent: Agent, moment: datetime) -> list[dict[str, Any]]:
    """The agent's businesses, first priority first, each with its requests waiting and how
    long until those due now are called."""
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.slug,
            Subscriber.display_name,
            Subscriber.time_zone,
            func.count(CallbackRequest.id),
            func.min(CallbackRequest.due_at),
        )
        .join(AgentAssignment, AgentAssignment.subscriber_id == Subscriber.id)
        .outerjoin(
            CallbackRequest,
            and_(
                CallbackRequest.subscriber_id == Subscriber.id,
                CallbackRequest.status.in_(WAITING),
            ),
        )
        .where(AgentAssignment.agent_id == agent.id, Subscriber.active)
        .group_by(
            Subscriber.id,
            Subscriber.slug,
            Subscriber.display_name,
            Subscriber.time_zone,
            AgentAssignment.priority,
        )
        .order_by(AgentAssignment.priority, Subscriber.display_name)
    ).all()
    etas = queue_eta.queue_etas(session, [row.id for row in rows], moment)
    return [
        {
            "subscriber": slug,
            "display_name": display_name,
            "waiting": waiting,
            "next_due": _iso(next_due),
            "next_due_text": local_text(next_due, zone) if next_due is not None else None,
            "eta_seconds": etas[subscriber_id],
            "eta_text": _eta_text(etas[subscriber_id]),
        }
        for subscriber_id, slug, display_name, zone, waiting, next_due in rows
    ]


def _talked_in_recently(agent: Agent, moment: datetime) -> Select[CallAttempt]:
    """The agent's attempts it talked in that ended within RECENT_CALL."""
    return select(CallAttempt).where(
        CallAttempt.agent_id == agent.id,
        CallAttempt.outcome == "answered",
        CallAttempt.ended_at >= moment - RECENT_CALL,
    )


def _recent_call(session: Session, agent: Agent, moment: datetime) -> CallAttempt | None:
    """The agent's latest attempt it talked in, when it ended within RECENT_CALL."""
    return session.scalar(
        _talked_in_recently(agent, moment)
        .order_by(CallAttempt.ended_at.desc(), CallAttempt.id.desc())
        .limit(1)
    )


def screen_pop_request(session: Session, agent: Agent, moment: datetime) -> CallbackRequest | None:
    """The request the agent is rung for or talks in; else the one it has just talked in."""
    if agent.on_call is not None:
        current = session.get(CallbackRequest, agent.on_call)
        if current is not None:
            return current
    recent = _recent_call(session, agent, moment)
    return recent.request if recent is not None else None


def _may_note(session: Session, agent: Agent, request_id: str, moment: datetime) -> bool:
    """The agent is on this request's call, or talked in it within RECENT_CALL."""
    if not request_id:
        return False
    if agent.on_call == request_id:
        return True
    talked = session.scalar(
        _talked_in_recently(agent, moment).where(CallAttempt.request_id == request_id).limit(1)
    )
    return talked is not None


def _outcome_text(attempt: CallAttempt) -> str:
    outcome = (
        str(OUTCOME_TEXT.get(attempt.outcome, attempt.outcome))
        if attempt.outcome
        else _("under way")
    )
    if attempt.kind == AttemptKind.RETURN_CALL:
        return _("the visitor called back: %(outcome)s", outcome=outcome)
    return outcome


def _screen_pop(callback: CallbackRequest) -> dict[str, Any]:
    zone = callback.subscriber.time_zone
    status = RequestStatus(callback.status)
    return {
        "request_id": callback.id,
        "visitor_name": callback.visitor_name,
        "visitor_phone": callback.visitor_phone,
        "topic": callback.topic,
        "page_url": callback.page_url,
        "subscriber": callback.subscriber.slug,
        "subscriber_name": callback.subscriber.display_name,
        "status": status.value,
        "status_text": str(REQUEST_TEXT[status]),
        "note": callback.agent_note,
        "attempts": [
            {
                "number": attempt.number,
                "started_at": _iso(attempt.started_at),
                "started_at_text": local_text(attempt.started_at, zone),
                "outcome": attempt.outcome,
                "kind": attempt.kind,
                "outcome_text": _outcome_text(attempt),
                "agent": attempt.agent.name if attempt.agent is not None else None,
            }
            for attempt in callback.attempts
        ],
    }


def console_state(session: Session, agent: Agent, moment: datetime) -> dict[str, Any]:
    """What the console shows: the page renders it, ``state.json`` answers it."""
    state = state_of(agent, moment)
    wrap_up = agent.wrap_up_until
    callback = screen_pop_request(session, agent, moment)
    return {
        "agent": agent.name,
        "state": state.value,
        "state_text": str(STATE_TEXT[state]),
        "pause_reason": agent.pause_reason if agent.paused else None,
        # Only while it lasts: a past one says nothing.
        "wrap_up_until": _iso(wrap_up) if wrap_up is not None and wrap_up > moment else None,
        "queue": _queue(session, agent, moment),
        "call": _screen_pop(callback) if callback is not None else None,
    }


def _page(
    *,
    status: int = 200,
    state_error: str | None = None,
    note_error: str | None = None,
    note_form: NoteForm | None = None,
) -> tuple[str, int]:
    session = db_session()
    view = console_state(session, _agent(), now())
    if note_form is None:
        call = view["call"] or {}
        note_form = NoteForm(
            formdata=None, request_id=call.get("request_id"), note=call.get("note")
        )
    wrap_up = datetime.fromisoformat(view["wrap_up_until"]) if view["wrap_up_until"] else None
    return render_template(
        "console.html",
        view=view,
        # console.js shows it in the browser's time zone.
        wrap_up_text=f"{wrap_up:%H:%M:%S} UTC" if wrap_up is not None else None,
        console_form=ConsoleForm(formdata=None),
        note_form=note_form,
        state_error=state_error,
        note_error=note_error,
        note_length=NOTE_LENGTH,
    ), status


# --- pages and buttons -----------------------------------------------------------------------


def _login_page(form: LoginForm, error: str | None, status: int) -> tuple[str, int]:
    return render_template("console_login.html", form=form, error=error), status


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    session = db_session()
    form = LoginForm()
    if request.method == "GET":
        if _logged_in(session) is not None:
            return redirect(url_for("console.page"), code=303)
        return _login_page(form, None, 200)
    if not form.validate_on_submit():
        return _login_page(form, _expired(), 400)
    name = (form.name.data or "").strip().lower()
    agent = agents.check_console_login(session, name, form.password.data or "")
    if agent is None:
        return _login_page(form, _("Wrong agent name or password."), 401)
    # A new session: nothing from before the login (a planted cookie) carries over.
    browser_session.clear()
    browser_session[SESSION_AGENT] = agent.id
    browser_session[SESSION_MARK] = _mark(agent)
    audit.record(session, _actor(agent), "agent_logged_in", f"agent {agent.name} logged in")
    session.commit()
    return redirect(url_for("console.page"), code=303)


@blueprint.post("/logout")
def logout() -> Response | tuple[str, int]:
    if not ConsoleForm().validate_on_submit():
        return _page(status=400, state_error=_expired())
    browser_session.clear()
    return redirect(url_for("console.login"), code=303)


@blueprint.get("/")
def page() -> tuple[str, int]:
    return _page()


@blueprint.get("/state.json")
def state_json() -> Response:
    return jsonify(console_state(db_session(), _agent(), now()))


@blueprint.post("/state")
def set_state() -> Response | tuple[str, int]:
    if not ConsoleForm().validate_on_submit():
        return _page(status=400, state_error=_expired())
    session = db_session()
    agent = _agent()
    wanted = request.form.get("state")
    reason = (request.form.get("reason") or "").strip() or None
    if wanted not in (AgentState.AVAILABLE, AgentState.PAUSED):
        return _page(status=422, state_error=_("Choose Available or Pause."))
    if reason is not None and len(reason) > PAUSE_REASON_LENGTH:
        message = _("A pause reason is at most %(count)s characters.", count=PAUSE_REASON_LENGTH)
        return _page(status=422, state_error=message)
    try:
        if wanted == AgentState.AVAILABLE:
            agents.make_available(session, agent.name)
            action, detail = "agent_available", f"agent {agent.name} is available"
        else:
            agents.pause(session, agent.name, reason)
            why = f": {reason}" if reason else ""
            action, detail = "agent_paused", f"paused agent {agent.name}{why}"
    except agents.AgentError as error:
        session.rollback()
        return _page(status=422, state_error=str(error))
    audit.record(session, _actor(agent), action, detail)
    session.commit()
    return redirect(url_for("console.page"), code=303)


@blueprint.post("/note")
def save_note() -> Response | tuple[str, int]:
    form = NoteForm()
    if not form.validate_on_submit():
        return _page(status=400, note_error=_expired(), note_form=form)
    session = db_session()
    agent = _agent()
    request_id = form.request_id.data or ""
    if not _may_note(session, agent, request_id, now()):
        return _page(
            status=403,
            note_error=_(
                "You can write a note only on a call you are on or have had in the last "
                "%(minutes)s minutes.",
                minutes=int(RECENT_CALL.total_seconds() // 60),
            ),
        )
    # Browsers send a line break as two characters, and count it as one against maxlength.
    note = (form.note.data or "").replace("\r\n", "\n").strip()
    if len(note) > NOTE_LENGTH:
        form.note.errors = [
            _("The note is too long: at most %(count)s characters.", count=NOTE_LENGTH)
        ]
        return _page(status=422, note_form=form)
    callback = session.get(CallbackRequest, request_id)
    if callback is None:
        return _page(status=403, note_error=_("This call-back no longer exists."))
    callback.agent_note = note or None
    audit.record(
        session,
        _actor(agent),
        "agent_note_saved",
        f"agent {agent.name} saved the note on request {callback.id}",
        subscriber_id=callback.subscriber_id,
    )
    session.commit()
    return redirect(url_for("console.page"), code=303)
