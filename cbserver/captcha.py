"""An optional CAPTCHA per subscriber: Cloudflare Turnstile, hCaptcha or reCAPTCHA (v2).

Off by default. When a subscriber has a provider, its hosted form and widget show the
provider's check, and every request for it (API included) must carry the answer, which is
checked with the provider (``POST secret, response, remoteip`` to its verify address) before
anything is stored. A provider that cannot be asked refuses the request (503): never a silent
accept. The secret is for this module only: never shown by the admin API, the command line or
the logs.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from cbserver.errors import CbError, FieldError, Invalid
from cbserver.i18n import _
from cbserver.models import Subscriber

log = logging.getLogger("cbserver.captcha")

VERIFY_TIMEOUT_SECONDS = 5.0
MAX_ANSWER = 4096
MAX_KEY = 200
MAX_VERIFY_URL = 300


@dataclass(frozen=True)
class Provider:
    name: str
    # The provider's browser script: it shows its check in each element of widget_class
    # (the hosted form), or where a page asks with ?render=explicit (the widget).
    script: str
    widget_class: str
    verify_url: str
    # The form field the provider's check adds to a plain HTML form.
    form_field: str
    # What the provider's script and frames need in a Content-Security-Policy.
    csp: dict[str, list[str]]


PROVIDERS = {
    provider.name: provider
    for provider in (
        Provider(
            name="turnstile",
            widget_class="cf-turnstile",
            script="https://challenges.cloudflare.com/turnstile/v0/api.js",
            verify_url="https://challenges.cloudflare.com/turnstile/v0/siteverify",
            form_field="cf-turnstile-response",
            csp={
                "script-src": ["https://challenges.cloudflare.com"],
                "frame-src": ["https://challenges.cloudflare.com"],
                "connect-src": ["https://challenges.cloudflare.com"],
            },
        ),
        Provider(
            name="hcaptcha",
            widget_class="h-captcha",
            script="https://js.hcaptcha.com/1/api.js",
            verify_url="https://api.hcaptcha.com/siteverify",
            form_field="h-captcha-response",
            csp={
                "script-src": ["https://hcaptcha.com", "https://*.hcaptcha.com"],
                "frame-src": ["https://hcaptcha.com", "https://*.hcaptcha.com"],
                "style-src": ["https://hcaptcha.com", "https://*.hcaptcha.com"],
                "connect-src": ["https://hcaptcha.com", "https://*.hcaptcha.com"],
            },
        ),
        Provider(
            name="recaptcha",
            widget_class="g-recaptcha",
            script="https://www.google.com/recaptcha/api.js",
            verify_url="https://www.google.com/recaptcha/api/siteverify",
            form_field="g-recaptcha-response",
            csp={
                "script-src": [
                    "https://www.google.com/recaptcha/",
                    "https://www.gstatic.com/recaptcha/",
                ],
                "frame-src": [
                    "https://www.google.com/recaptcha/",
                    "https://recaptcha.google.com/recaptcha/",
                ],
                "connect-src": ["https://www.google.com/recaptcha/"],
            },
        ),
    )
}


class CaptchaError(FieldError):
    """A CAPTCHA setting was refused; ``field`` names the culprit."""


class CaptchaUnavailable(CbError):
    """The provider could not be asked: the request is refused, not let through unchecked."""

    status = 503
    code = "captcha_unavailable"


def provider_of(subscriber: Subscriber) -> Provider | None:
    """The subscriber's CAPTCHA provider, or None when it has none (the default)."""
    if not subscriber.captcha_provider:
        return None
    return PROVIDERS.get(subscriber.captcha_provider)


def csp_sources(provider: str | None) -> dict[str, list[str]]:
    """The sources a page showing this provider's check must allow, by CSP directive."""
    found = PROVIDERS.get(provider or "")
    return {directive: list(sources) for directive, sources in (found.csp if found else {}).items()}


def public_settings(subscriber: Subscriber) -> dict[str, str] | None:
    """What a page needs to show the subscriber's check (never the secret); None when off."""
    provider = provider_of(subscriber)
    if provider is None or not subscriber.captcha_site_key:
        return None
    return {
        "provider": provider.name,
        "site_key": subscriber.captcha_site_key,
        "script": provider.script,
        "widget_class": provider.widget_class,
        "field": provider.form_field,
    }


def shown(subscriber: Subscriber) -> dict[str, Any]:
    """The CAPTCHA settings as the admin API and the command line show them: no secret."""
    return {
        "provider": subscriber.captcha_provider,
        "site_key": subscriber.captcha_site_key,
        "secret_set": bool(subscriber.captcha_secret),
        "verify_url": subscriber.captcha_verify_url,
    }


