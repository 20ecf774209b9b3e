"""Scopes of confidential clients and the server API's rules: who may call what, as whom."""

from __future__ import annotations

import re
from dataclasses import dataclass

from imray.domain.accounts import USERNAME
from imray.domain.errors import BadRequest, DomainError, Forbidden, Invalid, NotFound, TooLarge, Unavailable
from imray.domain.tokens import USER_SCOPE, Principal

MESSAGES_SEND = "messages:send"  # send as the client's bot
USERS_READ = "users:read"  # read any user's account (and look one up by name)
USERS_ADMIN = "users:admin"  # create, disable, enable, kick, reset a password
CONVERSATIONS_ADMIN = "conversations:admin"  # create groups and manage members on a user's behalf
PRESENCE_READ = "presence:read"  # which socket nodes a user is on
INTROSPECT = "introspect"  # RFC 7662 token introspection (the keys/introspection area)
# What a client may be given: the server API's scopes, introspection, and `chat` (the users' own
# scope, kept for clients made before the server API; no server route accepts it).
KNOWN_SCOPES = frozenset({USER_SCOPE, MESSAGES_SEND, USERS_READ, USERS_ADMIN, CONVERSATIONS_ADMIN,
                          PRESENCE_READ, INTROSPECT})
SYSTEM_SESSION = "server"  # the session name server sends carry: no socket session is skipped
# Printable ASCII, like a socket frame's id; a leading "~" is the server's own (messaging.SERVER_KEY_PREFIX).
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7d][\x21-\x7e]{0,63}$")


class InsufficientScope(Forbidden):
    """RFC 6750 §3.1: the token is valid but lacks `scope` (the gateway adds WWW-Authenticate)."""

    def __init__(self, scope: str, message: str = "") -> None:
        super().__init__(message or f"this route needs a client token with scope {scope!r}")
        self.scope = scope

    def __reduce__(self) -> tuple[type[InsufficientScope], tuple[str, str]]:
        return (InsufficientScope, (self.scope, self.message))


def check_scopes(text: str) -> str:
    """A client's scope as given at creation: known names only, space-separated, sorted, no repeats."""
    names = text.split()
    if not names:
        raise Invalid("a client needs at least one scope")
    unknown = sorted(set(names) - KNOWN_SCOPES)
    if unknown:
        raise Invalid(f"unknown scopes {unknown}; known: {' '.join(sorted(KNOWN_SCOPES))}")
    return " ".join(sorted(set(names)))


def require(principal: Principal, scope: str) -> None:
    """Server routes take confidential clients' tokens carrying `scope`; a user's token never does."""
    if principal.user_id is not None:
        raise InsufficientScope(scope, "server routes take a confidential client's token, not a user's")
    if scope not in principal.scope.split():
        raise InsufficientScope(scope)


def check_bot_name(name: str) -> str:
    """A bot's account is named like any user (it shares the username space)."""
    if not USERNAME.fullmatch(name):
        raise Invalid("a bot's name must be 3-32 characters of A-Z a-z 0-9 _ . -")
    return name


@dataclass(frozen=True, slots=True)
class ServerClient:
    """A confidential client as the server API sees it, checked again every few seconds."""

    client_id: str
    bot_user_id: int | None
    revoked: bool
    bot_disabled: bool = False


def sender_of(client: ServerClient) -> int:
    """Who a server send speaks as: the client's bot account (there is no other system sender)."""
    if client.bot_user_id is None:
        raise Forbidden("this client has no bot account to send as (imray clients create --bot NAME)")
    if client.bot_disabled:
        raise Forbidden("this client's bot account is disabled")
    return client.bot_user_id


def check_idempotency_key(key: str) -> str:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("idempotency_key must be 1-64 printable ASCII characters without spaces")
    return key


class ShardBusy(DomainError):
    code, status = "rate_limited", 429


def outcome_error(code: str, message: str) -> DomainError:
    """A shard's refusal of one send (its socket error code) as the error the HTTP edge answers."""
    kind: type[DomainError] = {"forbidden": Forbidden, "not_found": NotFound, "too_large": TooLarge,
                               "rate_limited": ShardBusy, "internal": Unavailable}.get(code, BadRequest)
    return kind(message)
