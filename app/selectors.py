"""Reads: pages of items newest first (keyset on the primary key) and single items, on the streaming replica
while it is healthy, else on the primary (project/replica.py).

Three fixed statements in SQL of our own rather than querysets: on the cache-miss GET, cloning, compiling and
converting the same four-column query through the ORM cost as much CPU as sending it and reading the rows
([011](../docs/decisions/011-write-path-on-the-event-loop.md)). Values go through the driver's parameters, and
the id through the field's own preparation for the backend (a UUID to PostgreSQL, hex text to SQLite), so it
reads on every backend the ORM does.
"""

import datetime as dt
import uuid

from django.db import connections

from app.http import rfc3339
from app.models import Item
from project import replica

# The model's table and columns (app/models.py); the unit tests read every field back through these.
_SELECT = 'SELECT "id", "name", "description", "created_at" FROM "items"'
_NEWEST = _SELECT + ' ORDER BY "id" DESC LIMIT %s'
_OLDER_THAN = _SELECT + ' WHERE "id" < %s ORDER BY "id" DESC LIMIT %s'
_BY_ID = _SELECT + ' WHERE "id" = %s'
_PK = Item._meta.pk


def _rows(alias: str, sql: str, params: list) -> list[tuple]:
    with connections[alias].cursor() as cursor:  # Django's cursor: counted in metrics, errors wrapped
        cursor.execute(sql, params)
        return cursor.fetchall()


def _id_param(alias: str, item_id: uuid.UUID):
    return _PK.get_db_prep_value(item_id, connections[alias])


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    # psycopg2 gives a UUID (Django registers the adapter); SQLite, the embedded default, the hex text stored.
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _as_dict(row: tuple) -> dict:
    item_id, name, description, created_at = row
    if created_at.tzinfo is None:  # SQLite: the UTC time Django stored, read back naive
        created_at = created_at.replace(tzinfo=dt.UTC)
    return {"id": str(_uuid(item_id)), "name": name, "description": description, "created_at": rfc3339(created_at)}


def item_list(
    *, limit: int, before: uuid.UUID | None = None, min_lsn: int | None = None
) -> tuple[list[dict], uuid.UUID | None]:
    """Up to `limit` items older than `before`, and the id to continue from (None on the last page).

    One query, on the primary-key index: ORDER BY id DESC LIMIT limit + 1 (the extra row says whether a next
    page exists). `min_lsn`: the commit the page must include (app/cache.py, the version it will be cached
    under): the replica answers only once it has replayed it, else the primary does.
    """

    def query(alias: str) -> list[tuple]:
        if before is None:
            return _rows(alias, _NEWEST, [limit + 1])
        return _rows(alias, _OLDER_THAN, [_id_param(alias, before), limit + 1])

    rows = replica.read(query, min_lsn=min_lsn)
    next_before = _uuid(rows[limit - 1][0]) if len(rows) > limit else None
    return [_as_dict(row) for row in rows[:limit]], next_before


def item_get(*, item_id: uuid.UUID) -> dict | None:
    """The item, or None. Not on the replica is asked of the primary too: a client polling for the item it was
    just accepted must not get a 404 longer because of replication (a 404 costs a second query)."""
    rows = replica.read(lambda alias: _rows(alias, _BY_ID, [_id_param(alias, item_id)]), recheck_empty=True)
    return _as_dict(rows[0]) if rows else None
