import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions

# --- domain errors --------------------------------------------------------------------------------------------
# What services, selectors and admin actions raise when the business refuses something. They know nothing of
# HTTP: `exception_handler` below is the one place that maps them to a status (and Retry-After), and an admin
# page shows `str(error)`. Django's ValidationError (field errors, 400) and PermissionDenied (403) are domain
# errors too, already framework-neutral, and are mapped by the same handler.


class ApplicationError(Exception):
    """A refusal a client can act on; its message is shown to the client as `detail` (400 unless a subclass
    below says otherwise)."""

    default_message = "The request cannot be carried out."
    code = "invalid"

    def __init__(self, message: str | None = None):
        self.message = message or self.default_message
        super().__init__(self.message)


class NotFound(ApplicationError):
    """Nothing has this identifier (404)."""

    default_message = "Not found."
    code = "not_found"


class Conflict(ApplicationError):
    """The request conflicts with the current state (409): already resolved, a duplicate, the last admin..."""

    default_message = "The request conflicts with the current state."
    code = "conflict"


class RetryLater(Conflict):
    """A conflict that ends by itself shortly (another request is still being handled, a row not yet
    persisted): 409 with Retry-After `seconds`, so that the client's repeat finds it settled."""

    def __init__(self, message: str | None = None, *, seconds: int):
        super().__init__(message)
        self.seconds = seconds


class SignInThrottled(ApplicationError):
    """Too many sign-in attempts for this email, or from this address, in the current window (429 with
    Retry-After `seconds`). Raised before the password is checked."""

    code = "sign_in_throttled"

    def __init__(self, *, seconds: int):
        seconds = max(1, math.ceil(seconds))
        super().__init__(f"Too many sign-in attempts. Try again in {seconds} second{'' if seconds == 1 else 's'}.")
        self.seconds = seconds


# Most specific first: the first class an error is an instance of gives its status.
_STATUS_BY_ERROR: tuple[tuple[type[ApplicationError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (SignInThrottled, 429),
    (ApplicationError, 400),
)


def application_error_status(error: ApplicationError) -> int:
    return next(status for error_class, status in _STATUS_BY_ERROR if isinstance(error, error_class))


def _as_api_exception(error: ApplicationError) -> exceptions.APIException:
    api_error = exceptions.APIException(detail=error.message, code=error.code)
    api_error.status_code = application_error_status(error)
    seconds = getattr(error, "seconds", None)
    if seconds:
        api_error.wait = seconds  # DRF's handler answers it as Retry-After
    return api_error


# --- HTTP-only errors ---------------------------------------------------------------------------------------
# Raised by the API layer itself (parsers, views), never by a service.



class RequestBodyTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."
    default_code = "body_too_large"


class SignInRefused(exceptions.APIException):
    status_code = 400
    default_detail = "Unable to sign in with the provided email and password."
    default_code = "sign_in_refused"


def exception_handler(exc, context):
    """DRF's handler, plus the domain errors (`ApplicationError` subclasses, at their status), Django's
    ValidationError from services answered as a 400 with field errors, and an oversized body (Django's
    RequestDataTooBig, raised when DRF reads request.body) as a 413."""
    if isinstance(exc, ApplicationError):
        exc = _as_api_exception(exc)
    elif isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)  # the access check says who may
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestBodyTooLarge()
    # Imported here: rest_framework.views loads the parser classes, and core.parsers imports this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    from core.middleware import tenant_gone_response

    response = drf_exception_handler(exc, context)
    if response is not None and 400 <= response.status_code < 500 and context.get("request") is not None:
        # A tenant being deleted under this request: its token or its rows were not found because its schema
        # is going or gone. The host is unknown now, as for the next request.
        response = tenant_gone_response(context["request"]) or response
    return response
