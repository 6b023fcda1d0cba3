"""JSON responses with HTTP caching: strong ETag, Cache-Control and 304 on If-None-Match."""

import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.http import parse_etags

from project.errors import JSON_CONTENT_TYPE


def json_bytes(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def conditional_json(request: HttpRequest, body: bytes, etag: str) -> HttpResponse:
    """200 with the body, or 304 with none when the client already holds these exact bytes (`etag`)."""
    if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
    # If-None-Match compares weakly (RFC 9110 §13.1.2): a W/ tag of the same bytes matches too.
    if if_none_match and (etag in parse_etags(if_none_match.replace("W/", "")) or if_none_match.strip() == "*"):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(body, content_type=JSON_CONTENT_TYPE)
    response["ETag"] = etag
    response["Cache-Control"] = f"public, max-age={settings.CACHE_MAX_AGE_S}"
    return response


def accepted_json(body: dict, *, location: str) -> HttpResponse:
    response = HttpResponse(json_bytes(body), status=202, content_type=JSON_CONTENT_TYPE)
    response["Location"] = location
    response["Cache-Control"] = "no-store"
    return response
