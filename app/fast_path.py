"""ASGI fast path: GET /items and GET /items/{id} answered straight from the app cache, before Django.

Even an async Django view costs a full request cycle — request signals and response close run through
sync_to_async (thread hops), then URL resolution and the middleware chain — which is most of the time of a
cache hit. This wrapper answers a fresh cache entry with the same bytes, status and headers Django would send,
and hands everything else to Django unchanged: misses and stale entries (Django rebuilds them, with the
stampede control of app.cache), bad parameters (Django answers the 400), other methods and paths.
Load shedding does not see hits: they are the cheapest answer there is.
"""

import re

from django.conf import settings

from app import cache
from app.asgi_answers import header, host_allowed, scheme_allowed, security_headers
from app.http import accepts_json, etag_matches, microcache_expires
from app.params import parse_limit

_LIST = re.compile(r"^/items/?$")
_ITEM = re.compile(r"^/items/([0-9a-fA-F-]{32,36})/?$")
_UUID_HEX_LENGTH = 32


# A query string made only of these bytes reads the same to every parser: no percent-escape, no "+" (a space to
# Django), no ";", nothing outside ASCII. The `next` links this API writes are of this form (cursors are signed
# hex and base64url joined by ":"). Anything else goes to Django, so that `?lim%69t=50` or `?limit=%35` means
# exactly what request.GET makes of it; those are rare, and Django still answers them from the app cache.
_CANONICAL_QUERY = re.compile(rb"[A-Za-z0-9._~:=&-]*")


def _query(scope) -> dict[str, str] | None:
    """The query parameters as Django's request.GET has them (a repeated name: the last value, as QueryDict.get
    returns); None when the query is not in canonical form or Django would refuse it, for Django to answer."""
    raw = scope["query_string"]
    if not _CANONICAL_QUERY.fullmatch(raw):
        return None
    max_fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    if max_fields is not None and raw.count(b"&") >= max_fields:
        return None  # Django's 400 (TooManyFieldsSent): parse_qsl counts every "&", empty fields included
    pairs = {}
    for part in raw.decode("ascii").split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs[name] = value
    return pairs


class FastPath:
    def __init__(self, app) -> None:
        self.app = app
        self.lookup: cache.AsyncLookup | None = None  # created on the worker's event loop
        self.headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"cache-control", b"public, max-age=%d" % settings.CACHE_MAX_AGE_S),
            (b"vary", b"Accept"),
            *security_headers(),
        ]

    def _key(self, scope) -> tuple[str, bool] | None:
        """(cache key, versioned) for a request the cache may answer; None for Django."""
        path = scope["path"]
        if _LIST.match(path):
            query = _query(scope)
            if query is None:
                return None
            limit = parse_limit(query.get("limit"))
            if limit is None:
                return None  # invalid: Django answers the 400
            return cache.page_key(limit, query.get("cursor")), True
        match = _ITEM.match(path)
        if match and len(match[1].replace("-", "")) == _UUID_HEX_LENGTH:
            return cache.item_key(match[1].lower()), False
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        key = self._key(scope)
        if (
            key is None
            or not host_allowed(scope)
            or not scheme_allowed(scope)
            or not accepts_json(header(scope, b"accept"))
        ):
            return await self.app(scope, receive, send)
        if self.lookup is None:
            self.lookup = cache.AsyncLookup()
        hit = await self.lookup.fresh(key[0], versioned=key[1])
        if hit is None:
            return await self.app(scope, receive, send)
        etag, body = hit
        await self._send(scope, send, etag, body)

    async def _send(self, scope, send, etag: str, body: bytes) -> None:
        headers = [*self.headers, (b"etag", etag.encode())]
        if_none_match = header(scope, b"if-none-match")
        if if_none_match is not None and etag_matches(if_none_match.decode("latin-1"), etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers[1:]})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-length", str(len(body)).encode()))
        if (expires := microcache_expires()) is not None:
            headers.append((b"x-accel-expires", expires))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
