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

A client address is counted as itself for IPv4 and by its /64 for IPv6 (``client_key``): one
host of a network is given a whole /64 and may pick any address of it. The address is believed
from ``X-Forwarded-For`` only when the connection comes from a trusted proxy.

A limit reached is a 429 with ``Retry-After`` and a plain message in the visitor's language,
and one row in the audit log per limit and key per window, so a flood does not flood the log.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue, RouteCallable
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, RateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix

from cbserver import audit, number_policy
from cbserver.config import Settings, rate_limits
from cbserver.errors import CbError
from cbserver.i18n import _
from cbserver.models import Subscriber
from cbserver.web import services

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("cbserver.ratelimits")
_T = TypeVar("_T")

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
    # Guessing agents' console passwords.
    "console.login": None,
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
    # The detail for log lines, when it holds what logs should not (a whole phone number).
    log_detail: str | None = None


def client_ip() -> str:
    """The visitor's address: the connection's, or what trusted proxies say (TRUSTED_PROXIES)."""
    return request.remote_addr or "unknown"


def address_key(address: str) -> str:
    """What limits count ``address`` as: an IPv4 address itself, an IPv6 address its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_key() -> str:
    """The visitor's address as every per-address limit counts it (see ``address_key``)."""
    return address_key(client_ip())


class TrustedProxyFix:
    """``ProxyFix`` for the requests whose connection comes from one of ``networks``; anyone
    else's ``X-Forwarded-For`` is the client's own writing, and not believed."""

    def __init__(self, app: WSGIApplication, proxies: int, networks: Iterable[str]) -> None:
        self.direct = app
        self.fixed = ProxyFix(app, x_for=proxies, x_proto=proxies)
        self.networks = [ipaddress.ip_network(network) for network in networks]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.direct(environ, start_response)

    def _trusted(self, peer: object) -> bool:
        try:
            address = ipaddress.ip_address(str(peer))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def init_app(app: Flask, settings: Settings) -> None:
    """Count requests for ``app`` as ``settings`` say; call after the blueprints are registered."""
    if settings.trusted_proxies:
        app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, settings.trusted_proxies, settings.trusted_proxy_network_list
        )
    limiter = Limiter(
        client_key,
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
    strategy: RateLimiter,
    item: RateLimitItem,
    detail: str,
    subscriber_id: int | None,
    log_detail: str | None = None,
) -> None:
    """An audit row for this limit and key, unless one was written within its window."""
    once = RateLimitItemPerSecond(1, item.get_expiry())
    if strategy.hit(once, KEY_PREFIX, "audited", detail):
        audit.record_now(
            services().sessions,
            audit.visitor(client_ip()),
            "rate_limited",
            detail,
            subscriber_id=subscriber_id,
            log_detail=log_detail,
        )


def _take(checks: Sequence[_Check], subscriber_id: int | None = None) -> None:
    """Count one for every check, or refuse (RateLimited) when any is full; see ``_take_from``
    for what a refusal leaves counted."""
    limits = _limits()
    try:
        _take_from(limits.limiter.limiter, checks, subscriber_id)
    except StorageError as exc:
        log.warning("rate-limit store unreachable, counting in this process: %s", exc)
        _take_from(limits.fallback, checks, subscriber_id)


def _take_from(strategy: RateLimiter, checks: Sequence[_Check], subscriber_id: int | None) -> None:
    """Test every check first and count one for each only when all have room: a request one
    limit refuses uses up none of the others. A place can only be taken, never given back, so
    when another process takes the last place of one check between the test and the count,
    the checks counted already stay counted and this request is refused."""
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
        _record_once(strategy, check.item, check.detail, subscriber_id, check.log_detail)
    raise _refuse(latest.message, resets[latest])


def _public_limit_reached(limit: RequestLimit) -> None:
    """flask-limiter found the public limit reached: say so as every other limit does (the
    answer is made by the handler of its RateLimitExceeded, as this may not raise)."""
    _record_once(
        limit.limiter,
        limit.limit,
        f"public pages and calls from {client_key()}: over {limit.limit}",
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
    ip = client_key()
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
    ip = client_key()
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
            f"requests to call {number_policy.masked(phone)}: over {item}",
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
    return _counted(lambda strategy: strategy.test(seen, KEY_PREFIX, "seen", ip, phone))


def _hit(item: RateLimitItem, *keys: str) -> None:
    _counted(lambda strategy: strategy.hit(item, KEY_PREFIX, *keys))


def use_once(seconds: int, *keys: str) -> bool:
    """Whether this is the first use of ``keys`` in ``seconds``; counted as used from now."""
    once = RateLimitItemPerSecond(1, seconds)
    return _counted(lambda strategy: strategy.hit(once, KEY_PREFIX, "once", *keys))


def used(seconds: int, *keys: str) -> bool:
    """Whether ``keys`` were used (``use_once``) in the last ``seconds``."""
    once = RateLimitItemPerSecond(1, seconds)
    return not _counted(lambda strategy: strategy.test(once, KEY_PREFIX, "once", *keys))


def forget(seconds: int, *keys: str) -> None:
    """Forget a use of ``keys`` (``use_once`` with the same ``seconds``)."""
    once = RateLimitItemPerSecond(1, seconds)
    _counted(lambda strategy: strategy.clear(once, KEY_PREFIX, "once", *keys))


def _counted(action: Callable[[RateLimiter], _T]) -> _T:
    """``action`` on the counter store, or on this process's own when the store is away."""
    limits = _limits()
    try:
        return action(limits.limiter.limiter)
    except StorageError as exc:
        log.warning("rate-limit store unreachable, counting in this process: %s", exc)
        return action(limits.fallback)
