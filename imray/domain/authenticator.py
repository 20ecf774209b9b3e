"""Who a request or a socket speaks for: one check of a bearer token, shared by every edge.

Signature and claims are checked locally (`TokenVerifier`); then the login the token belongs to
must not have been revoked (RFC 7009, or a reused refresh token). The gateway and the socket node
both authenticate through this, so neither can forget a step.
"""

from __future__ import annotations

from typing import Protocol

from imray.domain.errors import DomainError, Forbidden, Unauthorized
from imray.domain.tokens import Principal, TokenVerifier


class RevokedLogins(Protocol):
    """The denylist of revoked logins (refresh-token families)."""

    async def is_revoked(self, family: str) -> bool: ...
    async def revoke(self, family: str, ttl_s: int) -> None: ...


class Authenticator:
    def __init__(self, verifier: TokenVerifier, revoked: RevokedLogins) -> None:
        self._verifier = verifier
        self._revoked = revoked

    async def authenticate(self, token: object) -> Principal:
        """The principal of a valid, unrevoked token (a user's or a confidential client's)."""
        principal = self._verifier.verify(token)
        if principal.family and await self._revoked.is_revoked(principal.family):
            raise Unauthorized("this login was revoked")
        return principal

    async def renewal(self, token: object, current: Principal) -> Principal:
        """A fresh token for a socket authenticated as `current`: valid, unrevoked, and for the same
        user, login (family) and node, so renewing can neither switch identity nor move a pin."""
        principal = await self.user(token, not_a_user=Unauthorized)
        if principal.user_id != current.user_id:
            raise Unauthorized("the new token is for another user")
        if principal.family != current.family:
            raise Unauthorized("the new token is for another login")
        if principal.node != current.node:
            raise Unauthorized("the new token is pinned to another node")
        return principal

    async def user(self, token: object, not_a_user: type[DomainError] = Forbidden) -> Principal:
        """Like `authenticate`, for places only people may enter: a client's token raises `not_a_user`."""
        principal = await self.authenticate(token)
        if principal.user_id is None:
            raise not_a_user("a user token is required, not a client's")
        return principal
