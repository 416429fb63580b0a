"""The web front end's composition root: ``create_app`` wires settings, database and blueprints."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, render_template, request
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from cbserver import db, i18n
from cbserver.clock import Clock, SystemClock
from cbserver.config import Settings
from cbserver.errors import CbError, Unavailable
from cbserver.i18n import _
from cbserver.worker import wake_by_datagram

MAX_BODY_BYTES = 16 * 1024
# While the database is away: when a client should try again (the message says "in a minute").
RETRY_AFTER_SECONDS = 60
log = logging.getLogger("cbserver.web")


@dataclass(frozen=True)
class WebServices:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    # Tells the worker a request was stored, so it is dialled now rather than at the next poll.
    wake_worker: Callable[[], None]
    clock: Clock


def request_stored(created: bool) -> None:
    if created:
        services().wake_worker()


def services() -> WebServices:
    found: WebServices = current_app.extensions["cbserver"]
    return found


def now() -> datetime:
    """The time every view decides by (a fake clock in tests)."""
    return services().clock.now()


def db_session() -> Session:
    """The request's database session, closed when the request ends."""
    if "db" not in g:
        g.db = services().sessions()
    session: Session = g.db
    return session


def _secret_key(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = settings.state_dir / "secret_key"
    if not path.exists():
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    engine: Engine | None = None,
    wake_worker: Callable[[], None] | None = None,
    clock: Clock | None = None,
) -> Flask:
    """The web app. Forms check their own CSRF token, so a stale one re-shows the visitor's
    input with a message instead of a bare 400 page; the JSON API takes no cookies."""
    settings = settings or Settings.load()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        # The form may stay open a long time; the token is tied to the session, not a clock.
        WTF_CSRF_TIME_LIMIT=None,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE=settings.cookie_samesite,
        # Browsers drop a SameSite=None cookie that is not Secure.
        SESSION_COOKIE_SECURE=settings.cookie_samesite == "None",
        JSON_SORT_KEYS=False,
    )
    app.config.update(config or {})
    engine = engine or db.make_engine(settings.effective_database_url)
    if wake_worker is None:
        port = settings.worker_wake_port
        wake_worker = partial(wake_by_datagram, port)
    app.extensions["cbserver"] = WebServices(
        settings, engine, db.make_session_factory(engine), wake_worker, clock or SystemClock()
    )
    i18n.init_app(app)

    from cbserver import ratelimits, security
    from cbserver.views import admin, api, bodies, console, form, metrics, openapi, status, widget

    for view in (api, admin, console, form, metrics, openapi, status, widget):
        app.register_blueprint(view.blueprint)
    # Built now, not on the first visitor's request (it takes a good part of a second).
    bodies.request_bodies()
    ratelimits.init_app(app, settings)
    security.init_app(app)

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            try:
                session.close()
            except Exception as exc:
                # The answer (a 503) has gone already; the pool replaces the dead connection.
                if not db.unreachable(exc):
                    raise

    @app.get("/")
    def index() -> str:
        # Deliberately no list of businesses: each links visitors to its own /c/<slug>.
        return render_template("index.html")

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            with services().engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unreachable: %s", exc)
            answer = jsonify(status="error", database="unreachable")
            answer.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return answer, 503
        return jsonify(status="ok", database="ok"), 200

    @app.errorhandler(CbError)
    def cb_error(error: CbError) -> tuple[Any, int] | tuple[Any, int, dict[str, str]]:
        if isinstance(error, Unavailable):
            return _unavailable_answer(error)
        return _error_answer(error.status, error.to_json())

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Any, int, dict[str, str]]:
        code = error.code or 500
        message = {
            404: _("There is nothing at this address."),
            405: _("This address does not accept that method."),
            413: _("The request is too large (at most %(size)s KiB).", size=MAX_BODY_BYTES // 1024),
        }.get(code, error.description or _("The request could not be handled."))
        slug = (error.name or "error").lower().replace(" ", "_")
        answer, status = _error_answer(code, {"error": {"code": slug, "message": message}})
        # A 405 says which methods the address takes (RFC 9110), as werkzeug's own page does.
        allowed = [value for name, value in error.get_headers() if name.lower() == "allow"]
        return answer, status, {"Allow": allowed[0]} if allowed else {}

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Any, int] | tuple[Any, int, dict[str, str]]:
        if db.unreachable(error):
            # An outage, not a bug: one line, not a traceback for every request it refuses.
            log.warning(
                "%s %s: database unreachable: %s",
                request.method,
                request.path,
                db.first_line(error),
            )
            return _unavailable_answer(database_unavailable())
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_answer(
            500,
            {
                "error": {
                    "code": "internal_error",
                    "message": _("Something went wrong on our side. Please try again."),
                }
            },
        )

    return app


def database_unavailable() -> Unavailable:
    """The refusal while the database is away: a change (a submission) was not stored."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        message = _("We cannot answer just now. Please try again in a minute.")
    else:
        message = _(
            "We cannot take requests just now. Nothing was stored. Please try again in a minute."
        )
    return Unavailable(message, RETRY_AFTER_SECONDS)


def _unavailable_answer(error: Unavailable) -> tuple[Any, int, dict[str, str]]:
    # A form sent by a person comes back on the page, to be sent again as it was.
    resend = [] if _wants_json() else list(request.form.items(multi=True))
    answer, status = _error_answer(error.status, error.to_json(), resend=resend)
    return answer, status, {"Retry-After": str(error.retry_after)}


def _wants_json() -> bool:
    if request.path.startswith("/api/") or request.path.endswith(".json"):
        return True
    return request.accept_mimetypes.best == "application/json"


def _error_answer(
    status: int, body: dict[str, Any], *, resend: list[tuple[str, str]] | None = None
) -> tuple[Any, int]:
    """JSON for the API, a plain page for people; never a stack trace."""
    if _wants_json():
        return jsonify(body), status
    message = body["error"]["message"]
    return render_template("error.html", status=status, message=message, resend=resend), status
