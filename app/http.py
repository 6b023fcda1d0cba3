"""JSON responses with HTTP caching (strong ETag, Cache-Control, 304 on If-None-Match), and RFC 3339 times."""

import datetime as dt
import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.http import parse_etags

from project.errors import JSON_CONTENT_TYPE


def json_bytes(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def rfc3339(moment: dt.datetime) -> str:
    """UTC with milliseconds and a Z, as every `created_at` of this API is written."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag`. It compares weakly (RFC 9110 §13.1.2): a W/ tag of the same
    bytes matches too, and so does "*"."""
    if not if_none_match:
        return False
    return if_none_match.strip() == "*" or etag in parse_etags(if_none_match.replace("W/", ""))


def accepts_json(accept: bytes | None) -> bool:
    """Whether an Accept header admits application/json (absent: yes). Anything this cannot vouch for is for
    Django's content negotiation to answer (a 406)."""
    if accept is None:
        return True
    for media_range in accept.decode("latin-1").lower().split(","):
        media, *params = (part.strip() for part in media_range.split(";"))
        if media not in ("*/*", "application/*", "application/json"):
            continue
        q = next((p.partition("=")[2].strip() for p in params if p.startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            continue
    return False


def conditional_json(request: HttpRequest, body: bytes, etag: str) -> HttpResponse:
    """200 with the body, or 304 with none when the client already holds these exact bytes (`etag`)."""
    if etag_matches(request.META.get("HTTP_IF_NONE_MATCH"), etag):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(body, content_type=JSON_CONTENT_TYPE)
    response["ETag"] = etag
    response["Cache-Control"] = f"public, max-age={settings.CACHE_MAX_AGE_S}"
    response["Vary"] = "Accept"  # a 406 answers the same URL for another Accept
    return response


def accepted_json(body: dict, *, location: str) -> HttpResponse:
    response = HttpResponse(json_bytes(body), status=202, content_type=JSON_CONTENT_TYPE)
    response["Location"] = location
    response["Cache-Control"] = "no-store"
    return response
