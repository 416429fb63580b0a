"""Telling people from simple bots on the hosted form and the widget, without a CAPTCHA.

Two quiet checks: a honeypot field people never see (a bot filling every field fills it), and
a signed time the form was shown (a bot posting at once is faster than any person). The JSON
API takes both as optional fields: the widget sends them, a server-side integration sends
neither and meets the rate limits (and a CAPTCHA, when the subscriber has one) instead.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from cbserver import audit, web
from cbserver.errors import Invalid
from cbserver.i18n import _
from cbserver.models import Subscriber
from cbserver.ratelimits import client_ip

HONEYPOT_FIELD = "website"
_SALT = "cbserver.form-shown"
# A form shown "later" than now by more than this was not signed by this clock.
_CLOCK_SKEW_SECONDS = 5.0


class BotSuspected(Invalid):
    code = "bot_suspected"

    def __init__(self, reason: str) -> None:
        super().__init__(
            _(
                "This form was sent too quickly or not as a person sends it. Please check "
                "your details and send it again."
            )
        )
        # For the audit log: what gave it away. The visitor is told the same either way.
        self.reason = reason


def form_token(secret_key: str, slug: str, shown_at: datetime) -> str:
    """A token saying the form for ``slug`` was shown at ``shown_at``; only we can make one."""
    serializer = URLSafeSerializer(secret_key, salt=_SALT)
    return serializer.dumps({"s": slug, "t": round(shown_at.timestamp(), 3)})


def shown_at(secret_key: str, slug: str, token: str) -> datetime | None:
    """When the form the token came with was shown; None for a token we did not make."""
    try:
        payload = URLSafeSerializer(secret_key, salt=_SALT).loads(token)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or payload.get("s") != slug:
        return None
    moment = payload.get("t")
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        return None
    return datetime.fromtimestamp(moment, UTC)


def check(
    secret_key: str,
    slug: str,
    *,
    honeypot: str | None,
    token: str | None,
    token_required: bool,
    min_seconds: float,
    now: datetime,
) -> None:
    """Refuse (BotSuspected) a filled honeypot, a missing or forged token where one is
    required, and a form sent sooner than ``min_seconds`` after it was shown."""
    if honeypot:
        raise BotSuspected("the hidden field was filled in")
    if not token:
        if token_required:
            raise BotSuspected("the form came without the time it was shown")
        return
    shown = shown_at(secret_key, slug, token)
    if shown is None:
        raise BotSuspected("the time the form was shown is not one we signed")
    seconds = (now - shown).total_seconds()
    if seconds < -_CLOCK_SKEW_SECONDS:
        raise BotSuspected("the form says it was shown in the future")
    if seconds < min_seconds:
        raise BotSuspected(f"the form was sent {max(seconds, 0):.1f} s after it was shown")


# --- in a web request ------------------------------------------------------------------------


def _secret_key() -> str:
    return str(current_app.config["SECRET_KEY"])


def issue(subscriber: Subscriber) -> str:
    """A token for a form of ``subscriber`` shown now (by the app's clock)."""
    return form_token(_secret_key(), subscriber.slug, web.now())


def signed_here(subscriber: Subscriber, token: str | None) -> bool:
    """Whether ``token`` is one this app made for a form of ``subscriber``."""
    return bool(token) and shown_at(_secret_key(), subscriber.slug, token or "") is not None


def check_request(
    subscriber: Subscriber, *, honeypot: str | None, token: str | None, token_required: bool
) -> None:
    """``check`` with the app's key, clock and CBSERVER_FORM_MIN_SECONDS; a refusal is written
    to the audit log (action ``bot_refused``) before it is raised."""
    try:
        check(
            _secret_key(),
            subscriber.slug,
            honeypot=honeypot,
            token=token,
            token_required=token_required,
            min_seconds=web.services().settings.form_min_seconds,
            now=web.now(),
        )
    except BotSuspected as refusal:
        audit.record_now(
            web.services().sessions,
            f"visitor {client_ip()}",
            "bot_refused",
            f"{subscriber.slug}: {refusal.reason}",
            subscriber_id=subscriber.id,
        )
        raise