def describe(subscriber: Subscriber) -> str:
    """The CAPTCHA in a few words, for the audit log: never the secret."""
    if not subscriber.captcha_provider:
        return "off"
    where = f", checked at {subscriber.captcha_verify_url}" if subscriber.captcha_verify_url else ""
    return f"{subscriber.captcha_provider}, site key {subscriber.captcha_site_key}{where}"


# --- settings ------------------------------------------------------------------------------


def _key(value: str, field: str, what: str) -> str:
    text = value.strip()
    if not text or len(text) > MAX_KEY or not text.isascii() or not text.isprintable():
        raise CaptchaError(field, f"the CAPTCHA {what} must be 1 to {MAX_KEY} printable characters")
    return text


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _verify_url(value: str) -> str:
    """An https URL; or http to this machine (a local proxy, a test's fake provider): the
    server posts the secret there, and must not be steered at the network around it."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        host = None
    if (
        host is None
        or len(text) > MAX_VERIFY_URL
        or not (parts.scheme == "https" or (parts.scheme == "http" and _loopback(host)))
    ):
        raise CaptchaError(
            "captcha_verify_url",
            f"the CAPTCHA verify address must be an https URL (or http to this machine) of at "
            f"most {MAX_VERIFY_URL} characters",
        )
    return text


def configure(
    subscriber: Subscriber,
    *,
    provider: str | None,
    site_key: str | None = None,
    secret: str | None = None,
    verify_url: str | None = None,
) -> None:
    """Set (validated, all or nothing; not committed) or, with provider None, turn off the
    subscriber's CAPTCHA. A site key or secret left out keeps the one set before for the same
    provider; another provider needs both anew."""
    if provider is None:
        subscriber.captcha_provider = None
        subscriber.captcha_site_key = None
        subscriber.captcha_secret = None
        subscriber.captcha_verify_url = None
        return
    if provider not in PROVIDERS:
        raise CaptchaError(
            "captcha_provider", f"the CAPTCHA provider must be one of {', '.join(PROVIDERS)}"
        )
    if provider == subscriber.captcha_provider:
        site_key = site_key if site_key is not None else subscriber.captcha_site_key
        secret = secret if secret is not None else subscriber.captcha_secret
    if not site_key:
        raise CaptchaError("captcha_site_key", "a CAPTCHA needs the provider's site key")
    if not secret:
        raise CaptchaError("captcha_secret", "a CAPTCHA needs the provider's secret key")
    checked_site_key = _key(site_key, "captcha_site_key", "site key")
    checked_secret = _key(secret, "captcha_secret", "secret")
    checked_url = _verify_url(verify_url) if verify_url else None
    subscriber.captcha_provider = provider
    subscriber.captcha_site_key = checked_site_key
    subscriber.captcha_secret = checked_secret
    subscriber.captcha_verify_url = checked_url


# --- checking an answer --------------------------------------------------------------------


def _missing() -> Invalid:
    return Invalid(
        _("Please complete the check that you are not a robot, then send again."),
        field="captcha",
        code="captcha_missing",
    )


def verify(
    subscriber: Subscriber,
    answer: str | None,
    remote_ip: str | None,
    *,
    timeout: float = VERIFY_TIMEOUT_SECONDS,
) -> None:
    """Nothing when the subscriber has no CAPTCHA or the provider accepts ``answer``;
    Invalid (422) when it is missing or refused; CaptchaUnavailable (503) when the provider
    cannot be asked."""
    provider = provider_of(subscriber)
    if provider is None:
        return
    if not answer or len(answer) > MAX_ANSWER:
        raise _missing()
    if not _sendable(answer):
        raise _failed()
    form = {"secret": subscriber.captcha_secret or "", "response": answer}
    if remote_ip:
        form["remoteip"] = remote_ip
    url = subscriber.captcha_verify_url or provider.verify_url
    try:
        response = httpx.post(url, data=form, timeout=timeout)
        response.raise_for_status()
        outcome = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        # The exception's text may hold the URL, never the form: the secret stays out of logs.
        log.warning("CAPTCHA check for %s failed: %s", subscriber.slug, type(exc).__name__)
        raise CaptchaUnavailable(
            _(
                "We cannot check just now that you are not a robot. Please try again in a "
                "few minutes."
            ),
            field="captcha",
        ) from exc
    if not isinstance(outcome, dict) or outcome.get("success") is not True:
        codes = outcome.get("error-codes") if isinstance(outcome, dict) else None
        log.info("CAPTCHA answer refused for %s: %s", subscriber.slug, codes)
        raise _failed()


def _sendable(answer: str) -> bool:
    """Whether the answer can be sent to the provider at all (a lone surrogate cannot)."""
    try:
        answer.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _failed() -> Invalid:
    return Invalid(
        _("The check that you are not a robot did not succeed. Please try it again."),
        field="captcha",
        code="captcha_failed",
    )
