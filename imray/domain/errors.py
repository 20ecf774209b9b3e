"""Domain errors. Edges translate them: HTTP status codes at the gateway, error frames on sockets."""

from __future__ import annotations


class DomainError(Exception):
    """Base class; `code` is the socket error code, `status` the HTTP status."""

    code = "bad_request"
    status = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.code

    def __reduce__(self) -> tuple[type[DomainError], tuple[object, ...]]:  # keeps the message across Ray pickling
        return (type(self), (self.message,))


class BadRequest(DomainError):
    code, status = "bad_request", 400


class Invalid(DomainError):
    code, status = "bad_request", 422


class Unauthorized(DomainError):
    code, status = "unauthorized", 401


class Forbidden(DomainError):
    code, status = "forbidden", 403


class NotFound(DomainError):
    code, status = "not_found", 404


class Conflict(DomainError):
    code, status = "conflict", 409


class TooLarge(DomainError):
    code, status = "too_large", 413


class Unsupported(DomainError):
    code, status = "bad_request", 415


class Unavailable(DomainError):
    code, status = "unavailable", 503
