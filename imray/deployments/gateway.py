"""Gateway: the HTTP ingress. Routing, bearer-token checks, rate and size limits, then the services.

No `from __future__ import annotations` here: FastAPI reads these annotations at runtime. Module
helpers stand above the deployment class: Serve serializes the class when it is decorated.
"""


import asyncio
import logging
import os
from typing import Annotated
from urllib.parse import urlsplit

import orjson
import ray
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from imray.adapters.nacos import GATEWAY_SERVICE
from imray.backends import Backends
from imray.deployments.common import call
from imray.deployments.history import HistoryReader
from imray.deployments.http import (
    AfterSeq,
    BeforeSeq,
    ClientTokenRefused,
    IdPath,
    NewGroup,
    NewMembers,
    RateLimited,
    Registration,
    add_error_handlers,
    file_response,
    multipart_file,
    oauth_form,
)
from imray.deployments.limits import BodyLimit
from imray.domain.errors import Unauthorized
from imray.domain.oauth import OAuthError
from imray.domain.tokens import Principal, PublicKey
from imray.heap import freeze_startup_heap
from imray.settings import Settings

log = logging.getLogger("imray.gateway")
app = FastAPI(title="imray", version="0.1.0",
              description="Distributed instant messaging on Ray. Real time goes over the socket nodes.")
BODY_LIMIT = {"bytes": 1048576, "upload": 20 * 1048576}  # set from settings when the Gateway starts
UPLOAD_PATHS = ("/api/files", "/api/users/me/avatar")
REGISTER_WAIT_S = 10.0  # a replica serves without its registry entry rather than not start
TOKENS_REMEMBERED = 10000  # verified access tokens a replica keeps (about 1 KB each)


def _body_limit(path: str) -> int:
    # Uploads may be larger than JSON bodies (multipart framing adds a little).
    return BODY_LIMIT["upload"] + 65536 if path.startswith(UPLOAD_PATHS) else BODY_LIMIT["bytes"]


app.add_middleware(BodyLimit, limit=_body_limit)
add_error_handlers(app)


