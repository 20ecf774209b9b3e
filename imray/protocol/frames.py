"""Client frames of the socket protocol (docs/protocol.md §2), validated at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError

from imray.domain.errors import BadRequest, TooLarge

MAX_MENTIONS = 50  # users named in one message
MAX_RESUME_CONVS = 1000  # conversations one resume frame may name (64 KiB of frame holds ~1,500)
ERROR_CODES = ("bad_request", "forbidden", "not_found", "too_large", "rate_limited", "internal")


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# The last seq a client has of each conversation it names (issue 21's catch-up over the socket).
Seen = Annotated[dict[StrictStr, Annotated[StrictInt, Field(ge=0, le=2**62)]], Field(max_length=MAX_RESUME_CONVS)]


class Auth(_Frame):
    type: Literal["auth"]
    token: StrictStr
    # Issue 21: the client reads and writes several frames per WebSocket message, one per line.
    batch: StrictBool = False
    # Issue 21: live frames wait for the `resume` frame that follows, and what it names is caught up first.
    resume: StrictBool = False
    # Issue 21: the `resume` frame's `seen`, given at once: auth_ok, the catch-up and resume_ok then
    # leave together (a round trip and a write fewer for every session of a reconnect storm).
    seen: Seen | None = None


class Send(_Frame):
    type: Literal["send"]
    # A leading "~" marks the server's own keys (messaging.SERVER_KEY_PREFIX): not a client's.
    id: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[^~]")]
    conv: StrictStr
    kind: Literal["text", "image", "file"] = "text"
    body: StrictStr = ""
    file_id: StrictStr | None = None
    # Issue 18: the seq of the message answered, and the users named (the shard checks both).
    reply_to: Annotated[StrictInt, Field(ge=1, le=2**53)] | None = None
    # A tuple: a list default is deep-copied on every frame that leaves it out (~1/3 of a send's parse).
    mentions: Annotated[tuple[Annotated[StrictInt, Field(ge=1, le=2**53)], ...],
                        Field(max_length=MAX_MENTIONS)] = ()


class Read(_Frame):
    type: Literal["read"]
    conv: StrictStr
    seq: Annotated[StrictInt, Field(ge=0, le=2**62)]


class Typing(_Frame):
    type: Literal["typing"]
    conv: StrictStr


class Ping(_Frame):
    type: Literal["ping"]


class Refresh(_Frame):
    """A fresh access token for an authenticated socket, before its current one expires."""

    type: Literal["refresh"]
    token: StrictStr


class Resume(_Frame):
    """Catch-up over the socket (issue 21): the last seq the client has of each conversation; the
    node sends what came after, before anything live (the auth frame asked it to wait)."""

    type: Literal["resume"]
    seen: Seen


Frame = Auth | Send | Read | Typing | Ping | Refresh | Resume
ClientFrame = Annotated[Frame, Field(discriminator="type")]
_adapter: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
FRAME_TYPES = ("auth", "send", "read", "typing", "ping", "refresh", "resume")


def parse_frame(raw: str | bytes, max_bytes: int) -> Frame:
    """Decode one frame or raise BadRequest / TooLarge with a message a client developer can act on."""
    # A str counts characters; UTF-8 takes up to 4 bytes each, so encode only when it could matter.
    if len(raw) > max_bytes or (isinstance(raw, str) and len(raw) * 4 > max_bytes
                                and len(raw.encode()) > max_bytes):
        raise TooLarge(f"frame is larger than {max_bytes} bytes")
    if isinstance(raw, bytes):
        raise BadRequest("frames are JSON text frames, not binary")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("frame must be a JSON object")
    kind = data.get("type")
    if kind not in FRAME_TYPES:
        raise BadRequest(f"unknown frame type {kind!r}" if kind is not None else "frame has no type")
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        raise BadRequest(f"{where}: {first['msg']}") from None


def client_id_of(raw: str | bytes) -> str | None:
    """Best effort: the `id` of a frame we are refusing, so the error can name it."""
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def error_frame(code: str, message: str, client_id: str | None = None, **extra: object) -> str:
    frame: dict[str, object] = {"type": "error", "code": code, "message": message}
    if client_id is not None:
        frame["id"] = client_id
    frame.update(extra)
    return orjson.dumps(frame).decode()


def dumps(frame: Mapping[str, object]) -> str:
    """A server frame as the JSON text a socket sends."""
    return orjson.dumps(frame).decode()
