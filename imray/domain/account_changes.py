"""A user's own account (issue 18): what a nickname, a device name and a search prefix may be."""

from __future__ import annotations

from imray.domain.accounts import USERNAME, odd_character
from imray.domain.errors import Invalid

MAX_DEVICE_NAME = 64
MAX_PREFIX = 32  # a username's longest
LIKE_ESCAPE = "!"  # not `\`: MariaDB also reads a backslash in a string literal
UNKNOWN_DEVICE = "unknown device"
DELETED_NICKNAME = "Deleted user"
# Bidirectional overrides and isolates turn a name around on screen (a classic spoofing trick).
def device_name(given: str | None, user_agent: str) -> str:
    """What a login is listed as: the app's `device_name` (checked like a nickname: a bad one is
    refused), else the User-Agent (not the user's doing: cleaned and cut instead)."""
    if given is not None and given.strip():
        if len(given) > MAX_DEVICE_NAME:
            raise Invalid(f"device_name must be at most {MAX_DEVICE_NAME} characters")
        odd = odd_character(given)
        if odd is not None:
            raise Invalid(f"device_name may not contain the character U+{ord(odd):04X}")
        return given.strip()
    cleaned = "".join(c for c in user_agent if odd_character(c) is None).strip()
    return cleaned[:MAX_DEVICE_NAME].strip() or UNKNOWN_DEVICE


def check_prefix(prefix: str, min_length: int) -> str:
    """The username prefix of a search, lower-cased: the search ignores case on every database (a
    case-insensitive MariaDB collation would anyway). Too short would list everyone: refused."""
    if not min_length <= len(prefix) <= MAX_PREFIX:
        raise Invalid(f"prefix must be {min_length}-{MAX_PREFIX} characters")
    if odd_character(prefix) is not None:
        raise Invalid("prefix may not contain control characters")
    return prefix.lower()


def like_pattern(prefix: str) -> str:
    """A LIKE pattern matching names that start with `prefix` literally (used with ESCAPE '!'):
    `%` and `_` in it are characters, not wildcards."""
    escaped = "".join(LIKE_ESCAPE + c if c in ("%", "_", LIKE_ESCAPE) else c for c in prefix)
    return escaped + "%"


def may_match(prefix: str) -> bool:
    """Whether any username can start with `prefix` (no query is needed when none can)."""
    return bool(USERNAME.fullmatch((prefix + "xxx")[:32]))


def deleted_username(user_id: int) -> str:
    """A deleted account's username: ':' is no username character, so no sign-up takes it, and the
    old name is free again."""
    return f"deleted:{user_id}"
