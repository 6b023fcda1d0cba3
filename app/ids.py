"""Time-ordered UUIDs (version 7, RFC 9562) for item ids; Python gains uuid.uuid7 only in 3.14."""

import random
import threading
import time
import uuid


def uuid7(unix_ms: int) -> uuid.UUID:
    """48 bits of milliseconds, then 74 random bits; sorts by time as bytes, as text and in PostgreSQL."""
    # Not os.urandom: on the write path this runs on the event loop, and a call that releases the GIL there hands
    # it to a request thread for a switch interval. Ids are public, not secrets; `random` is reseeded after fork.
    rand = random.getrandbits(80)
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return uuid.UUID(int=value)


def uuid7_ms(value: uuid.UUID) -> int:
    return value.int >> 80


_last_issued = 0
_issue_lock = threading.Lock()


def new_item_id() -> uuid.UUID:
    """A UUIDv7 of now, strictly increasing within this process (RFC 9562 6.2, method 2: in the same millisecond,
    or if the clock steps back, one more than the last). Random bits alone would order two items made in the same
    millisecond at random, and the list is newest first by id."""
    global _last_issued
    value = uuid7(time.time_ns() // 1_000_000).int
    with _issue_lock:
        if value <= _last_issued:
            value = _last_issued + 1
        _last_issued = value
    return uuid.UUID(int=value)
