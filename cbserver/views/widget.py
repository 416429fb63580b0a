"""The embeddable widget: ``/widget.js`` and cross-origin access for subscribers' own pages.

A business pastes ``<script src="https://cb.example.com/widget.js" data-subscriber="acme"
async></script>`` into its page; the script posts to ``/api/v1/callbacks`` from the business's
origin. Which origins may do so is decided here (the API only calls in):

* a preflight (``OPTIONS``) does not carry the body, so the subscriber is not known yet: an
  origin listed by *any* active subscriber gets the allow headers;
* the ``POST`` itself names its subscriber: an ``Origin`` that subscriber does not list is
  refused with 403 before anything is stored;
* no ``Origin`` (server-to-server use, curl) and cbserver's own origin are always allowed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, jsonify, request, send_file
from sqlalchemy import select

from cbserver import bots, captcha, subscribers
from cbserver.errors import CbError
from cbserver.i18n import _, use_language
from cbserver.intake import find_subscriber
from cbserver.models import Subscriber
from cbserver.web import db_session

blueprint = Blueprint("widget", __name__)

WIDGET_JS = Path(__file__).resolve().parent.parent / "static" / "widget.js"
# Short enough that a fixed widget reaches every page within minutes.
WIDGET_MAX_AGE = 300
PREFLIGHT_MAX_AGE = 600
ALLOWED_METHODS = "POST, OPTIONS"
ALLOWED_HEADERS = "Content-Type, Idempotency-Key"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginNotAllowed(CbError):
    status = 403
    code = "origin_not_allowed"


@blueprint.get("/widget.js")
def widget_js() -> Response:
    response = send_file(
        WIDGET_JS,
        mimetype="application/javascript; charset=utf-8",
        max_age=WIDGET_MAX_AGE,
        conditional=True,
    )
    # The script is public: any page may load it, also with crossorigin= or under COEP.
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# --- CORS for the create endpoint of the JSON API --------------------------------------------


def _texts() -> dict[str, str]:
    return {
        "launcher": _("Call me back"),
        "title": _("We will call you back"),
        "intro": _("Leave your number and we will call you back as soon as possible."),
        "phone": _("Your phone number"),
        "phoneHint": _("With the country code if you are abroad, e.g. +44 20 7946 0018."),
        "name": _("Your name (optional)"),
        "topic": _("What would you like to talk about? (optional)"),
        # The choice of time; the widget fills in {name}, {zone} and {time} itself.
        "when": _("When should we call you?"),
        "asap": _("As soon as possible"),
        "full": _("(full)"),
        "zoneHint": _(
            "Times are in the time zone of %(name)s: %(zone)s.", name="{name}", zone="{zone}"
        ),
        "closedNote": _(
            "We are closed now: we will call you when we open, %(time)s.", time="{time}"
        ),
        "closedRefuse": _(
            "We are closed now and open again %(time)s. Please choose a time.", time="{time}"
        ),
        "notTaking": _("We are not taking call-backs at the moment."),
        "submit": _("Send"),
        "sending": _("Sending…"),
        "close": _("Close"),
        "phoneMissing": _("Please enter your phone number."),
        "consent": _("I agree to be called at this number."),
        "consentMissing": _("Please tick the box to agree that we call you at this number."),
        "captchaMissing": _("Please complete the check that you are not a robot, then send again."),
        "thanks": _("Thank you — we will call you."),
        "follow": _("Follow your call-back"),
        "unreachable": _("Could not reach the call-back service. Please try again."),
        "failed": _("Something went wrong on our side. Please try again."),
    }


@blueprint.get("/widget/<slug>.json")
def widget_texts(slug: str) -> Response:
    """The widget's labels in the business's language; public, like widget.js itself."""
    subscriber = find_subscriber(db_session(), slug)
    use_language(subscriber.language)
    response = jsonify(
        {
            "subscriber": slug,
            "name": subscriber.display_name,
            "text": _texts(),
            # The subscriber's CAPTCHA (provider, site key, script), or null.
            "captcha": captcha.public_settings(subscriber),
        }
    )
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@blueprint.get("/widget/<slug>/form-token.json")
def form_token(slug: str) -> Response:
    """The signed time the widget's form was opened (see bots.py): sent back with the form,
    once, within ``expires_in`` seconds."""
    subscriber = find_subscriber(db_session(), slug)
    response = jsonify(
        {"form_token": bots.issue(subscriber), "expires_in": int(bots.max_seconds())}
    )
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def origin_key(origin: str) -> str | None:
    """``scheme://host[:port]`` as browsers send it (lower case, no default port); None when
    ``origin`` is not an http(s) origin (``null``, a path, garbage)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    suffix = "" if port is None or port == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{suffix}"


