"""The one error envelope — {"error", "detail", "fields"?} — and every way an error reaches a client."""

import json
import logging
import math

from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions as drf
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class JSONRenderer(DRFJSONRenderer):
    """DRF's renderer with the charset every body of this API declares."""

    charset = "utf-8"


class ApiError(Exception):
    """A declarative error: subclasses set status, code and a default detail for a person to read."""

    status = 500
    code = "internal_error"
    detail = "The server failed to handle the request. This is a bug; it has been logged."
    retry_after_s: int | None = None

    def __init__(self, detail: str | None = None, *, fields: dict | None = None, retry_after_s: int | None = None):
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail
        self.fields = fields
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class InvalidInput(ApiError):
    status, code, detail = 400, "invalid", "The request has invalid fields."


class MalformedJson(ApiError):
    status, code, detail = 400, "malformed_json", "The request body is not valid JSON."


class InvalidParameter(ApiError):
    status, code, detail = 400, "invalid_parameter", "A query parameter is invalid."


class BadRequest(ApiError):
    status, code, detail = 400, "bad_request", "The request could not be understood."


class NotFound(ApiError):
    status, code, detail = 404, "not_found", "Not found."


class MethodNotAllowed(ApiError):
    status, code, detail = 405, "method_not_allowed", "This method is not allowed on this resource."


class NotAcceptable(ApiError):
    status, code, detail = 406, "not_acceptable", "This resource only produces application/json."


class PayloadTooLarge(ApiError):
    status, code, detail = 413, "payload_too_large", "The request body exceeds 16 KiB."


class HeadersTooLarge(ApiError):
    status, code, detail = 431, "request_header_too_large", "The request's headers are too many or too large."


class UnsupportedMediaType(ApiError):
    status, code, detail = 415, "unsupported_media_type", "Send the body as Content-Type: application/json."


class RateLimited(ApiError):
    status, code, detail, retry_after_s = 429, "rate_limited", "Too many requests; slow down.", 60


class Overloaded(ApiError):
    status, code, detail, retry_after_s = 503, "overloaded", "The server is overloaded; retry shortly.", 1


class DatabaseUnavailable(ApiError):
    status, code, detail, retry_after_s = 503, "database_unavailable", "The database is unreachable.", 5


class InternalError(ApiError):
    pass


class Forbidden(ApiError):
    status, code, detail = 403, "forbidden", "This request is not allowed."


class Unavailable(ApiError):
    status, code, detail, retry_after_s = 503, "unavailable", "The service is unavailable; retry shortly.", 5


# For error responses produced by something that is not ours (Django itself, a library).
_ERROR_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
    503: Unavailable,
}


def error_for_status(status: int) -> ApiError:
    error = _ERROR_BY_STATUS.get(status, InternalError if status >= 500 else BadRequest)()
    error.status = status  # keep the status its producer chose
    return error


def envelope_response(error: ApiError) -> HttpResponse:
    body: dict = {"error": error.code, "detail": error.detail}
    if error.fields:
        body["fields"] = error.fields
    response = HttpResponse(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        status=error.status,
        content_type=JSON_CONTENT_TYPE,
    )
    if error.retry_after_s is not None:
        response["Retry-After"] = str(error.retry_after_s)
    return response


def _fields_from(detail) -> dict:
    """DRF's nested ErrorDetail structure as plain strings."""
    if isinstance(detail, dict):
        return {key: _fields_from(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [str(item) for item in detail]  # type: ignore[return-value]
    return [str(detail)]  # type: ignore[return-value]


def _translate(exc: Exception) -> ApiError | None:
    match exc:
        case ApiError():
            return exc
        case drf.ValidationError():
            fields = _fields_from(exc.detail)
            if not isinstance(fields, dict):
                return InvalidInput(" ".join(fields))
            return InvalidInput(fields=fields)
        case RecursionError():
            return MalformedJson("The request body nests too deeply to parse.")
        case drf.ParseError():
            return MalformedJson(f"The request body is not valid JSON: {_plain_parse_error(exc)}")
        case drf.UnsupportedMediaType():
            return UnsupportedMediaType()
        case drf.MethodNotAllowed():
            return MethodNotAllowed(f"Method {exc.args[0] if exc.args else ''} is not allowed here.".strip())
        case drf.NotAcceptable():
            return NotAcceptable()
        case drf.NotFound() | Http404():
            return NotFound()
        case Ratelimited():
            return RateLimited()
        case drf.Throttled():
            # Rounded up, as DRF's own Retry-After is: 0.5 s must not read as "now".
            wait_s = getattr(exc, "wait", None) or 1
            return RateLimited(retry_after_s=max(1, math.ceil(wait_s)))
        case OperationalError() | InterfaceError():
            logger.warning("database error answered with 503: %s", exc)
            return DatabaseUnavailable()
    return None


def _plain_parse_error(exc: drf.ParseError) -> str:
    # DRF prefixes the json module's message with "JSON parse error - ".
    return str(exc.detail).removeprefix("JSON parse error - ")


def drf_exception_handler(exc: Exception, context: dict) -> HttpResponse | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: anything we cannot name falls through to handler500."""
    error = _translate(exc)
    return envelope_response(error) if error else None


def ratelimited_view(request: HttpRequest, exception: Exception) -> HttpResponse:
    """RATELIMIT_VIEW: django-ratelimit's block outside DRF."""
    return envelope_response(RateLimited())


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return envelope_response(BadRequest())


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return envelope_response(RateLimited() if isinstance(exception, Ratelimited) else Forbidden())


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return envelope_response(NotFound(f"Nothing at {request.path}."))


def handler500(request: HttpRequest) -> HttpResponse:
    return envelope_response(InternalError())
