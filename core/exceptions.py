from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions


class ConflictError(exceptions.APIException):
    status_code = 409
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class RequestBodyTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."
    default_code = "body_too_large"


class SignInRefused(exceptions.APIException):
    status_code = 400
    default_detail = "Unable to sign in with the provided email and password."
    default_code = "sign_in_refused"


class SignInThrottled(exceptions.Throttled):
    """Too many sign-in attempts for this email, or from this address, in the current window (429 with
    Retry-After). Raised before the password is checked."""

    default_detail = "Too many sign-in attempts."
    extra_detail_singular = "Try again in {wait} second."
    extra_detail_plural = "Try again in {wait} seconds."
    default_code = "sign_in_throttled"


def exception_handler(exc, context):
    """DRF's handler, plus Django's ValidationError from services answered as a 400 with field errors,
    and an oversized body (Django's RequestDataTooBig, raised when DRF reads request.body) as a 413."""
    if isinstance(exc, DjangoValidationError):
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
