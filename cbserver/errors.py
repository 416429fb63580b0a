"""Typed errors that carry their HTTP status and a stable code; the web turns them into answers."""

from __future__ import annotations


class CbError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        # What the caller can act on, e.g. the next free slots beside "this slot is full".
        self.details = details or {}
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.details)
        return {"error": error}


class BadRequest(CbError):
    status = 400
    code = "bad_request"


class NotFound(CbError):
    status = 404
    code = "not_found"


class Conflict(CbError):
    status = 409
    code = "conflict"


class Invalid(CbError):
    """The input is well-formed but cannot be accepted; the message tells the visitor why."""

    status = 422
    code = "invalid"


class Unavailable(CbError):
    """The database cannot be reached: nothing was stored, and the caller may try again after
    ``retry_after`` seconds (the Retry-After header)."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FieldError(ValueError):
    """A service refused a value (a setting, a name, a deny-list entry): ``field`` names it.

    Not an answer yet: the admin API turns it into a 422, the command line into an error line.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
