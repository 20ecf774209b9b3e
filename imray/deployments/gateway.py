"""Gateway: the HTTP ingress. Routing, bearer-token checks, rate and size limits, then the services.

No `from __future__ import annotations` here: FastAPI reads these annotations at runtime. Module
helpers stand above the deployment class: Serve serializes the class when it is decorated.
"""


import asyncio
import base64
import binascii
import logging
import os
from typing import Annotated

import orjson
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from ray import serve
from ray.exceptions import RayError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from imray.adapters.cache import make_cache, revoked_family_key
from imray.adapters.live_config import LiveSettings
from imray.adapters.nacos import GATEWAY_SERVICE, NacosInstance
from imray.adapters.revocations import follow_if_embedded
from imray.deployments.auth import OAuthError
from imray.deployments.common import call
from imray.deployments.history import HistoryReader
from imray.deployments.limits import BodyLimit, RateLimiter, SharedRateLimiter
from imray.domain.errors import DomainError, Forbidden, Invalid, TooLarge, Unauthorized
from imray.domain.tokens import Principal, PublicKey, TokenVerifier
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage.db import Database

log = logging.getLogger("imray.gateway")
app = FastAPI(title="imray", version="0.1.0",
              description="Distributed instant messaging on Ray. Real time goes over the socket nodes.")
BODY_LIMIT = {"bytes": 1048576, "upload": 20 * 1048576}  # set from settings when the Gateway starts
UPLOAD_PATHS = ("/api/files", "/api/users/me/avatar")
TOKENS_REMEMBERED = 10000  # verified access tokens a replica keeps (about 1 KB each)


def _body_limit(path: str) -> int:
    # Uploads may be larger than JSON bodies (multipart framing adds a little).
    return BODY_LIMIT["upload"] + 65536 if path.startswith(UPLOAD_PATHS) else BODY_LIMIT["bytes"]


app.add_middleware(BodyLimit, limit=_body_limit)


class RateLimited(DomainError):
    code, status = "rate_limited", 429


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{3,32}$")]
    password: Annotated[str, Field(min_length=8, max_length=128)]
    nickname: Annotated[str | None, Field(max_length=64)] = None


class NewGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=64)]
    members: Annotated[list[Annotated[StrictInt, Field(ge=1)]], Field(max_length=2000)] = []


class NewMembers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_ids: Annotated[list[Annotated[StrictInt, Field(ge=1)]], Field(min_length=1, max_length=2000)]


def _oauth_error(exc: OAuthError, basic_used: bool) -> JSONResponse:
    body = {"error": exc.error}
    if exc.message and exc.message != exc.error:
        body["error_description"] = exc.message
    headers = {"Cache-Control": "no-store"}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="imray"' if basic_used else 'Bearer realm="imray"'
    return JSONResponse(body, status_code=exc.status, headers=headers)


@app.exception_handler(DomainError)
async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
    if isinstance(exc, OAuthError):
        return _oauth_error(exc, request.headers.get("authorization", "").lower().startswith("basic "))
    headers = {"WWW-Authenticate": 'Bearer realm="imray"'} if exc.status == 401 else None
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)


@app.exception_handler(RayError)
async def _ray_error(request: Request, exc: RayError) -> JSONResponse:
    log.warning("service call failed on %s: %r", request.url.path, exc)
    return JSONResponse({"detail": "service temporarily unavailable"}, status_code=503)


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def _basic_credentials(header: str) -> tuple[str, str] | None:
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


async def _oauth_form(request: Request, endpoint: str) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The form fields and HTTP Basic client credentials of an OAuth2 endpoint request (RFC 6749 §4)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise OAuthError("invalid_request", f"the {endpoint} endpoint takes application/x-www-form-urlencoded")
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return fields, _basic_credentials(request.headers.get("authorization", ""))


async def _multipart_file(request: Request, limit: int) -> tuple[bytes, str | None]:
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


def _file_response(result: dict) -> Response:
    if "url" in result:
        return RedirectResponse(result["url"], status_code=307, headers={"Cache-Control": "no-store"})
    headers = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(result["data"], media_type=result["content_type"], headers=headers)


