"""Account rules: what a username, password and nickname may be."""

from __future__ import annotations

import re
from typing import TypedDict

from imray.domain.errors import Invalid

# PROTOCOL §1. Anchored: the gateway's request model checks it too, and pydantic searches.
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
USERNAME = re.compile(USERNAME_PATTERN)


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
    if not isinstance(nickname, str) or len(nickname) > 64:
        raise Invalid("nickname must be at most 64 characters")
    return username, password, nickname.strip() or username
