"""The JSON API: ``/api/v1/callbacks`` for the widget and for integrations."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flask import Blueprint, Response, jsonify, request

from cbserver import bots, captcha, intake, ratelimits, subscribers
from cbserver.errors import Invalid
from cbserver.i18n import _, use_language
from cbserver.intake import Submission
from cbserver.views import bodies, widget
from cbserver.views.present import present, slot_listing, status_url, when_text
from cbserver.web import db_session, now, request_stored

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
blueprint.before_request(bodies.check_json_body)
MAX_SLOT_DAYS = 31
_DAYS = re.compile(r"[0-9]{1,3}")


def _json_body() -> dict[str, Any]:
    """The JSON body, of the shape its schema says: bodies.check_json_body saw to that."""
    body: dict[str, Any] = request.get_json()
    return body


def _submission(body: dict[str, Any]) -> Submission:
    return Submission(
        subscriber=body["subscriber"],
        phone=body["phone"],
        name=body.get("name"),
        topic=body.get("topic"),
        when=body.get("when") or "asap",
        page_url=body.get("page_url"),
        idempotency_key=request.headers.get("Idempotency-Key"),
        client=ratelimits.client_ip(),
        consent=body.get("consent") is True,
    )


def _token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.args.get("token")


def _speak_subscribers_language(slug: object) -> None:
    subscriber = subscribers.find_active(db_session(), slug)
    if subscriber is not None:
        use_language(subscriber.language)


# --- CORS: the widget posts here from subscribers' own web sites (rules in views/widget.py) ---
blueprint.after_request(widget.cors_headers)


@blueprint.after_request
def public_slots(response: Response) -> Response:
    """Slots are public, like the form that offers them: any page may read them, and read
    why a query was refused."""
    if request.endpoint == "api.list_slots":
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@blueprint.route("/callbacks", methods=["OPTIONS"])
def preflight_callbacks() -> Response:
    return widget.preflight()


# ----------------------------------------------------------------------------------------------


@blueprint.post("/callbacks", provide_automatic_options=False)
def create_callback() -> tuple[Response, int]:
    session = db_session()
    body = _json_body()
    _speak_subscribers_language(body.get("subscriber"))
    widget.check_origin(body.get("subscriber"))  # CORS: a refused page stores nothing
    ratelimits.check_submitter()
    submission = _submission(body)
    subscriber = intake.find_subscriber(session, submission.subscriber)
    # A browser (the widget) sends these; a server-side integration need not (it meets the
    # limits), and has no Origin.
    with bots.checked(
        subscriber,
        honeypot=body.get(bots.HONEYPOT_FIELD),
        token=body.get("form_token"),
        token_required="Origin" in request.headers,
        request_key=submission.idempotency_key,
    ):
        captcha.verify(subscriber, body.get("captcha"), ratelimits.client_ip())
        submitted = intake.submit(session, submission, now=now(), admit=ratelimits.admit)
    request_stored(submitted.created)
    callback = submitted.request
    # A replayed Idempotency-Key gets the first answer again; a number already waiting, 200.
    replay = submission.idempotency_key is not None and callback.idempotency_key == (
        submission.idempotency_key
    )
    status = 201 if submitted.created or replay else 200
    body = {
        "id": callback.id,
        "status": callback.status,
        "token": callback.visitor_token,
        "status_url": status_url(callback),
        "due_at": callback.due_at.isoformat(),
        "when_text": when_text(callback),
    }
    return jsonify(body), status


@blueprint.get("/callbacks/<request_id>")
def get_callback(request_id: str) -> Response:
    session = db_session()
    callback = intake.for_visitor(session, request_id, _token())
    use_language(callback.subscriber.language)
    return jsonify(present(session, callback))


@blueprint.post("/callbacks/<request_id>/reschedule")
def reschedule_callback(request_id: str) -> Response:
    session = db_session()
    callback = intake.for_visitor(session, request_id, _token())
    use_language(callback.subscriber.language)
    when = _json_body()["when"]
    intake.reschedule(session, callback, when, "moved by the visitor", now=now())
    request_stored(True)
    return jsonify(present(session, callback))


@blueprint.get("/subscribers/<slug>/slots")
def list_slots(slug: str) -> Response:
    """Bookable slots with the places left in each: public, like the form that offers them."""
    session = db_session()
    subscriber = intake.find_subscriber(session, slug)
    use_language(subscriber.language)
    first_day = _date_argument("date")
    days = _days_argument()
    response = jsonify(slot_listing(session, subscriber, first_day, days))
    response.headers["Cache-Control"] = "no-store"
    return response


def _date_argument(name: str) -> date | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise Invalid(
            _("The date must look like 2026-12-01."), field=name, code="bad_date"
        ) from exc


def _days_argument() -> int | None:
    raw = request.args.get("days")
    if raw is None or raw == "":
        return None
    # ASCII digits only: str.isdigit() takes "²", which int() then refuses (a 500).
    if not _DAYS.fullmatch(raw) or not 1 <= int(raw) <= MAX_SLOT_DAYS:
        raise Invalid(
            _("days must be a whole number from 1 to %(most)s.", most=MAX_SLOT_DAYS),
            field="days",
            code="bad_days",
        )
    return int(raw)


@blueprint.post("/callbacks/<request_id>/cancel")
def cancel_callback(request_id: str) -> Response:
    session = db_session()
    callback = intake.for_visitor(session, request_id, _token())
    use_language(callback.subscriber.language)
    intake.cancel(session, callback, "canceled by the visitor")
    return jsonify(present(session, callback))
