"""The security headers every answer carries: CSP, framing, referrer, caching, sniffing.

Pages get a Content-Security-Policy with ``default-src 'none'`` and only the sources each page
needs (``PAGE_SOURCES``); no page has inline script or style, so none needs ``'unsafe-inline'``.
A view widens the policy for its own answer only, through ``allow_sources`` (e.g. a CAPTCHA's
script and frame origins) and ``allow_framing`` (a subscriber's own web sites may frame its
hosted form and the status page it leads to). Everything else may be framed by no one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from flask import Flask, Response, g, request

from cbserver.views.widget import origin_key

SELF = "'self'"
NONE = "'none'"
# What each blueprint's pages load; every page has cbserver.css.
PAGE_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "form": {"form-action": (SELF,)},
    # status.js polls the JSON API; the page posts its cancel and move forms.
    "status": {"script-src": (SELF,), "connect-src": (SELF,), "form-action": (SELF,)},
    # console.js polls state.json; the page posts the agent's state, note and logout.
    "console": {"script-src": (SELF,), "connect-src": (SELF,), "form-action": (SELF,)},
}
# The status page's address carries the visitor's token: no Referer may take it anywhere,
# not even to our own access log with the page's stylesheet and script.
NO_REFERRER_BLUEPRINTS = frozenset({"status"})
REFERRER_POLICY = "strict-origin-when-cross-origin"
HSTS = "max-age=31536000"
# Directives a view may widen, with hosts or 'self' only: no 'unsafe-inline', no 'unsafe-eval'.
EXTENSIBLE = frozenset(
    {"script-src", "style-src", "img-src", "connect-src", "frame-src", "form-action"}
)
_NOT_A_HOST_SOURCE = re.compile(r"[\s;,'\"]")


def allow_sources(directive: str, *sources: str) -> None:
    """Let this answer's page also load ``sources`` for ``directive``, e.g.
    ``allow_sources("frame-src", "https://challenges.cloudflare.com")`` for a CAPTCHA."""
    if directive not in EXTENSIBLE:
        raise ValueError(f"{directive} cannot be widened per page")
    for source in sources:
        if source != SELF and (not source or _NOT_A_HOST_SOURCE.search(source)):
            raise ValueError(f"not a CSP host source: {source!r}")
    extra: dict[str, list[str]] = g.setdefault("csp_extra_sources", {})
    extra.setdefault(directive, []).extend(sources)


def allow_framing(origins: Iterable[str]) -> None:
    """Let pages of these web origins frame this answer (the subscriber's allowed origins);
    anything that is not an http(s) origin is ignored."""
    keys = {origin_key(origin) for origin in origins}
    g.frame_ancestors = sorted(key for key in keys if key)


def content_security_policy(blueprint: str | None) -> str:
    directives: dict[str, list[str]] = {
        "default-src": [NONE],
        "style-src": [SELF],
        "base-uri": [NONE],
        "form-action": [NONE],
    }
    for directive, needed in PAGE_SOURCES.get(blueprint or "", {}).items():
        directives[directive] = list(needed)
    extra: dict[str, list[str]] = g.get("csp_extra_sources", {})
    for directive, sources in extra.items():
        directives[directive] = [s for s in directives.get(directive, []) if s != NONE] + sources
    directives["frame-ancestors"] = g.get("frame_ancestors") or [NONE]
    return "; ".join(
        f"{name} {' '.join(dict.fromkeys(values))}" for name, values in directives.items()
    )


def security_headers(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(request.blueprint)
    headers["X-Content-Type-Options"] = "nosniff"
    if not g.get("frame_ancestors"):
        headers["X-Frame-Options"] = "DENY"
    if request.blueprint in NO_REFERRER_BLUEPRINTS:
        headers["Referrer-Policy"] = "no-referrer"
    else:
        headers.setdefault("Referrer-Policy", REFERRER_POLICY)
    # Answers name visitors, carry their tokens or a form's CSRF token: no copies anywhere,
    # unless the answer is public (static files; widget.js and its texts say so themselves).
    if request.endpoint != "static":
        headers.setdefault("Cache-Control", "no-store")
    if response.mimetype == "text/html":
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def init_app(app: Flask) -> None:
    app.after_request(security_headers)
