"""The HTTP vocabulary of a user's own account (issue 18): search, profile, password, logins, deletion.

No `from __future__ import annotations` here: FastAPI and pydantic read these annotations at runtime.
"""

from typing import Annotated

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from imray.deployments.http import MAX_ID

PrefixQuery = Annotated[str, Query(max_length=32, description=(
    "the start of a username, case ignored; at least user_search_min_prefix characters"))]
SearchAfter = Annotated[int, Query(ge=0, le=MAX_ID, description="next_after of the previous page (0: the first)")]
SearchLimit = Annotated[int, Query(ge=1, le=50, description="users per page")]
LoginPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a login's id, from GET /api/users/me/logins")]


class UserAnswer(BaseModel):
    id: int
    username: str
    nickname: str
    avatar_url: str | None


class UserPage(BaseModel):
    users: list[UserAnswer]
    next_after: int | None = Field(description="pass as `after` for the next page; null: this was the last")


class ProfileChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nickname: Annotated[str, Field(max_length=64, description="blank: the username; no control characters")]


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: Annotated[str, Field(min_length=1, max_length=1024)]
    new_password: Annotated[str, Field(min_length=8, max_length=128)]


class AccountDeletion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class LoginsEnded(BaseModel):
    logins_ended: int


class LoginAnswer(BaseModel):
    id: int
    device_name: str
    client_id: str
    created_at: int = Field(description="ms since the epoch")
    last_seen_at: int = Field(description="ms since the epoch: the login's last grant, refresh or open socket")
    current: bool = Field(description="the login of the token that asks")


class LoginList(BaseModel):
    logins: list[LoginAnswer]
