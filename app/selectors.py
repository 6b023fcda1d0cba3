"""Reads: pages of items newest first (keyset on the primary key) and single items."""

import uuid

from app.http import rfc3339
from app.models import Item

_COLUMNS = ("id", "name", "description", "created_at")


def _as_dict(row: dict) -> dict:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"],
        "created_at": rfc3339(row["created_at"]),
    }


def item_list(*, limit: int, before: uuid.UUID | None = None) -> tuple[list[dict], uuid.UUID | None]:
    """Up to `limit` items older than `before`, and the id to continue from (None on the last page).

    One query, on the primary-key index: ORDER BY id DESC LIMIT limit + 1 (the extra row says whether a next
    page exists).
    """
    queryset = Item.objects.order_by("-id")
    if before is not None:
        queryset = queryset.filter(id__lt=before)
    rows = list(queryset.values(*_COLUMNS)[: limit + 1])
    next_before = rows[limit - 1]["id"] if len(rows) > limit else None
    return [_as_dict(row) for row in rows[:limit]], next_before


def item_get(*, item_id: uuid.UUID) -> dict | None:
    row = Item.objects.filter(id=item_id).values(*_COLUMNS).first()
    return _as_dict(row) if row else None
