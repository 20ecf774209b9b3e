"""Account rules: what a username, password and nickname may be."""

from __future__ import annotations

import re
import unicodedata
from typing import TypedDict

from imray.domain.errors import Invalid

# PROTOCOL §1. Anchored: the gateway's request model checks it too, and pydantic searches.
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
USERNAME = re.compile(USERNAME_PATTERN)
MAX_NICKNAME = 64


class User(TypedDict):
    """A user as the API shows it (PROTOCOL §1)."""

    id: int
    username: str
    nickname: str
    avatar_url: str | None


def check_registration(username: object, password: object, nickname: object) -> tuple[str, str, str]:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise Invalid("username must be 3-32 characters of A-Z a-z 0-9 _ . -")
    if not isinstance(password, str) or not 8 <= len(password) <= 128:
        raise Invalid("password must be 8-128 characters")
    if nickname is None:
        nickname = username
    return username, password, check_nickname(nickname, username)  # the same rule as a later edit


BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def odd_character(text: str) -> str | None:
    """The first character a name may not hold: a control character, a lone surrogate (which no
    database stores) or a bidirectional override; None when there is none."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs") or char in BIDI_CONTROLS:
            return char
    return None


def check_nickname(nickname: object, username: str) -> str:
    """A nickname as stored: at most 64 characters, none of them odd; blank means the username
    (as at sign-up)."""
    if not isinstance(nickname, str) or len(nickname) > MAX_NICKNAME:
        raise Invalid(f"nickname must be at most {MAX_NICKNAME} characters")
    odd = odd_character(nickname)
    if odd is not None:
        raise Invalid(f"nickname may not contain the character U+{ord(odd):04X}")
    return nickname.strip() or username
