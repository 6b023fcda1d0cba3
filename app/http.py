"""JSON responses with HTTP caching (strong ETag, Cache-Control, 304 on If-None-Match), and RFC 3339 times."""

import datetime as dt
import json
import time

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


def microcache_expires() -> bytes | None:
    """X-Accel-Expires for a cacheable 200: Nginx's micro-cache may keep it for MICROCACHE_TTL_S (None: not at all).

    Absolute ("@" and a Unix second), not relative: Nginx stamps a relative lifetime as the current whole second
    plus n and serves the entry until that second is over, so a relative 1 s lasted 1 to 2 s and readers saw a new
    row up to 2 s late ([011](docs/decisions/011-write-path-on-the-event-loop.md)). Stamped "@<this second>", an
    entry expires when the next second begins, so no answer is older than the TTL. Nginx hides X-Accel-* from
    clients."""
    ttl = settings.MICROCACHE_TTL_S
    return b"@%d" % (int(time.time()) + ttl - 1) if ttl else None


def conditional_json(request: HttpRequest, body: bytes, etag: str) -> HttpResponse:
    """200 with the body, or 304 with none when the client already holds these exact bytes (`etag`)."""
    if etag_matches(request.META.get("HTTP_IF_NONE_MATCH"), etag):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(body, content_type=JSON_CONTENT_TYPE)
        if (expires := microcache_expires()) is not None:
            response["X-Accel-Expires"] = expires.decode()
    response["ETag"] = etag
    response["Cache-Control"] = f"public, max-age={settings.CACHE_MAX_AGE_S}"
    response["Vary"] = "Accept"  # a 406 answers the same URL for another Accept
    return response


def accepted_json(body: dict, *, location: str) -> HttpResponse:
    response = HttpResponse(json_bytes(body), status=202, content_type=JSON_CONTENT_TYPE)
    response["Location"] = location
    response["Cache-Control"] = "no-store"
    return response
