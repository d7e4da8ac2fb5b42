"""Bearer tokens with roles. Only SHA-256 digests are configured; comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pdscaler.config import ApiToken, Role
from pdscaler.domain.errors import Forbidden, Unauthenticated


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


ANONYMOUS = Principal("anonymous", Role.VIEWER)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and its digest."""
    token = "pds_" + secrets.token_urlsafe(32)
    return token, token_digest(token)


class TokenRegistry:
    def __init__(self, tokens: list[ApiToken], *, anonymous_reads: bool) -> None:
        self._tokens = [(bytes.fromhex(t.sha256), Principal(t.name, t.role)) for t in tokens]
        self._anonymous_reads = anonymous_reads

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal behind an Authorization header; None when there is no header.

        Every configured digest is compared, so the time taken does not depend on which
        token matched or how much of it did.
        """
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("use 'Authorization: Bearer <token>'")
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: Principal | None = None
        for known, principal in self._tokens:
            if hmac.compare_digest(digest, known):
                found = principal
        if found is None:
            raise Unauthenticated("unknown token")
        return found

    def authorize(self, authorization: str | None, required: Role) -> Principal:
        principal = self.authenticate(authorization)
        if principal is None:
            if required is Role.VIEWER and self._anonymous_reads:
                return ANONYMOUS
            raise Unauthenticated("this route needs a bearer token")
        if not principal.role.allows(required):
            raise Forbidden(f"{principal.name} is {principal.role}; this route needs {required}")
        return principal
