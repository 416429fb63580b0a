"""Exceptions raised by the ARI client."""

from __future__ import annotations

import httpx


class AriError(Exception):
    """An ARI request failed; ``status`` is None when no HTTP response was received."""

    def __init__(
        self, message: str, *, status: int | None = None, method: str = "", path: str = ""
    ) -> None:
        self.message = message
        self.status = status
        self.method = method
        self.path = path
        where = f"{method} {path}".strip()
        prefix = f"{where}: " if where else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{prefix}{code}{message}")


class AriBadRequest(AriError):
    """400: missing or invalid parameters."""


class AriNotFound(AriError):
    """404: the channel, bridge, playback, ... does not exist (any more)."""


class AriConflict(AriError):
    """409: the object is in the wrong state for the operation (e.g. channel not in Stasis)."""


class AriUnprocessable(AriError):
    """422: a referenced object (endpoint, bridge, ...) is invalid."""


class AriServerError(AriError):
    """5xx: Asterisk failed internally."""


class AriUnavailable(AriError):
    """Asterisk could not be reached (connection refused, timeout, broken connection)."""


_BY_STATUS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    404: AriNotFound,
    409: AriConflict,
    422: AriUnprocessable,
}


def error_from_response(response: httpx.Response) -> AriError:
    """Build the exception matching a non-2xx ARI response."""
    message = response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    # Asterisk says {"message": ...} for most errors but {"error": ...} for some 5xx.
    if isinstance(body, dict) and isinstance(body.get("message") or body.get("error"), str):
        message = body.get("message") or body["error"]
    elif response.text.strip():
        message = response.text.strip()[:200]
    status = response.status_code
    cls = AriServerError if status >= 500 else _BY_STATUS.get(status, AriError)
    try:
        method, path = response.request.method, response.request.url.path
    except RuntimeError:  # a Response built by hand has no request attached
        method = path = ""
    return cls(message, status=status, method=method, path=path)
