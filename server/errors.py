"""Domain errors of the collector; the HTTP layer maps each to one status code."""

from __future__ import annotations


class CollectorError(Exception):
    """Base class; the message is safe to show to the caller."""

    status_code = 400


class InvalidInput(CollectorError):
    status_code = 422


class NotFound(CollectorError):
    status_code = 404


class Conflict(CollectorError):
    status_code = 409


class Unauthorized(CollectorError):
    status_code = 401


class Forbidden(CollectorError):
    status_code = 403


class TooLarge(CollectorError):
    status_code = 413


class RateLimited(CollectorError):
    status_code = 429
