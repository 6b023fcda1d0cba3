"""HTTP API for items: parse, call one service or selector, shape the answer."""

import uuid

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from app import cache
from app.cursor import cursor_decode, cursor_encode
from app.http import accepted_json, conditional_json, json_bytes
from app.inputs import ItemInput
from app.params import DEFAULT_LIMIT, MAX_IDEMPOTENCY_KEY_CHARS, MAX_LIMIT, idempotency_key_from, limit_from
from app.post_limit import check_post_rate
from app.selectors import item_get, item_list
from app.services import item_accept
from project.errors import InvalidInput, NotFound

_ITEM_SCHEMA = inline_serializer(
    "Item",
    {
        "id": serializers.UUIDField(),
        "name": serializers.CharField(),
        "description": serializers.CharField(),
        "created_at": serializers.DateTimeField(),
    },
)


# Every error is this envelope (project/errors.py); the OpenAPI schema names each status an operation can answer.
_ERROR_SCHEMA = inline_serializer(
    "Error",
    {
        "error": serializers.CharField(help_text="a stable code: branch on it (README, Errors)"),
        "detail": serializers.CharField(help_text="for a person"),
        "fields": serializers.DictField(required=False, help_text="per field messages, on validation errors only"),
    },
)
_ERRORS_OF_EVERY_REQUEST = {
    400: _ERROR_SCHEMA,  # a bad Host, a malformed request
    406: _ERROR_SCHEMA,
    413: _ERROR_SCHEMA,
    429: _ERROR_SCHEMA,
    431: _ERROR_SCHEMA,
    503: _ERROR_SCHEMA,
}
_RETRY_AFTER = OpenApiParameter(
    "Retry-After", int, location=OpenApiParameter.HEADER, description="seconds, on 429 and 503", response=[429, 503]
)


class ItemListCreateApi(APIView):
    @extend_schema(
        operation_id="items_list",
        parameters=[
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                description=f"1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}",
            ),
            OpenApiParameter("cursor", str, description="the `next` link's cursor of the previous page"),
            _RETRY_AFTER,
        ],
        responses={
            200: inline_serializer(
                "ItemPage",
                {
                    "results": _ITEM_SCHEMA.__class__(many=True),
                    "next": serializers.CharField(allow_null=True, help_text="null on the last page"),
                },
            ),
            304: None,
            **_ERRORS_OF_EVERY_REQUEST,
        },
    )
    def get(self, request: Request) -> HttpResponse:
        limit = limit_from(request.query_params.get("limit"))
        token = request.query_params.get("cursor")
        before = cursor_decode(token) if token is not None else None

        def build(min_lsn: int | None) -> bytes:
            items, next_before = item_list(limit=limit, before=before, min_lsn=min_lsn)
            next_url = f"/items?limit={limit}&cursor={cursor_encode(next_before)}" if next_before else None
            return json_bytes({"results": items, "next": next_url})

        page = cache.get_or_build(cache.page_key(limit, token), build, versioned=True)
        assert page is not None  # a page is always built, if only an empty one
        return conditional_json(request, page[1], page[0])

    @extend_schema(
        operation_id="items_create",
        request=ItemInput,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                # Printable ASCII but the comma, and not only spaces: a header's leading and trailing spaces are
                # not part of its value (RFC 9110), so a key of spaces arrives empty.
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
                    "pattern": "^[ -+\\--~]*[!-+\\--~][ -+\\--~]*$",
                },
                location=OpenApiParameter.HEADER,
                description="the same key and body within 24 h: the same 202 and id, one item",
            ),
            OpenApiParameter("Location", str, location=OpenApiParameter.HEADER, response=[202]),
            _RETRY_AFTER,
        ],
        responses={
            202: inline_serializer("Accepted", {"id": serializers.UUIDField(), "status": serializers.CharField()}),
            409: _ERROR_SCHEMA,
            415: _ERROR_SCHEMA,
            422: _ERROR_SCHEMA,
            **_ERRORS_OF_EVERY_REQUEST,
        },
    )
    def post(self, request: Request) -> HttpResponse:
        # With a broker, most POSTs never reach this view: app/write_path.py accepts them on the event loop and
        # hands here only what it cannot vouch for (an unusual Content-Type, a body the serializer refuses, ...),
        # for the one source of every error answer.
        check_post_rate(request)
        if not isinstance(request.data, dict):
            raise InvalidInput('The body must be a JSON object such as {"name": "…", "description": "…"}.')
        serializer = ItemInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        item_id = item_accept(
            **serializer.validated_data, idempotency_key=idempotency_key_from(request.headers.get("Idempotency-Key"))
        )
        return accepted_json({"id": str(item_id), "status": "accepted"}, location=f"/items/{item_id}")


class ItemDetailApi(APIView):
    @extend_schema(
        operation_id="items_retrieve",
        parameters=[_RETRY_AFTER],
        responses={200: _ITEM_SCHEMA, 304: None, 404: _ERROR_SCHEMA, **_ERRORS_OF_EVERY_REQUEST},
    )
    def get(self, request: Request, item_id: str) -> HttpResponse:
        try:
            parsed_id = uuid.UUID(item_id)
        except ValueError:
            raise NotFound(f"No item with id {item_id[:80]!r}: item ids are UUIDs.") from None

        def build(min_lsn: int | None) -> bytes | None:
            item = item_get(item_id=parsed_id)  # an item never changes: any copy that has it is current
            return json_bytes(item) if item is not None else None

        # Stored items never change: their entries need no version.
        found = cache.get_or_build(cache.item_key(str(parsed_id)), build, versioned=False)
        if found is None:
            raise NotFound(f"No item with id {item_id}; an accepted item appears once the worker stores it.")
        return conditional_json(request, found[1], found[0])