def _listed(origin: str, subscriber_origins: list[str]) -> bool:
    return any(origin_key(allowed) == origin for allowed in subscriber_origins)


def _request_origin() -> str | None:
    """The request's ``Origin`` normalised; "" for an Origin that is no http(s) origin; None
    when the request has none."""
    header = request.headers.get("Origin")
    if header is None:
        return None
    return origin_key(header) or ""


def _own_origin(origin: str) -> bool:
    return origin == origin_key(request.host_url)


def _allowed_by_any_subscriber(origin: str) -> bool:
    listed = db_session().scalars(
        select(Subscriber.allowed_origins).where(
            Subscriber.active.is_(True), Subscriber.allowed_origins != ""
        )
    )
    return any(_listed(origin, text.split(",")) for text in listed)


def preflight() -> Response:
    """The answer to ``OPTIONS`` on a CORS endpoint: the allow headers, or none at all."""
    response = Response(status=204)
    response.headers["Allow"] = ALLOWED_METHODS
    response.vary.add("Origin")
    origin = _request_origin()
    asked = request.headers.get("Access-Control-Request-Method", "POST").upper()
    if not origin or asked != "POST":
        return response
    if _own_origin(origin) or _allowed_by_any_subscriber(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    return response


def check_origin(slug: object) -> None:
    """Refuse (403, nothing stored) a browser request from a page the subscriber ``slug`` does
    not list; remember an allowed origin for ``cors_headers``. An unknown subscriber is left to
    the intake service to report."""
    g.cors_checked = True
    origin = _request_origin()
    if origin is None:
        return
    if origin and _own_origin(origin):
        g.cors_origin = origin
        return
    subscriber = subscribers.find_active(db_session(), slug)
    if subscriber is not None and origin and _listed(origin, subscriber.allowed_origin_list):
        g.cors_origin = origin
        return
    # A refusal (or an unknown subscriber) is readable by the page only when some subscriber
    # lists its origin, as its preflight passed then too: the site's owner sees why, in the widget.
    if origin and _allowed_by_any_subscriber(origin):
        g.cors_origin = origin
    if subscriber is not None:
        use_language(subscriber.language)
        raise OriginNotAllowed(
            _(
                "This web site may not send call-back requests for %(name)s.",
                name=subscriber.display_name,
            )
        )


def cors_headers(response: Response) -> Response:
    """After a request that ``check_origin`` saw: the allow header, on errors too (the widget
    shows the API's message), and ``Vary: Origin`` since the answer depends on it."""
    if request.endpoint == "api.create_callback" and not g.get("cors_checked"):
        _refused_before_the_view()
    if g.get("cors_checked"):
        response.vary.add("Origin")
        origin = g.get("cors_origin")
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
    return response


def _refused_before_the_view() -> None:
    """A body refused before ``check_origin`` ran (see views/bodies.py): readable by the pages
    that may read a refusal, so a site's owner sees why in the widget."""
    g.cors_checked = True
    origin = _request_origin()
    if origin and (_own_origin(origin) or _allowed_by_any_subscriber(origin)):
        g.cors_origin = origin
