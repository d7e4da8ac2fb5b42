"""Opaque, signed pagination cursors: a tampered or foreign cursor is rejected, not trusted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime

from pdscaler.domain.errors import FieldError, InvalidInput

Position = tuple[datetime, int]
_MAC_BYTES = 16


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, position: Position) -> str:
        at, row_id = position
        payload = json.dumps([at.isoformat(), row_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._mac(payload) + payload).decode().rstrip("=")

    def decode(self, cursor: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise _invalid("not a cursor this API issued") from None
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise _invalid("signature does not match: use nextCursor exactly as returned")
        try:
            at, row_id = json.loads(payload)
            return datetime.fromisoformat(at), int(row_id)
        except (ValueError, TypeError):
            raise _invalid("malformed payload") from None

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _invalid(why: str) -> InvalidInput:
    return InvalidInput(f"invalid cursor: {why}", errors=(FieldError("cursor", why),))
