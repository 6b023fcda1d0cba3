"""Item ids are UUIDv7: version 7, RFC variant, ordered by time."""

import uuid

from app.ids import new_item_id, uuid7, uuid7_ms


def test_uuid7_has_version_7_and_the_rfc_variant():
    value = uuid7(1_700_000_000_000)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert uuid7_ms(value) == 1_700_000_000_000


def test_uuid7_sorts_by_time_as_bytes_and_as_text():
    earlier, later = uuid7(1_700_000_000_000), uuid7(1_700_000_000_001)
    assert earlier < later
    assert str(earlier) < str(later)
    assert earlier.bytes < later.bytes


def test_uuid7_is_unique_within_one_millisecond():
    assert len({uuid7(1_700_000_000_000) for _ in range(10_000)}) == 10_000


def test_new_item_ids_sort_in_the_order_they_were_made_even_within_one_millisecond():
    ids = [new_item_id() for _ in range(10_000)]  # many per millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(value.version == 7 and value.variant == uuid.RFC_4122 for value in ids)
