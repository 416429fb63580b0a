"""Exceptions raised by the ARI client."""

from __future__ import annotations

import json

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
    try:
        method, path = response.request.method, response.request.url.path
    except RuntimeError:  # a Response built by hand has no request attached
        method = path = ""
    return error_from_status(
        response.status_code, response.reason_phrase, response.text, method=method, path=path
    )


def error_from_status(
    status: int, reason: str, body: str, *, method: str = "", path: str = ""
) -> AriError:
    """The exception for a non-2xx answer, over HTTP or over the event WebSocket alike."""
    message = reason or "error"
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    # Asterisk says {"message": ...} for most errors but {"error": ...} for some 5xx.
    if isinstance(data, dict) and isinstance(data.get("message") or data.get("error"), str):
        message = data.get("message") or data["error"]
    elif body.strip():
        message = body.strip()[:200]
    cls = AriServerError if status >= 500 else _BY_STATUS.get(status, AriError)
    return cls(message, status=status, method=method, path=path)
