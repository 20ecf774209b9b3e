"""Authorization codes (RFC 6749 §4.1 + PKCE) and clients' exact redirect URIs."""

from __future__ import annotations

import json
from typing import TypedDict

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from imray.storage.accounts import _revoke, client, now_ms
from imray.storage.schema import authorization_codes, clients, refresh_tokens


class CodeRow(TypedDict):
    client_id: str
    user_id: int
    redirect_uri: str
    code_challenge: str
    scope: str
    expires_at: int
    used_at: int | None
    family: str


class RegistrationRow(TypedDict):
    client_id: str
    name: str
    redirect_uris: list[str]
    public: bool


def set_redirect_uris(conn: Connection, client_id: str, uris: list[str]) -> None:
    conn.execute(update(clients).where(clients.c.client_id == client_id)
                 .values(redirect_uris=json.dumps(uris) if uris else None))


def registration(conn: Connection, client_id: str) -> RegistrationRow | None:
    """A client as the code flow sees it; None for an unknown (or revoked) client."""
    row = client(conn, client_id)
    if row is None:
        return None
    stored = conn.execute(select(clients.c.redirect_uris).where(clients.c.client_id == client_id)).scalar()
    uris = json.loads(stored) if stored else []
    return {"client_id": row["client_id"], "name": row["name"], "public": row["secret_hash"] is None,
            "redirect_uris": [u for u in uris if isinstance(u, str)] if isinstance(uris, list) else []}


def store_code(conn: Connection, code_hash: str, code: CodeRow, keep_s: int) -> None:
    """Store a code; those expired more than `keep_s` ago go first (the table stays small)."""
    conn.execute(delete(authorization_codes).where(authorization_codes.c.expires_at < now_ms() - keep_s * 1000))
    conn.execute(insert(authorization_codes).values(code_hash=code_hash, **code))


def code(conn: Connection, code_hash: str) -> CodeRow | None:
    row = conn.execute(select(authorization_codes).where(authorization_codes.c.code_hash == code_hash)).first()
    if row is None:
        return None
    m = row._mapping
    return {"client_id": m["client_id"], "user_id": m["user_id"], "redirect_uri": m["redirect_uri"],
            "code_challenge": m["code_challenge"], "scope": m["scope"], "expires_at": m["expires_at"],
            "used_at": m["used_at"], "family": m["family"]}


def redeem(conn: Connection, code_hash: str, refresh_hash: str, refresh_ttl_s: int) -> bool:
    """Spend the code and store its login's first refresh token; False when spent already."""
    claimed = conn.execute(update(authorization_codes).where(
        authorization_codes.c.code_hash == code_hash, authorization_codes.c.used_at.is_(None)).values(used_at=now_ms()))
    if claimed.rowcount != 1:
        return False
    row = code(conn, code_hash)
    assert row is not None  # just claimed, in this transaction
    conn.execute(insert(refresh_tokens).values(
        token_hash=refresh_hash, family=row["family"], user_id=row["user_id"], client_id=row["client_id"],
        scope=row["scope"], expires_at=now_ms() + refresh_ttl_s * 1000, used=False))
    return True


def revoke_login(conn: Connection, family: str, keep_s: int) -> None:
    _revoke(conn, family, keep_s)
