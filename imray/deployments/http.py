"""The gateway's HTTP vocabulary: request models, form and multipart parsing, errors as responses.

No `from __future__ import annotations` here: FastAPI and pydantic read these annotations at runtime.
"""

import base64
import binascii
import json
import logging
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from ray.exceptions import RayError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from imray.adapters import metrics
from imray.deployments.files import Download
from imray.domain.accounts import USERNAME_PATTERN
from imray.domain.errors import DomainError, Forbidden, Invalid, TooLarge
from imray.domain.files import SANDBOXED, download_headers
from imray.domain.oauth import Basic, OAuthError

log = logging.getLogger("imray.gateway")


class RateLimited(DomainError):
    code, status = "rate_limited", 429


class ClientTokenRefused(Forbidden):
    """A client's token on a route only people may use; the message is the one the API has always given."""

    def __init__(self, message: str = "") -> None:
        super().__init__("this route needs a user's token, not a client's")


# Integers from outside are range-checked here (422), before any service or database sees them: the
# database's integers are signed 64-bit, and a larger value met SQLite as an OverflowError (500) and
# MariaDB's driver inside a service as a failed call (503).
MAX_ID = 2**63 - 1  # user and group ids
MAX_SEQ = 2**62  # seqs, as in a read frame (imray.protocol.frames)
DbId = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
AfterSeq = Annotated[int | None, Query(ge=0, le=MAX_SEQ)]
BeforeSeq = Annotated[int | None, Query(ge=1, le=MAX_SEQ)]


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, Field(pattern=USERNAME_PATTERN)]
    password: Annotated[str, Field(min_length=8, max_length=128)]
    nickname: Annotated[str | None, Field(max_length=64)] = None


class NewGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=64)]
    members: Annotated[list[DbId], Field(max_length=2000)] = []


class NewMembers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_ids: Annotated[list[DbId], Field(min_length=1, max_length=2000)]


# -- errors as responses ----------------------------------------------------------------------------

def _oauth_error(exc: OAuthError, basic_used: bool) -> JSONResponse:
    body = {"error": exc.error}
    if exc.message and exc.message != exc.error:
        body["error_description"] = exc.message
    headers = {"Cache-Control": "no-store"}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="imray"' if basic_used else 'Bearer realm="imray"'
    retry_after_s = getattr(exc, "retry_after_s", None)  # a throttled or queued-out login (domain.login_guard)
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    if exc.status == 429:
        metrics.count("imray_rate_limited", 1, where="http")
    if isinstance(exc, OAuthError):
        return _oauth_error(exc, request.headers.get("authorization", "").lower().startswith("basic "))
    headers = {"WWW-Authenticate": 'Bearer realm="imray"'} if exc.status == 401 else None
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)


async def _ray_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("service call failed on %s: %r", request.url.path, exc)
    return JSONResponse({"detail": "service temporarily unavailable"}, status_code=503)


async def _database_away(request: Request, exc: Exception) -> JSONResponse:
    """The database did not answer (down, restarting, timed out): work done in this process (history,
    the server API's client lookup) answers as a failed service call does. Only the driver's error is
    logged: SQLAlchemy's message carries the statement and its parameters."""
    assert isinstance(exc, DBAPIError)
    metrics.backend_error("database")
    log.warning("database unavailable on %s: %r", request.url.path, exc.orig)
    return JSONResponse({"detail": "service temporarily unavailable"}, status_code=503)


async def _redis_away(request: Request, exc: Exception) -> JSONResponse:
    """Redis did not answer (presence, shared counters): a backing service away, 503."""
    metrics.backend_error("redis")
    log.warning("redis unavailable on %s: %r", request.url.path, exc)
    return JSONResponse({"detail": "service temporarily unavailable"}, status_code=503)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's own 422, except that an input holding a lone surrogate (JSON allows "\\ud800",
    UTF-8 does not) is echoed \\u-escaped: its UTF-8 rendering failed, which made the 422 a 500."""
    assert isinstance(exc, RequestValidationError)
    try:
        return await request_validation_exception_handler(request, exc)
    except UnicodeEncodeError:
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    """Domain errors as their status (RFC 6749 bodies for OAuth2's), failed service calls and an
    unreachable database or Redis as 503, anything else as 500 without its details."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RayError, _ray_error)
    app.add_exception_handler(OperationalError, _database_away)
    app.add_exception_handler(InterfaceError, _database_away)
    app.add_exception_handler(RedisConnectionError, _redis_away)
    app.add_exception_handler(RedisTimeoutError, _redis_away)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)


# -- request bodies ---------------------------------------------------------------------------------

def _basic_credentials(header: str) -> Basic:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    return client_id, secret


async def oauth_form(request: Request, endpoint: str) -> tuple[dict[str, str], Basic]:
    """The form fields and HTTP Basic client credentials of an OAuth2 endpoint request (RFC 6749 §4)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise OAuthError("invalid_request", f"the {endpoint} endpoint takes application/x-www-form-urlencoded")
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return fields, _basic_credentials(request.headers.get("authorization", ""))


async def multipart_file(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The bytes and name of the multipart field `file`, refused over `limit` bytes."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Invalid("send multipart/form-data with the file in a field named 'file'")
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=limit + 1)
    except HTTPException as exc:  # Starlette's own limits on the multipart parser
        raise (TooLarge if "size" in str(exc.detail).lower() else Invalid)(str(exc.detail)) from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise Invalid("the multipart field 'file' is missing")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"uploads are limited to {limit} bytes")
    return data, upload.filename


def file_response(result: Download) -> Response:
    if "url" in result:
        return RedirectResponse(result["url"], status_code=307, headers={"Cache-Control": "no-store", **SANDBOXED})
    headers = {"Cache-Control": "private, max-age=300",
               **download_headers(result["content_type"], result["filename"])}
    return Response(result["data"], media_type=result["content_type"], headers=headers)
