"""Time-ordered UUIDs (version 7, RFC 9562) for item ids; Python gains uuid.uuid7 only in 3.14."""

import os
import uuid


def uuid7(unix_ms: int) -> uuid.UUID:
    """48 bits of milliseconds, then 74 random bits; sorts by time as bytes, as text and in PostgreSQL."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return uuid.UUID(int=value)


def uuid7_ms(value: uuid.UUID) -> int:
    return value.int >> 80
