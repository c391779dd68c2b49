"""Application errors raised by handlers, in the platform's terms; the HTTP layer maps each to
a problem+json status."""

from __future__ import annotations


class NotFound(LookupError):
    """No such object, or not one the caller may see (object-level access control answers
    'not found' rather than confirming that the id exists)."""


class Forbidden(PermissionError):
    pass


class Invalid(ValueError):
    """The request breaks a rule of the input (a change that ends before it starts, a missing
    plan, an unknown item): answered 422 with this message."""


class Conflict(Exception):
    """The request conflicts with the object's current state (a forbidden transition, a rule of
    the business); `details` are added to the problem document."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details


class PreconditionFailed(Exception):
    """The caller's If-Match version is stale."""

    def __init__(self, current_version: int) -> None:
        super().__init__(f"the object is at version {current_version}")
        self.current_version = current_version


class PreconditionRequired(Exception):
    pass
