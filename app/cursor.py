"""Opaque keyset cursors: the last id of a page, signed so a tampered cursor is refused rather than obeyed."""

import uuid

from django.core import signing

from project.errors import InvalidParameter

_signer = signing.Signer(salt="items.cursor")


def cursor_encode(last_id: uuid.UUID) -> str:
    return _signer.sign(last_id.hex)


def cursor_decode(token: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=_signer.unsign(token))
    except (signing.BadSignature, ValueError):
        raise InvalidParameter(
            "The cursor is not one this API issued; follow the `next` link of a previous page."
        ) from None
