"""Request parameters of the items API, parsed the same way by the views and the ASGI fast path."""

from project.errors import InvalidParameter

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_IDEMPOTENCY_KEY_CHARS = 255


def parse_limit(raw: str | None) -> int | None:
    """The page size asked for, or None when it is not a whole number from 1 to MAX_LIMIT."""
    if raw is None:
        return DEFAULT_LIMIT
    # isascii: "²".isdigit() is true but int("²") fails; the length cap keeps int() away from huge strings.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_LIMIT):
        return None
    return int(raw)


def limit_from(raw: str | None) -> int:
    """The page size asked for; InvalidParameter (400) when it is not a whole number from 1 to MAX_LIMIT."""
    limit = parse_limit(raw)
    if limit is None:
        raise InvalidParameter(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {(raw or '')[:40]!r}.")
    return limit


def idempotency_key_from(key: str | None) -> str | None:
    """The Idempotency-Key header's value; InvalidParameter (400) unless it is 1 to 255 printable ASCII, with no
    comma: two Idempotency-Key headers reach us joined by one, and neither key should be guessed."""
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isascii() or not key.isprintable() or "," in key:
        raise InvalidParameter(
            f"Send one Idempotency-Key header of 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters "
            "without a comma."
        )
    return key