@serve.deployment
@serve.ingress(app)
class Gateway:
    async def __init__(self, auth: DeploymentHandle, users: DeploymentHandle,  # type: ignore[misc]  # Serve awaits it
                       web: DeploymentHandle, settings: Settings, keys: list[PublicKey]) -> None:
        self._auth, self._users, self._web = auth, users, web
        self._settings = settings
        self._keys = keys
        self._backends = backends = Backends(settings, f"gateway-{os.getpid()}")
        self._history = HistoryReader(backends.database())
        self._authenticator = backends.authenticator(keys, remember=TOKENS_REMEMBERED)
        self._limiter = backends.rate_limit()  # follows Nacos's live settings
        # Listed where clients reach HTTP (the public URL: Serve's ingress on the head, or a proxy in
        # front), not where this replica runs: replicas on other nodes take no requests from outside.
        entry = urlsplit(settings.base_url)
        self._registration = backends.registration(
            GATEWAY_SERVICE, entry.hostname or settings.http_host,
            entry.port or (443 if entry.scheme == "https" else 80))
        BODY_LIMIT["bytes"] = settings.max_body_bytes
        BODY_LIMIT["upload"] = max(settings.max_upload_bytes, settings.max_avatar_bytes)
        await self.start()
        freeze_startup_heap()

    async def start(self) -> None:
        """Follow the live settings (and revoked logins), then appear in the registry."""
        await self._backends.start()
        try:
            await asyncio.wait_for(self._registration.register(
                {"pid": str(os.getpid()), "url": self._settings.base_url,
                 "replica_node_ip": ray.util.get_node_ip_address()}), REGISTER_WAIT_S)
        except Exception as exc:  # a replica the registry does not show still serves
            log.warning("gateway: Nacos unavailable: %r", exc)

    async def stop(self) -> None:
        """Leave the registry and tear down what `start` and the backends set up."""
        await self._backends.stop()

    async def __del__(self) -> None:
        await self.stop()

    # -- edge checks --------------------------------------------------------------------------

    async def _user(self, request: Request) -> Principal:
        """The verified user behind the bearer token (401 without one, 403 for a client token)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("a bearer token is required")
        principal = await self._authenticator.user(token.strip(), not_a_user=ClientTokenRefused)
        await self._rate(f"u:{principal.user_id}")
        return principal

    async def _uid(self, request: Request) -> int:
        user_id = (await self._user(request)).user_id
        assert user_id is not None  # a user's token
        return user_id

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
        address = request.client.host if request.client else ""  # failed logins are also counted per address
        result = await call(self._auth.token.remote(*await oauth_form(request, "token"), address))
        return JSONResponse(result, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @app.post("/oauth2/revoke", tags=["oauth2"])
    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoke a refresh token, and with it its login's access tokens (log out)."""
        await self._anonymous(request)
        await call(self._auth.revoke.remote(*await oauth_form(request, "revocation")))
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
    async def block(self, other_id: IdPath, request: Request) -> Response:
        await call(self._users.block.remote(await self._uid(request), other_id, True))
        return Response(status_code=204)

    @app.delete("/api/users/me/blocks/{other_id}", status_code=204, tags=["users"])
    async def unblock(self, other_id: IdPath, request: Request) -> Response:
        await call(self._users.block.remote(await self._uid(request), other_id, False))
        return Response(status_code=204)

    @app.put("/api/users/me/avatar", tags=["users"])
    async def set_avatar(self, request: Request) -> dict:
        """The image as the raw body (image/*) or as multipart field `file`; its type is sniffed."""
        uid = await self._uid(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data, _ = await multipart_file(request, self._settings.max_avatar_bytes)
        else:
            data = await request.body()
        return await call(self._users.set_avatar.remote(uid, data))

    @app.get("/api/users/{user_id}/avatar", tags=["users"])
    async def avatar(self, user_id: IdPath, request: Request) -> Response:
        await self._user(request)
        return file_response(await call(self._users.avatar.remote(user_id)))

    @app.get("/api/users/{user_id}", tags=["users"])
    async def user(self, user_id: IdPath, request: Request) -> dict:
        await self._user(request)
        return await call(self._users.get.remote(user_id))

    # -- conversations and groups -------------------------------------------------------------

    @app.get("/api/conversations", tags=["conversations"])
    async def conversations(self, request: Request) -> list[dict]:
        return await call(self._web.conversations.remote(await self._uid(request)))

    @app.get("/api/conversations/{conv}/messages", tags=["conversations"])
    async def history(self, conv: str, request: Request,
                      after_seq: AfterSeq = None, before_seq: BeforeSeq = None,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
        """{"messages": [...]}, ascending seq (the hot path of every reconnect: encoded with orjson)."""
        page = await self._history.read(await self._uid(request), conv, after_seq, before_seq, limit)
        return Response(orjson.dumps(page), media_type="application/json")

    @app.post("/api/files", status_code=201, tags=["files"])
    async def upload(self, request: Request) -> dict:
        """multipart/form-data with one field `file`; 413 over the limit, 415 for refused types."""
        uid = await self._uid(request)
        data, filename = await multipart_file(request, self._settings.max_upload_bytes)
        return await call(self._web.upload.remote(uid, data, filename))

    @app.get("/api/files/{file_id}", tags=["files"])
    async def download(self, file_id: str, request: Request) -> Response:
        """A redirect to a short-lived object-store URL, or the bytes (embedded store)."""
        return file_response(await call(self._web.download.remote(await self._uid(request), file_id)))

    @app.delete("/api/files/{file_id}", status_code=204, tags=["files"])
    async def delete_file(self, file_id: str, request: Request) -> Response:
        """The owner deletes an upload (not an avatar), freeing its room in their storage quota."""
        await call(self._web.delete_file.remote(await self._uid(request), file_id))
        return Response(status_code=204)

    @app.post("/api/groups", status_code=201, tags=["groups"])
    async def create_group(self, body: NewGroup, request: Request) -> dict:
        user = await self._user(request)
        return await call(self._web.create_group.remote(user.user_id, body.name, body.members))

    @app.get("/api/groups/{group_id}", tags=["groups"])
    async def get_group(self, group_id: IdPath, request: Request) -> dict:
        return await call(self._web.get_group.remote(await self._uid(request), group_id))

    @app.post("/api/groups/{group_id}/members", tags=["groups"])
    async def add_members(self, group_id: IdPath, body: NewMembers, request: Request) -> dict:
        user = await self._user(request)
        return await call(self._web.add_members.remote(user.user_id, group_id, body.user_ids))

    @app.delete("/api/groups/{group_id}/members/{member_id}", status_code=204, tags=["groups"])
    async def remove_member(self, group_id: IdPath, member_id: IdPath, request: Request) -> Response:
        user = await self._user(request)
        await call(self._web.remove_member.remote(user.user_id, group_id, member_id))
        return Response(status_code=204)

