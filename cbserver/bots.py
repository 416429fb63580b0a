"""Telling people from simple bots on the hosted form and the widget, without a CAPTCHA.

Two quiet checks: a honeypot field people never see (a bot filling every field fills it), and
a signed token of the time a form was shown (a bot posting at once is faster than any person).
A token is good for CBSERVER_FORM_MAX_HOURS and for one request: once a request was taken with
it, it is refused for any other (a repeat of the same request, same idempotency key, passes:
the intake service answers it with the first). A browser (a request with an ``Origin``: the
widget) must send a token; a server-side integration sends neither check and meets the rate
limits (and a CAPTCHA, when the subscriber has one) instead.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from cbserver import audit, ratelimits, web
from cbserver.errors import Invalid
from cbserver.i18n import _
from cbserver.models import Subscriber

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


@dataclass(frozen=True)
class FormToken:
    shown_at: datetime
    # Tells this token from every other one, so that it can be spent once.
    nonce: str


def form_token(secret_key: str, slug: str, shown_at: datetime) -> str:
    """A token saying the form for ``slug`` was shown at ``shown_at``; only we can make one."""
    serializer = URLSafeSerializer(secret_key, salt=_SALT)
    nonce = secrets.token_urlsafe(12)
    return serializer.dumps({"s": slug, "t": round(shown_at.timestamp(), 3), "n": nonce})


def read(secret_key: str, slug: str, token: str) -> FormToken | None:
    """The token's time and nonce; None for a token we did not make for ``slug``."""
    try:
        payload = URLSafeSerializer(secret_key, salt=_SALT).loads(token)
    except (BadSignature, UnicodeError):
        # A lone surrogate ("\ud800") cannot even be encoded to check its signature.
        return None
    if not isinstance(payload, dict) or payload.get("s") != slug:
        return None
    moment, nonce = payload.get("t"), payload.get("n")
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        return None
    if not isinstance(nonce, str) or not nonce:
        return None
    return FormToken(datetime.fromtimestamp(moment, UTC), nonce)


def shown_at(secret_key: str, slug: str, token: str) -> datetime | None:
    """When the form the token came with was shown; None for a token we did not make."""
    found = read(secret_key, slug, token)
    return found.shown_at if found is not None else None


def check(
    secret_key: str,
    slug: str,
    *,
    honeypot: str | None,
    token: str | None,
    token_required: bool,
    min_seconds: float,
    max_seconds: float,
    now: datetime,
) -> FormToken | None:
    """The token that came with the form (None: none, where none is required); BotSuspected
    for a filled honeypot, a missing or forged token where one is required, a form sent sooner
    than ``min_seconds`` after it was shown, and one shown more than ``max_seconds`` ago."""
    if honeypot:
        raise BotSuspected("the hidden field was filled in")
    if not token:
        if token_required:
            raise BotSuspected("the form came without the time it was shown")
        return None
    found = read(secret_key, slug, token)
    if found is None:
        raise BotSuspected("the time the form was shown is not one we signed")
    seconds = (now - found.shown_at).total_seconds()
    if seconds < -_CLOCK_SKEW_SECONDS:
        raise BotSuspected("the form says it was shown in the future")
    if seconds < min_seconds:
        raise BotSuspected(f"the form was sent {max(seconds, 0):.1f} s after it was shown")
    if seconds > max_seconds:
        raise BotSuspected(f"the form was shown {seconds / 3600:.1f} hours ago")
    return found


# --- in a web request ------------------------------------------------------------------------


def _secret_key() -> str:
    return str(current_app.config["SECRET_KEY"])


def max_seconds() -> float:
    """How long a form's token is good for (CBSERVER_FORM_MAX_HOURS)."""
    return web.services().settings.form_max_hours * 3600


def _remembered_seconds() -> int:
    # A spent token is remembered until it would have expired anyway.
    return math.ceil(max_seconds() + _CLOCK_SKEW_SECONDS)


def issue(subscriber: Subscriber) -> str:
    """A token for a form of ``subscriber`` shown now (by the app's clock)."""
    return form_token(_secret_key(), subscriber.slug, web.now())


def signed_here(subscriber: Subscriber, token: str | None) -> bool:
    """Whether ``token`` is one this app made for a form of ``subscriber`` that may still be
    sent: not expired, and not spent on a request."""
    found = read(_secret_key(), subscriber.slug, token or "") if token else None
    if found is None or (web.now() - found.shown_at).total_seconds() > max_seconds():
        return False
    return not ratelimits.used(_remembered_seconds(), "form-token", found.nonce)


@contextmanager
def checked(
    subscriber: Subscriber,
    *,
    honeypot: str | None,
    token: str | None,
    token_required: bool,
    request_key: str | None,
) -> Iterator[None]:
    """``check`` with the app's key, clock and settings, then the token spent on the request
    the block makes: refused (BotSuspected) when another request was taken with it already,
    given back when the block fails, so the same form can be sent again. A refusal is written
    to the audit log (action ``bot_refused``) before it is raised."""
    try:
        found = check(
            _secret_key(),
            subscriber.slug,
            honeypot=honeypot,
            token=token,
            token_required=token_required,
            min_seconds=web.services().settings.form_min_seconds,
            max_seconds=max_seconds(),
            now=web.now(),
        )
        spent = _spend(found, request_key)
    except BotSuspected as refusal:
        audit.record_now(
            web.services().sessions,
            audit.visitor(ratelimits.client_ip()),
            "bot_refused",
            f"{subscriber.slug}: {refusal.reason}",
            subscriber_id=subscriber.id,
        )
        raise
    try:
        yield
    except BaseException:
        for keys in spent:
            ratelimits.forget(_remembered_seconds(), *keys)
        raise


def _spend(found: FormToken | None, request_key: str | None) -> list[tuple[str, ...]]:
    """Mark the token spent; what to forget to give it back. BotSuspected when another
    request spent it."""
    if found is None:
        return []
    seconds = _remembered_seconds()
    token_keys = ("form-token", found.nonce)
    request_keys: tuple[str, ...] = ()
    repeat = False
    if request_key:
        digest = hashlib.sha256(request_key.encode("utf-8", "replace")).hexdigest()[:32]
        request_keys = (*token_keys, digest)
        repeat = not ratelimits.use_once(seconds, *request_keys)
    if ratelimits.use_once(seconds, *token_keys):
        return [token_keys, request_keys] if request_keys else [token_keys]
    if repeat:
        return []
    if request_keys:
        ratelimits.forget(seconds, *request_keys)
    raise BotSuspected("the form's token was used for another request already")
