"""The server API's HTTP vocabulary: request and response models (OpenAPI shows them), the scope refusal.

No `from __future__ import annotations` here: FastAPI and pydantic read these annotations at runtime.
"""

from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from imray.deployments.http import DbId
from imray.domain.accounts import USERNAME_PATTERN
from imray.domain.scopes import IDEMPOTENCY_KEY, InsufficientScope

ConvPath = Annotated[str, Path(min_length=1, max_length=40, description="a conversation id: d:<a>:<b> or g:<id>")]
AsUser = Annotated[int, Query(ge=1, le=2**63 - 1, description="the user on whose behalf the change is made")]
UsernameQuery = Annotated[str, Query(min_length=1, max_length=64)]


async def _insufficient_scope(request: Request, exc: Exception) -> JSONResponse:
    """RFC 6750 §3.1: 403 naming the scope the route needs."""
    assert isinstance(exc, InsufficientScope)
    header = f'Bearer realm="imray", error="insufficient_scope", scope="{exc.scope}"'
    return JSONResponse({"detail": exc.message, "error": "insufficient_scope", "scope": exc.scope},
                        status_code=403, headers={"WWW-Authenticate": header})


def add_scope_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(InsufficientScope, _insufficient_scope)  # before DomainError's: more specific


class ServerSend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    idempotency_key: Annotated[str, Field(pattern=IDEMPOTENCY_KEY.pattern, description=(
        "the client's id for this message: the same key again returns the same message, nothing stored twice"))]
    body: Annotated[str, Field(min_length=1, max_length=65536, description="the text (kind text)")]


class ServerSent(BaseModel):
    msg_id: str
    conv: str
    seq: int
    ts: int
    sender_id: int
    idempotency_key: str


class ServerNewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, Field(pattern=USERNAME_PATTERN)]
    password: Annotated[str, Field(min_length=8, max_length=128)]
    nickname: Annotated[str | None, Field(max_length=64)] = None


class ServerPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: Annotated[str, Field(min_length=8, max_length=128)]


class ServerUser(BaseModel):
    id: int
    username: str
    nickname: str
    avatar_url: str | None
    bot: bool
    disabled: bool
    created_at: int


class ServerAccountChange(BaseModel):
    user: ServerUser
    logins_ended: int


class ServerPresence(BaseModel):
    user_id: int
    online: bool
    nodes: list[str]


class ServerNewGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner_id: DbId
    name: Annotated[str, Field(min_length=1, max_length=64)]
    members: Annotated[list[DbId], Field(max_length=2000)] = []


class ServerNewMembers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_user: Annotated[DbId, Field(description="the member on whose behalf people are added")]
    user_ids: Annotated[list[DbId], Field(min_length=1, max_length=2000)]


class ServerGroup(BaseModel):
    id: int
    conv: str
    name: str
    owner_id: int
    members: list[int]
