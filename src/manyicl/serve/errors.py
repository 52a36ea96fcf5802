"""Errors of the server: each names what is wrong and the fix, and carries its HTTP status.

They are :class:`~manyicl.errors.ManyICLError` subclasses, so library code and the CLI treat them like
every other user-input error; the app turns them into ``{"error": {"code", "message", "field"}}`` JSON
with the status below and never sends a traceback.
"""

from __future__ import annotations

from ..errors import ManyICLError


class ServeError(ManyICLError):
    """A request the server cannot answer as asked."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None):
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)

    def payload(self) -> dict:
        out: dict = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


class Unauthorized(ServeError):
    status, code = 401, "unauthorized"


class Forbidden(ServeError):
    status, code = 403, "forbidden"


class NotFound(ServeError):
    status, code = 404, "not_found"


class Conflict(ServeError):
    status, code = 409, "conflict"


class TooLarge(ServeError):
    status, code = 413, "too_large"


class Invalid(ServeError):
    status, code = 422, "invalid"


class QueueFull(ServeError):
    status, code = 429, "queue_full"


class Unavailable(ServeError):
    status, code = 503, "unavailable"


class Timeout(ServeError):
    status, code = 504, "timeout"
