"""Errors the services raise; the API maps each kind to one HTTP status, so services never import HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a service reports to its caller; ``str(err)`` is the user-facing detail."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(ServiceError):
    """The named site, classifier, job, model, image or object does not exist."""

    status_code = 404


class ConflictError(ServiceError):
    """The request clashes with the current state (a job already queued, a lease lost, a name taken)."""

    status_code = 409


class InvalidError(ServiceError):
    """The request is well-formed but its content cannot be used (a bad bundle, too few images)."""

    status_code = 422


class TooLargeError(ServiceError):
    """The upload is larger than a configured limit."""

    status_code = 413


class UnavailableError(ServiceError):
    """The hub cannot answer yet (no model exists at all)."""

    status_code = 503


class UnauthenticatedError(ServiceError):
    """No valid session cookie or bearer token came with the request (or the login failed)."""

    status_code = 401


class ForbiddenError(ServiceError):
    """The caller is known but its role in that site does not allow the action."""

    status_code = 403


class RateLimitedError(ServiceError):
    """Too many attempts (logins) in a short time; try again later."""

    status_code = 429
