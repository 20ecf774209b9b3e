"""Gateway: the HTTP ingress. Routing, bearer-token checks, rate and size limits, then the services.

No `from __future__ import annotations` here: FastAPI reads these annotations at runtime. Module
helpers stand above the deployment class: Serve serializes the class when it is decorated.
"""


import base64
import binascii
import logging
from typing import Annotated

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from ray import serve
from ray.exceptions import RayError
from ray.serve.handle import DeploymentHandle

from imray.deployments.auth import OAuthError
from imray.deployments.common import call
from imray.deployments.limits import BodyLimit, RateLimiter, SharedRateLimiter
from imray.domain.errors import DomainError, Forbidden, Unauthorized
from imray.domain.tokens import Principal, PublicKey, TokenVerifier
from imray.settings import Settings

log = logging.getLogger("imray.gateway")
app = FastAPI(title="imray", version="0.1.0",
              description="Distributed instant messaging on Ray. Real time goes over the socket nodes.")
BODY_LIMIT = {"bytes": 1048576}  # set from settings when the Gateway replica starts
app.add_middleware(BodyLimit, limit=lambda: BODY_LIMIT["bytes"])


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


@serve.deployment
@serve.ingress(app)
class Gateway:
    def __init__(self, auth: DeploymentHandle, users: DeploymentHandle, web: DeploymentHandle,
                 settings: Settings, keys: list[PublicKey]) -> None:
        self._auth, self._users, self._web = auth, users, web
        self._settings = settings
        self._keys = keys
        self._verifier = TokenVerifier(keys, settings.base_url)
        self._limiter = (SharedRateLimiter(settings.redis_url, settings.rate_limit_per_minute) if settings.redis_url
                         else RateLimiter(settings.rate_limit_per_minute))
        BODY_LIMIT["bytes"] = settings.max_body_bytes

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
        await self._rate(f"u:{principal.user_id}")
        return principal

    async def _uid(self, request: Request) -> int:
        return (await self._user(request)).user_id

    async def _rate(self, caller: str) -> None:
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
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise OAuthError("invalid_request", "the token endpoint takes application/x-www-form-urlencoded")
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        basic = _basic_credentials(request.headers.get("authorization", ""))
        result = await call(self._auth.token.remote(fields, basic))
        return JSONResponse(result, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

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
                      limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
        user = await self._user(request)
        return await call(self._web.history.remote(user.user_id, conv, after_seq, before_seq, limit))

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

