"""Rate limits: no call bombing, no flooding, each limit a setting (see config.Settings).

flask-limiter keeps the counts (in the web process, or in Redis for several processes) and
limits the public pages and calls per client address. The limits that need what a submission
says go through the same counter store from here:

* per client address, every submission (hosted form and API) counts;
* per visitor number across all subscribers, per subscriber, and the number of different
  numbers per client address count only a request that will be stored: a number the policy
  refuses never reaches them, and a repeat of a request still open (same Idempotency-Key, or
  the same number still waiting) is answered with that request and rings nobody more, so it
  does not use up the visitor's allowance (it still counts per client address).

A limit reached is a 429 with ``Retry-After`` and a plain message in the visitor's language,
and one row in the audit log per limit and key per window, so a flood does not flood the log.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue, RouteCallable
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, RateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix

from cbserver import audit
from cbserver.config import Settings, rate_limits
from cbserver.errors import CbError
from cbserver.i18n import _
from cbserver.models import Subscriber
from cbserver.web import services

log = logging.getLogger("cbserver.ratelimits")

KEY_PREFIX = "cbserver"
# Public pages and calls a visitor uses besides submitting (by endpoint), and the methods
# counted: the form's POST is a submission, counted by check_submitter.
PUBLIC_ENDPOINTS: dict[str, list[str] | None] = {
    "form.callback_form": ["GET"],
    "status.page": None,
    "status.reschedule": None,
    "status.cancel": None,
    "api.get_callback": None,
    "api.reschedule_callback": None,
    "api.cancel_callback": None,
    "api.list_slots": None,
    "widget.widget_texts": None,
    "widget.form_token": None,
}


class RateLimited(CbError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Limits:
    limiter: Limiter
    per_ip: list[RateLimitItem]
    per_number: list[RateLimitItem]
    per_subscriber: list[RateLimitItem]
    numbers_per_ip: list[RateLimitItem]
    # Used when the shared store (Redis) does not answer: limits per process beat none.
    fallback: RateLimiter = field(default_factory=lambda: MovingWindowRateLimiter(MemoryStorage()))


@dataclass(frozen=True)
class _Check:
    item: RateLimitItem
    keys: tuple[str, ...]
    # For the visitor, given the wait; and for the audit log.
    message: Callable[[str], str]
    detail: str


def client_ip() -> str:
    """The visitor's address: the connection's, or what trusted proxies say (TRUSTED_PROXIES)."""
    return request.remote_addr or "unknown"


def init_app(app: Flask, settings: Settings) -> None:
    """Count requests for ``app`` as ``settings`` say; call after the blueprints are registered."""
    if settings.trusted_proxies:
        proxies = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    limiter = Limiter(
        client_ip,
        app=app,
        storage_uri=settings.rate_limit_storage,
        storage_options={"wrap_exceptions": True},
        strategy="moving-window",
        key_prefix=KEY_PREFIX,
        in_memory_fallback_enabled=True,
        on_breach=_public_limit_reached,
    )
    app.extensions["cbserver_limits"] = _Limits(
        limiter,
        per_ip=rate_limits(settings.rate_limit_per_ip),
        per_number=rate_limits(settings.rate_limit_per_number),
        per_subscriber=rate_limits(settings.rate_limit_per_subscriber),
        numbers_per_ip=rate_limits(settings.rate_limit_numbers_per_ip),
    )
    if rate_limits(settings.rate_limit_public):
        for endpoint, methods in PUBLIC_ENDPOINTS.items():
            limit = limiter.shared_limit(
                settings.rate_limit_public, scope="public", methods=methods
            )
            app.view_functions[endpoint] = cast(RouteCallable, limit(app.view_functions[endpoint]))
    app.register_error_handler(RateLimitExceeded, _public_limit_answer)
    app.after_request(_retry_after_header)


def _limits() -> _Limits:
    found: _Limits = current_app.extensions["cbserver_limits"]
    return found


def _wait_text(seconds: int) -> str:
    """Roughly how long, in words: the Retry-After header has the exact seconds."""
    if seconds <= 90:
        return _("in a minute")
    minutes = round(seconds / 60)
    if minutes < 120:
        return _("in %(count)s minutes", count=minutes)
    return _("in %(count)s hours", count=round(minutes / 60))


def _retry_after_header(response: Response) -> Response:
    retry_after = g.get("retry_after")
    if retry_after is not None and response.status_code == 429:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _refuse(message: Callable[[str], str], reset_at: float) -> RateLimited:
    retry_after = max(1, math.ceil(reset_at - time.time()))
    g.retry_after = retry_after
    return RateLimited(message(_wait_text(retry_after)), retry_after)


def _record_once(
    strategy: RateLimiter, item: RateLimitItem, detail: str, subscriber_id: int | None
) -> None:
    """An audit row for this limit and key, unless one was written within its window."""
    once = RateLimitItemPerSecond(1, item.get_expiry())
    if strategy.hit(once, KEY_PREFIX, "audited", detail):
        audit.record_now(
            services().sessions,
            f"visitor {client_ip()}",
            "rate_limited",
            detail,
            subscriber_id=subscriber_id,
        )


def _take(checks: Sequence[_Check], subscriber_id: int | None = None) -> None:
    """Count one for every check, or for none and refuse (RateLimited) when any is full."""
    limits = _limits()
    try:
        _take_from(limits.limiter.limiter, checks, subscriber_id)
    except StorageError as exc:
        log.warning("rate-limit store unreachable, counting in this process: %s", exc)
        _take_from(limits.fallback, checks, subscriber_id)


def _take_from(strategy: RateLimiter, checks: Sequence[_Check], subscriber_id: int | None) -> None:
    full = [check for check in checks if not strategy.test(check.item, KEY_PREFIX, *check.keys)]
    if not full:
        taken = [check for check in checks if strategy.hit(check.item, KEY_PREFIX, *check.keys)]
        # Another process took the last place meanwhile.
        full = [check for check in checks if check not in taken]
    if not full:
        return
    resets = {
        check: strategy.get_window_stats(check.item, KEY_PREFIX, *check.keys).reset_time
        for check in full
    }
    latest = max(full, key=lambda check: resets[check])
    for check in full:
        _record_once(strategy, check.item, check.detail, subscriber_id)
    raise _refuse(latest.message, resets[latest])


def _public_limit_reached(limit: RequestLimit) -> None:
    """flask-limiter found the public limit reached: say so as every other limit does (the
    answer is made by the handler of its RateLimitExceeded, as this may not raise)."""
    ip = client_ip()
    _record_once(
        limit.limiter,
        limit.limit,
        f"public pages and calls from {ip}: over {limit.limit}",
        None,
    )
    g.rate_limited = _refuse(
        lambda wait: _(
            "There were too many requests from your connection. Please try again %(wait)s.",
            wait=wait,
        ),
        limit.window.reset_time,
    )


def _public_limit_answer(_exc: RateLimitExceeded) -> ResponseReturnValue:
    refusal: RateLimited | None = g.get("rate_limited")
    if refusal is None:
        refusal = _refuse(lambda wait: _("Please try again %(wait)s.", wait=wait), time.time())
    return current_app.handle_user_exception(refusal)


def check_submitter() -> None:
    """Count a submission (form or API) against its client address; RateLimited when over."""
    ip = client_ip()
    _take(
        [
            _Check(
                item,
                ("submissions", ip),
                lambda wait: _(
                    "You have sent several requests in a short time. Please try again %(wait)s.",
                    wait=wait,
                ),
                f"submissions from {ip}: over {item}",
            )
            for item in _limits().per_ip
        ]
    )


def admit(subscriber: Subscriber, phone: str) -> None:
    """Count a request about to be stored for ``phone`` (E.164, valid); RateLimited when the
    number, the subscriber or the client address has had enough for now."""
    limits = _limits()
    ip = client_ip()
    checks = [
        _Check(
            item,
            ("number", phone),
            lambda wait: _(
                "We have had several requests to call this number already. Please try again "
                "%(wait)s.",
                wait=wait,
            ),
            f"requests to call {phone}: over {item}",
        )
        for item in limits.per_number
    ]
    checks += [
        _Check(
            item,
            ("subscriber", subscriber.slug),
            lambda wait: _(
                "%(name)s is receiving very many requests just now. Please try again %(wait)s.",
                name=subscriber.display_name,
                wait=wait,
            ),
            f"requests for {subscriber.slug}: over {item}",
        )
        for item in limits.per_subscriber
    ]
    # A number seen from this address within the longest window is not a new one.
    seen = (
        RateLimitItemPerSecond(1, max(item.get_expiry() for item in limits.numbers_per_ip))
        if limits.numbers_per_ip
        else None
    )
    if seen is not None and _is_new(seen, ip, phone):
        checks += [
            _Check(
                item,
                ("numbers", ip),
                lambda wait: _(
                    "Requests for several different numbers came from your connection. Please "
                    "try again %(wait)s.",
                    wait=wait,
                ),
                f"different numbers from {ip}: over {item}",
            )
            for item in limits.numbers_per_ip
        ]
    _take(checks, subscriber.id)
    if seen is not None:
        _hit(seen, "seen", ip, phone)


def _is_new(seen: RateLimitItem, ip: str, phone: str) -> bool:
    limits = _limits()
    try:
        return limits.limiter.limiter.test(seen, KEY_PREFIX, "seen", ip, phone)
    except StorageError:
        return limits.fallback.test(seen, KEY_PREFIX, "seen", ip, phone)


def _hit(item: RateLimitItem, *keys: str) -> None:
    limits = _limits()
    try:
        limits.limiter.limiter.hit(item, KEY_PREFIX, *keys)
    except StorageError:
        limits.fallback.hit(item, KEY_PREFIX, *keys)
