"""The selectors' own SQL reads what the ORM wrote, field for field, in keyset order (on the embedded default's
SQLite here; the integration tests read through PostgreSQL and PgBouncer)."""

import datetime as dt
import uuid

import pytest

from app.http import rfc3339
from app.ids import uuid7
from app.models import Item
from app.selectors import item_get, item_list

pytestmark = pytest.mark.django_db

_START_MS = 1_700_000_000_000


@pytest.fixture
def five_items() -> list[Item]:
    items = [
        Item(
            id=uuid7(_START_MS + n),
            name=f"naïve ☕ {n}",
            description="" if n % 2 else f'line one\nline "two" {n}',
            created_at=dt.datetime.fromtimestamp((_START_MS + n) / 1000, tz=dt.UTC),
        )
        for n in range(5)
    ]
    Item.objects.bulk_create(items)
    return sorted(items, key=lambda item: item.id, reverse=True)


def _as_api(item: Item) -> dict:
    return {
        "id": str(item.id),
        "name": item.name,
        "description": item.description,
        "created_at": rfc3339(item.created_at),
    }


def test_pages_are_newest_first_and_continue_below_the_last_id(five_items):
    first, after_first = item_list(limit=2)
    second, after_second = item_list(limit=2, before=after_first)
    last, after_last = item_list(limit=2, before=after_second)

    assert first + second + last == [_as_api(item) for item in five_items]
    assert (after_first, after_second, after_last) == (five_items[1].id, five_items[3].id, None)
    assert isinstance(after_first, uuid.UUID)


def test_a_page_that_fits_exactly_has_no_next(five_items):
    assert item_list(limit=5) == ([_as_api(item) for item in five_items], None)
    assert item_list(limit=3, before=five_items[-1].id) == ([], None)


def test_an_item_is_read_by_its_id_and_an_unknown_id_is_none(five_items):
    assert item_get(item_id=five_items[2].id) == _as_api(five_items[2])
    assert item_get(item_id=uuid.uuid4()) is None
