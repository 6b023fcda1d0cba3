"""Reads: pages of items newest first (keyset on the primary key) and single items, on the streaming replica
while it is healthy, else on the primary (project/replica.py)."""

import uuid

from app.http import rfc3339
from app.models import Item
from project import replica

_COLUMNS = ("id", "name", "description", "created_at")


def _as_dict(row: dict) -> dict:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"],
        "created_at": rfc3339(row["created_at"]),
    }


def item_list(
    *, limit: int, before: uuid.UUID | None = None, min_lsn: int | None = None
) -> tuple[list[dict], uuid.UUID | None]:
    """Up to `limit` items older than `before`, and the id to continue from (None on the last page).

    One query, on the primary-key index: ORDER BY id DESC LIMIT limit + 1 (the extra row says whether a next
    page exists). `min_lsn`: the commit the page must include (app/cache.py, the version it will be cached
    under): the replica answers only once it has replayed it, else the primary does.
    """

    def query(alias: str) -> list[dict]:
        queryset = Item.objects.using(alias).order_by("-id")
        if before is not None:
            queryset = queryset.filter(id__lt=before)
        return list(queryset.values(*_COLUMNS)[: limit + 1])

    rows = replica.read(query, min_lsn=min_lsn)
    next_before = rows[limit - 1]["id"] if len(rows) > limit else None
    return [_as_dict(row) for row in rows[:limit]], next_before


def item_get(*, item_id: uuid.UUID) -> dict | None:
    """The item, or None. Not on the replica is asked of the primary too: a client polling for the item it was
    just accepted must not get a 404 longer because of replication (a 404 costs a second query)."""
    row = replica.read(
        lambda alias: Item.objects.using(alias).filter(id=item_id).values(*_COLUMNS).first(), recheck_empty=True
    )
    return _as_dict(row) if row else None