@serve.deployment
@serve.ingress(app)
class Gateway:
    def __init__(self, auth: DeploymentHandle, users: DeploymentHandle, web: DeploymentHandle,
                 settings: Settings, keys: list[PublicKey]) -> None:
        self._auth, self._users, self._web = auth, users, web
        self._settings = settings
        self._keys = keys
        self._verifier = TokenVerifier(keys, settings.base_url, remember=TOKENS_REMEMBERED)
        self._limiter = (SharedRateLimiter(settings.redis_url, settings.rate_limit_per_minute) if settings.redis_url
                         else RateLimiter(settings.rate_limit_per_minute))
        self._cache = make_cache(settings)
        self._db = Database(settings.db_url)
        self._history = HistoryReader(self._db)
        self._revocations: asyncio.Task[None] | None = None
        self._live = LiveSettings(settings)
        self._started: asyncio.Task[None] | None = None
        self._nacos: NacosInstance | None = None
        BODY_LIMIT["bytes"] = settings.max_body_bytes
        BODY_LIMIT["upload"] = max(settings.max_upload_bytes, settings.max_avatar_bytes)
        freeze_startup_heap()

    # -- edge checks --------------------------------------------------------------------------

    async def _user(self, request: Request) -> Principal:
        """The verified user behind the bearer token (401 without one, 403 for a client token)."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("a bearer token is required")
        principal = self._verifier.verify(token.strip())
        if principal.user_id is None:
            raise Forbidden("this route needs a user's token, not a client's")
        if principal.family and await self._cache.get(revoked_family_key(principal.family)):
            raise Unauthorized("this login was revoked")
        await self._rate(f"u:{principal.user_id}")
        return principal

    async def _uid(self, request: Request) -> int:
        return (await self._user(request)).user_id

    async def _start(self) -> None:
        """Live settings (rate limits follow Nacos's imray.yaml) and this replica's Nacos instance."""
        def follow(values: dict) -> None:
            self._limiter.per_minute = int(values["rate_limit_per_minute"])

        self._live.on_change(follow)
        self._revocations = follow_if_embedded(self._settings, self._cache, self._db)
        try:
            await self._live.start(f"gateway-{os.getpid()}")
            if self._settings.nacos_server:
                import ray

                self._nacos = NacosInstance(self._settings, GATEWAY_SERVICE, ray.util.get_node_ip_address(),
                                            self._settings.http_port, f"gateway-{os.getpid()}")
                await self._nacos.register({"pid": str(os.getpid()), "url": self._settings.base_url})
        except Exception as exc:  # serve anyway: static settings, and the registry can wait
            log.warning("gateway: Nacos unavailable: %r", exc)

    async def check_health(self) -> None:
        """Serve calls this every few seconds on the replica's loop: a sure place to start following Nacos."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())

    async def _rate(self, caller: str) -> None:
        self._ensure_started()
        if not await self._limiter.check(caller):
            raise RateLimited("too many requests, slow down")

    async def _anonymous(self, request: Request) -> None:
        await self._rate(f"ip:{request.client.host if request.client else '-'}")

    # -- discovery ----------------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/.well-known/jwks.json", tags=["oauth2"])
    async def jwks(self) -> dict:
        return {"keys": [k.jwk() for k in self._keys]}

    @app.get("/.well-known/oauth-authorization-server", tags=["oauth2"])
    async def metadata(self) -> dict:
        base = self._settings.base_url
        return {
            "issuer": base,
            "token_endpoint": f"{base}/oauth2/token",
            "revocation_endpoint": f"{base}/oauth2/revoke",
            "authorization_endpoint": f"{base}/oauth2/authorize",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "grant_types_supported": ["password", "refresh_token", "client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["chat"],
            "service_documentation": f"{base}/docs",
        }

    # -- OAuth2 -------------------------------------------------------------------------------

    @app.post("/oauth2/token", tags=["oauth2"])
    async def token(self, request: Request) -> JSONResponse:
        await self._anonymous(request)
        result = await call(self._auth.token.remote(*await _oauth_form(request, "token")))
        return JSONResponse(result, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @app.post("/oauth2/revoke", tags=["oauth2"])
    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoke a refresh token, and with it its login's access tokens (log out)."""
        await self._anonymous(request)
        await call(self._auth.revoke.remote(*await _oauth_form(request, "revocation")))
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    @app.get("/oauth2/authorize", tags=["oauth2"])
    async def authorize(self, request: Request) -> JSONResponse:
        """No browser flows: the implicit grant is refused (RFC 9700), and so is everything else here."""
        response_type = request.query_params.get("response_type", "")
        raise OAuthError("unsupported_response_type",
                         f"response_type {response_type!r} is not supported; use the token endpoint")

    @app.post("/api/socket/assign", tags=["socket"])
    async def assign(self, request: Request) -> dict:
        return await call(self._auth.assign.remote(await self._user(request)))

    # -- users --------------------------------------------------------------------------------

    @app.post("/api/users", status_code=201, tags=["users"])
    async def register(self, body: Registration, request: Request) -> dict:
        await self._anonymous(request)
        return await call(self._users.register.remote(body.username, body.password, body.nickname))

    @app.get("/api/users/me", tags=["users"])
    async def me(self, request: Request) -> dict:
        return await call(self._users.get.remote(await self._uid(request)))

    @app.get("/api/users/me/blocks", tags=["users"])
    async def blocks(self, request: Request) -> dict:
        return {"user_ids": await call(self._users.blocks.remote(await self._uid(request)))}

    @app.put("/api/users/me/blocks/{other_id}", status_code=204, tags=["users"])
    async def block(self, other_id: int, request: Request) -> Response:
        await call(self._users.block.remote(await self._uid(request), other_id, True))
        return Response(status_code=204)

    @app.delete("/api/users/me/blocks/{other_id}", status_code=204, tags=["users"])
    async def unblock(self, other_id: int, request: Request) -> Response:
        await call(self._users.block.remote(await self._uid(request), other_id, False))
        return Response(status_code=204)

    @app.put("/api/users/me/avatar", tags=["users"])
    async def set_avatar(self, request: Request) -> dict:
        """The image as the raw body (image/*) or as multipart field `file`; its type is sniffed."""
        uid = await self._uid(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data, _ = await _multipart_file(request, self._settings.max_avatar_bytes)
        else:
            data = await request.body()
        return await call(self._users.set_avatar.remote(uid, data))

    @app.get("/api/users/{user_id}/avatar", tags=["users"])
    async def avatar(self, user_id: int, request: Request) -> Response:
        await self._user(request)
        return _file_response(await call(self._users.avatar.remote(user_id)))

    @app.get("/api/users/{user_id}", tags=["users"])
    async def user(self, user_id: int, request: Request) -> dict:
        await self._user(request)
        return await call(self._users.get.remote(user_id))

    # -- conversations and groups -------------------------------------------------------------

    @app.get("/api/conversations", tags=["conversations"])
    async def conversations(self, request: Request) -> list[dict]:
        return await call(self._web.conversations.remote(await self._uid(request)))

    @app.get("/api/conversations/{conv}/messages", tags=["conversations"])
    async def history(self, conv: str, request: Request,
                      after_seq: Annotated[int | None, Query(ge=0)] = None,
                      before_seq: Annotated[int | None, Query(ge=1)] = None,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
        """{"messages": [...]}, ascending seq (the hot path of every reconnect: encoded with orjson)."""
        user = await self._user(request)
        page = await self._history.read(user.user_id, conv, after_seq, before_seq, limit)
        return Response(orjson.dumps(page), media_type="application/json")

    @app.post("/api/files", status_code=201, tags=["files"])
    async def upload(self, request: Request) -> dict:
        """multipart/form-data with one field `file`; 413 over the limit, 415 for refused types."""
        uid = await self._uid(request)
        data, filename = await _multipart_file(request, self._settings.max_upload_bytes)
        return await call(self._web.upload.remote(uid, data, filename))

    @app.get("/api/files/{file_id}", tags=["files"])
    async def download(self, file_id: str, request: Request) -> Response:
        """A redirect to a short-lived object-store URL, or the bytes (embedded store)."""
        return _file_response(await call(self._web.download.remote(await self._uid(request), file_id)))

    @app.post("/api/groups", status_code=201, tags=["groups"])
    async def create_group(self, body: NewGroup, request: Request) -> dict:
        user = await self._user(request)
        return await call(self._web.create_group.remote(user.user_id, body.name, body.members))

    @app.get("/api/groups/{group_id}", tags=["groups"])
    async def get_group(self, group_id: int, request: Request) -> dict:
        return await call(self._web.get_group.remote(await self._uid(request), group_id))

    @app.post("/api/groups/{group_id}/members", tags=["groups"])
    async def add_members(self, group_id: int, body: NewMembers, request: Request) -> dict:
        user = await self._user(request)
        return await call(self._web.add_members.remote(user.user_id, group_id, body.user_ids))

    @app.delete("/api/groups/{group_id}/members/{member_id}", status_code=204, tags=["groups"])
    async def remove_member(self, group_id: int, member_id: int, request: Request) -> Response:
        user = await self._user(request)
        await call(self._web.remove_member.remote(user.user_id, group_id, member_id))
        return Response(status_code=204)

