"""The JSON API: ``/api/v1/callbacks`` for the widget and for integrations."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from cbserver import intake
from cbserver.errors import BadRequest
from cbserver.i18n import _, use_language
from cbserver.intake import Submission
from cbserver.models import Subscriber
from cbserver.views import widget
from cbserver.views.present import present, status_url
from cbserver.web import db_session, request_stored

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
FIELDS = ("subscriber", "phone", "name", "topic", "when", "page_url")
REQUIRED = ("subscriber", "phone")


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not request.is_json:
        raise BadRequest(
            _("Send the request as JSON (Content-Type: application/json)."), code="not_json"
        )
    if not isinstance(body, dict):
        raise BadRequest(_("The body must be a JSON object."), code="bad_json")
    return body


def _submission(body: dict[str, Any]) -> Submission:
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(
            _("Unknown field: %(field)s.", field=unknown[0]), field=unknown[0], code="unknown_field"
        )
    for name in REQUIRED:
        if body.get(name) in (None, ""):
            raise BadRequest(
                _("The field %(field)s is required.", field=name), field=name, code="missing_field"
            )
    for name in FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadRequest(
                _("The field %(field)s must be text.", field=name), field=name, code="wrong_type"
            )
    return Submission(
        subscriber=body["subscriber"],
        phone=body["phone"],
        name=body.get("name"),
        topic=body.get("topic"),
        when=body.get("when") or "asap",
        page_url=body.get("page_url"),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )


def _token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.args.get("token")


def _speak_subscribers_language(slug: object) -> None:
    subscriber = db_session().scalar(select(Subscriber).where(Subscriber.slug == slug))
    if subscriber is not None:
        use_language(subscriber.language)


# --- CORS: the widget posts here from subscribers' own web sites (rules in views/widget.py) ---
blueprint.after_request(widget.cors_headers)


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
    submission = _submission(body)
    submitted = intake.submit(session, submission)
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
    }
    return jsonify(body), status


@blueprint.get("/callbacks/<request_id>")
def get_callback(request_id: str) -> Response:
    session = db_session()
    callback = intake.for_visitor(session, request_id, _token())
    use_language(callback.subscriber.language)
    return jsonify(present(session, callback))


@blueprint.post("/callbacks/<request_id>/cancel")
def cancel_callback(request_id: str) -> Response:
    session = db_session()
    callback = intake.for_visitor(session, request_id, _token())
    use_language(callback.subscriber.language)
    intake.cancel(session, callback, "canceled by the visitor")
    return jsonify(present(session, callback))
