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
from fastapi import FastAPI, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

from imray.adapters.nacos import GATEWAY_SERVICE
from imray.adapters.rate_limits import RateLimit, RateLimiter, SharedRateLimiter
from imray.backends import Backends
from imray.deployments import authorize_page
from imray.deployments.account_models import (
    AccountDeletion,
    LoginList,
    LoginPath,
    LoginsEnded,
    PasswordChange,
    PrefixQuery,
    ProfileChange,
    SearchAfter,
    SearchLimit,
    UserAnswer,
    UserPage,
)
from imray.deployments.common import call
from imray.deployments.contact_models import (
    ContactList,
    ContactPresenceList,
    ContactRequests,
    ContactStateAnswer,
    NewContactRequest,
    Privacy,
)
from imray.deployments.contacts import ContactsApi
from imray.deployments.conversation_models import (
    ConversationEntry,
    ConversationSettingsAnswer,
    ConversationSettingsChange,
    ListAfter,
    ListLimit,
)
from imray.deployments.group_models import GroupAnswer, GroupChange, MuteChange, OwnerChange, RoleChange
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
from imray.deployments.lifecycle_api import MessageLifecycle
from imray.deployments.lifecycle_models import ChangeAnswer, Edit, Reaction, Recall, SeqPath
from imray.deployments.limits import BodyLimit
from imray.deployments.readiness import Readiness
from imray.deployments.server_api import ServerApi
from imray.deployments.server_models import (
    AsUser,
    ConvPath,
    ServerAccountChange,
    ServerGroup,
    ServerNewGroup,
    ServerNewMembers,
    ServerNewUser,
    ServerPassword,
    ServerPresence,
    ServerSend,
    ServerSent,
    ServerUser,
    UsernameQuery,
    add_scope_error_handler,
)
from imray.deployments.webapp import same_origin_download, webapp_response
from imray.domain.authorization_code import Refusal, csrf_ok
from imray.domain.errors import Unauthorized
from imray.domain.scopes import (
    CONVERSATIONS_ADMIN,
    KNOWN_SCOPES,
    MESSAGES_SEND,
    PRESENCE_READ,
    USERS_ADMIN,
    USERS_READ,
    ServerClient,
)
from imray.domain.tokens import Principal
from imray.heap import freeze_startup_heap
from imray.logs import tag_serve_records
from imray.settings import Settings

log = logging.getLogger("imray.gateway")
app = FastAPI(title="imray", version="0.1.0",
              description="Distributed instant messaging on Ray. Real time goes over the socket nodes.")
BODY_LIMIT = {"bytes": 1048576, "upload": 20 * 1048576}  # set from settings when the Gateway starts
UPLOAD_PATHS = ("/api/files", "/api/users/me/avatar")
REGISTER_WAIT_S = 10.0  # a replica serves without its registry entry rather than not start
TOKENS_REMEMBERED = 10000  # verified access tokens a replica keeps (about 1 KB each)


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def _body_limit(path: str) -> int:
    # Uploads may be larger than JSON bodies (multipart framing adds a little).
    return BODY_LIMIT["upload"] + 65536 if path.startswith(UPLOAD_PATHS) else BODY_LIMIT["bytes"]


app.add_middleware(BodyLimit, limit=_body_limit)
add_error_handlers(app)
add_scope_error_handler(app)


class IntrospectionForm(BaseModel):
    """RFC 7662 §2.1, sent as application/x-www-form-urlencoded; the caller authenticates as a
    confidential client with HTTP Basic or client_id + client_secret in the form."""

    token: str
    token_type_hint: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class IntrospectionAnswer(BaseModel):
    """RFC 7662 §2.2: only `active: false` for a token that is not active (whatever the reason)."""

    active: bool
    scope: str | None = None
    client_id: str | None = None
    sub: str | None = None
    exp: int | None = None
    iat: int | None = None
    iss: str | None = None
    token_type: str | None = None
    jti: str | None = None


class OAuthErrorAnswer(BaseModel):
    """RFC 6749 §5.2's error body."""

    error: str
    error_description: str | None = None


INTROSPECTION_BODY = {"requestBody": {"required": True, "content": {
    "application/x-www-form-urlencoded": {"schema": IntrospectionForm.model_json_schema()}}}}
INTROSPECTION_ERRORS: dict[int | str, dict] = {
    400: {"model": OAuthErrorAnswer, "description": "invalid_request: no token, two client authentications"},
    401: {"model": OAuthErrorAnswer, "description": "invalid_client: not an authenticated confidential client"},
    403: {"model": OAuthErrorAnswer, "description": "insufficient_scope: the client lacks the introspect scope"},
}


@serve.deployment
@serve.ingress(app)
class Gateway:
    async def __init__(self, auth: DeploymentHandle, users: DeploymentHandle,  # type: ignore[misc]  # Serve awaits it
                       web: DeploymentHandle, settings: Settings) -> None:
        self._auth, self._users, self._web = auth, users, web
        self._settings = settings
        self._backends = backends = Backends(settings, f"gateway-{os.getpid()}")
        self._keys = backends.keys()  # the keyring in settings.keys_path, followed as it rotates
        self._history = HistoryReader(backends.database())
        self._readiness = Readiness(backends.database(), backends.actors(), settings.shard_count,
                                    settings.socket_nodes)
        self._server = ServerApi(settings, backends, users, web)  # the /api/server routes
        self._contacts = ContactsApi(settings, backends)  # the /api/contacts routes (issue 18)
        self._lifecycle = MessageLifecycle(settings, backends)  # recall, edit, reactions, delete-for-me (issue 18)
        self._authenticator = backends.authenticator(remember=TOKENS_REMEMBERED)
        self._limiter = backends.rate_limit()  # follows Nacos's live settings
        # Issue 18, accounts: the username search's own, lower budget per user.
        self._searches: RateLimit = (SharedRateLimiter(settings.redis_url, settings.user_searches_per_minute)
                                     if settings.redis_url else RateLimiter(settings.user_searches_per_minute))
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
        tag_serve_records()
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

    async def _server_client(self, request: Request, scope: str) -> ServerClient:
        """The confidential client behind the bearer token, holding `scope` (401 without a token or
        for a revoked client, 403 with insufficient_scope for a user's token or a missing scope)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("a bearer token is required")
        principal = await self._authenticator.authenticate(token.strip())
        await self._rate(f"c:{principal.client_id}" if principal.user_id is None else f"u:{principal.user_id}")
        return await self._server.caller(principal, scope)

    async def _rate(self, caller: str) -> None:
        if not await self._limiter.check(caller):
            raise RateLimited("too many requests, slow down")

    async def _anonymous(self, request: Request) -> None:
        await self._rate(f"ip:{request.client.host if request.client else '-'}")

    # -- hot paths ----------------------------------------------------------------------------
    # Each request is matched against the routes in order, twice (Serve names its route for its
    # metrics, then FastAPI dispatches it), and the history route came 32nd. Measured (imray bench
    # --scenario http, embedded, same box): first, a read cost the gateway 800 µs of CPU instead of
    # 1,011, and a login 32.7 ms in all replicas instead of 35.1. The paths of every (re)connect first.

    @app.get("/api/conversations/{conv}/messages", tags=["conversations"])
    async def history(self, conv: str, request: Request,
                      after_seq: AfterSeq = None, before_seq: BeforeSeq = None,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
        """{"messages": [...]}, ascending seq (the hot path of every reconnect: encoded with orjson)."""
        page = await self._history.read(await self._uid(request), conv, after_seq, before_seq, limit)
        return Response(orjson.dumps(page), media_type="application/json")

    @app.get("/api/conversations", tags=["conversations"], response_model=list[ConversationEntry])
    async def conversations(self, request: Request, after: ListAfter = None, limit: ListLimit = 100) -> list[dict]:
        """Pinned first, then newest activity first; the next page starts `after` the last item's `cursor`."""
        return await call(self._web.conversations.remote(await self._uid(request), after, limit))

    @app.post("/oauth2/token", tags=["oauth2"])
    async def token(self, request: Request) -> JSONResponse:
        await self._anonymous(request)
        address = request.client.host if request.client else ""  # failed logins are also counted per address
        result = await call(self._auth.token.remote(*await oauth_form(request, "token"), address,
                                                    request.headers.get("user-agent", "")))  # a login's device
        return JSONResponse(result, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- discovery ----------------------------------------------------------------------------

    @app.get("/readyz", include_in_schema=False)
    async def readyz(self) -> JSONResponse:
        """503 while the database, every shard or every socket node does not answer (issue 20)."""
        seen = await self._readiness.check()
        return JSONResponse(seen.report(), status_code=200 if seen.ready else 503,
                            headers={"Cache-Control": "no-store"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/.well-known/jwks.json", tags=["oauth2"])
    async def jwks(self) -> dict:
        """Every key of the ring (the active one and those whose tokens may still be live)."""
        return {"keys": [k.jwk() for k in self._keys.current().public()]}

    @app.get("/.well-known/oauth-authorization-server", tags=["oauth2"])
    async def metadata(self) -> dict:
        base = self._settings.base_url
        # Exactly what works (tests/test_keys.py exercises each entry): nothing is listed ahead of its code.
        return {
            "issuer": base,
            "token_endpoint": f"{base}/oauth2/token",
            "revocation_endpoint": f"{base}/oauth2/revoke",
            "introspection_endpoint": f"{base}/oauth2/introspect",
            "authorization_endpoint": f"{base}/oauth2/authorize",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "grant_types_supported": ["password", "refresh_token", "client_credentials", "authorization_code"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": sorted(KNOWN_SCOPES),  # `chat` for people, the rest for confidential clients
            "service_documentation": f"{base}/docs",
        }

    # -- the web chat app (issue 19): its files, and file bytes for its fetches; not in the schema --

    @app.get("/app", include_in_schema=False)
    async def webapp_index(self) -> Response:
        return webapp_response("")

    @app.get("/app/files/{file_id}", include_in_schema=False)
    async def webapp_download(self, file_id: str, request: Request) -> Response:
        """GET /api/files/{file_id}'s bytes, never a redirect: what the app's fetch can read."""
        return await same_origin_download(await call(self._web.download.remote(await self._uid(request), file_id)))

    @app.get("/app/users/{user_id}/avatar", include_in_schema=False)
    async def webapp_avatar(self, user_id: IdPath, request: Request) -> Response:
        """GET /api/users/{user_id}/avatar's bytes, never a redirect (as /app/files for files)."""
        await self._user(request)
        return await same_origin_download(await call(self._users.avatar.remote(user_id)))

    @app.get("/app/{path:path}", include_in_schema=False)
    async def webapp_file(self, path: str) -> Response:
        return webapp_response(path)

    # -- OAuth2 -------------------------------------------------------------------------------

    @app.post("/oauth2/revoke", tags=["oauth2"])
    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoke a refresh token, and with it its login's access tokens (log out)."""
        await self._anonymous(request)
        await call(self._auth.revoke.remote(*await oauth_form(request, "revocation")))
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    @app.post("/oauth2/introspect", tags=["oauth2"], response_model=IntrospectionAnswer,
              responses=INTROSPECTION_ERRORS, openapi_extra=INTROSPECTION_BODY)
    async def introspect(self, request: Request) -> JSONResponse:
        """RFC 7662 for resource servers: is this access token active, and whose is it? 401 invalid_client
        unless the caller authenticates as a confidential client."""
        await self._anonymous(request)
        result = await call(self._auth.introspect.remote(*await oauth_form(request, "introspection")))
        return JSONResponse(result, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @app.get("/oauth2/authorize", tags=["oauth2"], response_class=HTMLResponse, responses=authorize_page.RESPONSES)
    async def authorize(self, query: Annotated[authorize_page.AuthorizeQuery, Query()], request: Request) -> Response:
        """Authorization code with PKCE (RFC 6749 §4.1, RFC 7636 S256 only): the login and consent page.
        An unknown client or redirect URI is shown, never redirected; other errors go back to the client."""
        await self._anonymous(request)
        twice = authorize_page.repeated(request.query_params.multi_items())
        if twice:
            return authorize_page.refusal(Refusal("invalid_request", f"{twice} is given twice"), request)
        outcome = await call(self._auth.authorize_page.remote(query.params()))
        return authorize_page.respond(outcome, request, self._settings.base_url.startswith("https:"))

    @app.post("/oauth2/authorize", tags=["oauth2"], response_class=HTMLResponse, responses=authorize_page.RESPONSES)
    async def authorize_submit(self, form: Annotated[authorize_page.AuthorizeForm, Form()],
                               request: Request) -> Response:
        """The page's form (application/x-www-form-urlencoded): 303 to the client with a code once the
        user signs in and allows it; the page again after a wrong password."""
        await self._anonymous(request)
        params = form.params()
        if not csrf_ok(request.cookies.get(authorize_page.COOKIE), form.csrf_token, params):
            return authorize_page.refusal(Refusal(
                "invalid_request", "the form's CSRF token is missing or wrong: open the authorization link again",
                403), request)
        address = request.client.host if request.client else ""  # failed logins are also counted per address
        outcome = await call(self._auth.authorize.remote(params, address))
        return authorize_page.respond(outcome, request, self._settings.base_url.startswith("https:"))

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

    # -- a user's own account (issue 18, docs/protocol.md "Accounts and logins") -----------------

    @app.get("/api/users", tags=["accounts"], response_model=UserPage)
    async def search_users(self, prefix: PrefixQuery, request: Request, after: SearchAfter = 0,
                           limit: SearchLimit = 20) -> dict:
        """Users whose username starts with `prefix` (case ignored), by id; disabled and deleted
        accounts never show. A budget of its own per user (429 beyond it)."""
        uid = await self._uid(request)
        if not await self._searches.check(f"search:u:{uid}"):
            raise RateLimited("too many searches, slow down")
        found = await call(self._users.search.remote(prefix, after, limit))
        return {"users": found, "next_after": found[-1]["id"] if len(found) == limit else None}

    @app.patch("/api/users/me", tags=["accounts"], response_model=UserAnswer)
    async def edit_profile(self, body: ProfileChange, request: Request) -> dict:
        return dict(await call(self._users.set_nickname.remote(await self._uid(request), body.nickname)))

    @app.put("/api/users/me/password", tags=["accounts"], response_model=LoginsEnded)
    async def change_password(self, body: PasswordChange, request: Request) -> dict:
        """Needs the current password (a wrong one counts as a failed login: 403, then 429). Every
        other login ends (sockets closed 4001); the one of this token goes on."""
        user = await self._user(request)
        ended = await call(self._users.change_password.remote(
            user.user_id, user.family, body.current_password, body.new_password, _address(request)))
        return {"logins_ended": ended}

    @app.get("/api/users/me/logins", tags=["accounts"], response_model=LoginList)
    async def logins(self, request: Request) -> dict:
        user = await self._user(request)
        return {"logins": await call(self._users.logins.remote(user.user_id, user.family))}

    @app.delete("/api/users/me/logins", tags=["accounts"], response_model=LoginsEnded)
    async def end_logins(self, request: Request) -> dict:
        """Log out everywhere: every login ends, this one too (sockets closed 4001)."""
        return {"logins_ended": await call(self._users.end_logins.remote(await self._uid(request)))}

    @app.delete("/api/users/me/logins/{login_id}", status_code=204, tags=["accounts"])
    async def end_login(self, login_id: LoginPath, request: Request) -> Response:
        """End one login (its sockets closed 4001); 404 unless it is a live login of yours."""
        await call(self._users.end_login.remote(await self._uid(request), login_id))
        return Response(status_code=204)

    @app.delete("/api/users/me", status_code=204, tags=["accounts"])
    async def delete_account(self, body: AccountDeletion, request: Request) -> Response:
        """Needs the password. Every login ends; the username is freed; messages stay (their sender
        reads as a deleted user)."""
        uid = await self._uid(request)
        await call(self._users.delete_account.remote(uid, body.password, _address(request)))
        return Response(status_code=204)

    # -- conversations and groups -------------------------------------------------------------

    @app.put("/api/conversations/{conv}/settings", tags=["conversations"], response_model=ConversationSettingsAnswer)
    async def conversation_settings(self, conv: ConvPath, body: ConversationSettingsChange, request: Request) -> dict:
        """The caller's own pin and mute of a conversation they are part of."""
        return await call(self._web.conversation_settings.remote(await self._uid(request), conv, body.pinned,
                                                                 body.muted))

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

    @app.post("/api/groups", status_code=201, tags=["groups"], response_model=GroupAnswer)
    async def create_group(self, body: NewGroup, request: Request) -> dict:
        """The caller owns the new group; its "created" event is seq 1 of the conversation."""
        user = await self._user(request)
        return await call(self._web.create_group.remote(user.user_id, body.name, body.members))

    @app.get("/api/groups/{group_id}", tags=["groups"], response_model=GroupAnswer)
    async def get_group(self, group_id: IdPath, request: Request) -> dict:
        return await call(self._web.get_group.remote(await self._uid(request), group_id))

    @app.post("/api/groups/{group_id}/members", tags=["groups"], response_model=GroupAnswer)
    async def add_members(self, group_id: IdPath, body: NewMembers, request: Request) -> dict:
        """Owner and admins add; members too while add_policy is "everyone"."""
        user = await self._user(request)
        return await call(self._web.add_members.remote(user.user_id, group_id, body.user_ids))

    @app.delete("/api/groups/{group_id}/members/{member_id}", status_code=204, tags=["groups"])
    async def remove_member(self, group_id: IdPath, member_id: IdPath, request: Request) -> Response:
        """Anyone leaves (their own id); the owner removes anyone; admins remove plain members."""
        user = await self._user(request)
        await call(self._web.remove_member.remote(user.user_id, group_id, member_id))
        return Response(status_code=204)

    # -- group administration (issue 18, docs/protocol.md §10) -----------------------------------

    @app.patch("/api/groups/{group_id}", tags=["groups"], response_model=GroupAnswer)
    async def update_group(self, group_id: IdPath, body: GroupChange, request: Request) -> dict:
        """Rename, describe, set add_policy or muted_all: the owner and admins."""
        user = await self._user(request)
        return await call(self._web.update_group.remote(user.user_id, group_id, body.model_dump()))

    @app.put("/api/groups/{group_id}/members/{member_id}/role", tags=["groups"], response_model=GroupAnswer)
    async def set_group_role(self, group_id: IdPath, member_id: IdPath, body: RoleChange, request: Request) -> dict:
        """The owner makes a member an admin, or an admin a member."""
        user = await self._user(request)
        return await call(self._web.set_role.remote(user.user_id, group_id, member_id, body.role))

    @app.put("/api/groups/{group_id}/members/{member_id}/mute", tags=["groups"], response_model=GroupAnswer)
    async def set_group_mute(self, group_id: IdPath, member_id: IdPath, body: MuteChange, request: Request) -> dict:
        """The owner mutes anyone but itself, an admin plain members: a muted member reads, not writes."""
        user = await self._user(request)
        return await call(self._web.set_muted.remote(user.user_id, group_id, member_id, body.muted))

    @app.post("/api/groups/{group_id}/owner", tags=["groups"], response_model=GroupAnswer)
    async def transfer_group(self, group_id: IdPath, body: OwnerChange, request: Request) -> dict:
        """The owner hands the group to another member and becomes an admin."""
        user = await self._user(request)
        return await call(self._web.transfer_ownership.remote(user.user_id, group_id, body.user_id))

    @app.delete("/api/groups/{group_id}", status_code=204, tags=["groups"])
    async def dissolve_group(self, group_id: IdPath, request: Request) -> Response:
        """The owner dissolves the group: members keep reading its history; nobody writes or changes it."""
        user = await self._user(request)
        await call(self._web.dissolve_group.remote(user.user_id, group_id))
        return Response(status_code=204)

    # -- contacts and their presence (issue 18, docs/protocol.md §5) ---------------------------

    @app.get("/api/contacts", tags=["contacts"], response_model=ContactList)
    async def contact_list(self, request: Request) -> dict:
        return {"contacts": await self._contacts.contacts(await self._uid(request))}

    @app.delete("/api/contacts/{other_id}", status_code=204, tags=["contacts"])
    async def remove_contact(self, other_id: IdPath, request: Request) -> Response:
        """Both sides stop being contacts (404 if they are not)."""
        await self._contacts.remove(await self._uid(request), other_id)
        return Response(status_code=204)

    @app.get("/api/contacts/requests", tags=["contacts"], response_model=ContactRequests)
    async def contact_requests(self, request: Request) -> dict:
        """Pending requests: received (from others to you) and sent, oldest first."""
        return dict(await self._contacts.requests(await self._uid(request)))

    @app.post("/api/contacts/requests", tags=["contacts"], response_model=ContactStateAnswer)
    async def contact_request(self, body: NewContactRequest, request: Request) -> dict:
        """Ask to become contacts; a repeat changes nothing; a request to someone who asked you
        first accepts theirs. 403 across a block, 409 over a pending cap, 429 over the rate."""
        return dict(await self._contacts.request(await self._uid(request), body.user_id, body.message))

    @app.post("/api/contacts/requests/{other_id}/accept", tags=["contacts"], response_model=ContactStateAnswer)
    async def accept_contact(self, other_id: IdPath, request: Request) -> dict:
        return dict(await self._contacts.accept(await self._uid(request), other_id))

    @app.post("/api/contacts/requests/{other_id}/decline", status_code=204, tags=["contacts"])
    async def decline_contact(self, other_id: IdPath, request: Request) -> Response:
        await self._contacts.decline(await self._uid(request), other_id)
        return Response(status_code=204)

    @app.delete("/api/contacts/requests/{other_id}", status_code=204, tags=["contacts"])
    async def cancel_contact(self, other_id: IdPath, request: Request) -> Response:
        """Withdraw your pending request to this user."""
        await self._contacts.cancel(await self._uid(request), other_id)
        return Response(status_code=204)

    @app.get("/api/contacts/presence", tags=["contacts"], response_model=ContactPresenceList)
    async def contact_presence(self, request: Request) -> dict:
        """Your contacts online or not, and last seen, as each of them allows."""
        return {"contacts": await self._contacts.presence(await self._uid(request))}

    @app.get("/api/users/me/privacy", tags=["contacts"], response_model=Privacy)
    async def privacy(self, request: Request) -> dict:
        return {"show_presence": await self._contacts.privacy(await self._uid(request))}

    @app.put("/api/users/me/privacy", tags=["contacts"], response_model=Privacy)
    async def set_privacy(self, body: Privacy, request: Request) -> dict:
        return {"show_presence": await self._contacts.set_privacy(await self._uid(request), body.show_presence)}

    # -- message lifecycle (issue 18, docs/protocol.md §9) --------------------------------------

    @app.post("/api/conversations/{conv}/messages/{seq}/recall", tags=["messages"], response_model=ChangeAnswer)
    async def recall_message(self, conv: ConvPath, seq: SeqPath, request: Request, body: Recall | None = None) -> dict:
        """The sender within recall_window_s of sending, a group's owner or admins any time: the
        message reads as recalled (body gone) and a `recall` event follows it in the stream."""
        key = body.id if body is not None else None
        return dict(await self._lifecycle.change(await self._uid(request), conv, seq, "recall", key))

    @app.put("/api/conversations/{conv}/messages/{seq}", tags=["messages"], response_model=ChangeAnswer)
    async def edit_message(self, conv: ConvPath, seq: SeqPath, body: Edit, request: Request) -> dict:
        """The sender replaces a text message's body (shown `edited`); an `edit` event follows."""
        return dict(await self._lifecycle.change(await self._uid(request), conv, seq, "edit", body.id, body=body.body))

    @app.put("/api/conversations/{conv}/messages/{seq}/reactions", tags=["messages"], response_model=ChangeAnswer)
    async def react(self, conv: ConvPath, seq: SeqPath, body: Reaction, request: Request) -> dict:
        """Add your reaction (a repeat changes nothing: `changed` false); at most max_reactions
        different emoji on a message."""
        return dict(await self._lifecycle.change(await self._uid(request), conv, seq, "react", body.id,
                                                 emoji=body.emoji))

    @app.delete("/api/conversations/{conv}/messages/{seq}/reactions", tags=["messages"], response_model=ChangeAnswer)
    async def unreact(self, conv: ConvPath, seq: SeqPath, body: Reaction, request: Request) -> dict:
        """Take your reaction back (none there: `changed` false). The emoji goes in the JSON body."""
        return dict(await self._lifecycle.change(await self._uid(request), conv, seq, "unreact", body.id,
                                                 emoji=body.emoji))

    @app.delete("/api/conversations/{conv}/messages/{seq}", status_code=204, tags=["messages"])
    async def delete_for_me(self, conv: ConvPath, seq: SeqPath, request: Request) -> Response:
        """Delete a message from your own view: your history shows it as a `deleted` placeholder and
        your live sessions get a `deleted` frame; nobody else sees anything. A repeat changes nothing."""
        await self._lifecycle.delete_for_me(await self._uid(request), conv, seq)
        return Response(status_code=204)

    # -- server API: confidential clients only, one scope per operation (docs/protocol.md §6) ----

    @app.post("/api/server/conversations/{conv}/messages", tags=["server"], response_model=ServerSent)
    async def server_send(self, conv: ConvPath, body: ServerSend, request: Request) -> dict:
        """Send a text message as the client's bot (scope messages:send); stored and delivered like a user's."""
        client = await self._server_client(request, MESSAGES_SEND)
        return dict(await self._server.send(client, conv, body.idempotency_key, body.body))

    @app.post("/api/server/users", status_code=201, tags=["server"], response_model=ServerUser)
    async def server_create_user(self, body: ServerNewUser, request: Request) -> dict:
        await self._server_client(request, USERS_ADMIN)
        return dict(await self._server.create_user(body.username, body.password, body.nickname))

    @app.get("/api/server/users", tags=["server"], response_model=ServerUser)
    async def server_user_by_name(self, username: UsernameQuery, request: Request) -> dict:
        await self._server_client(request, USERS_READ)
        return dict(await self._server.user_by_name(username))

    @app.get("/api/server/users/{user_id}", tags=["server"], response_model=ServerUser)
    async def server_user(self, user_id: IdPath, request: Request) -> dict:
        await self._server_client(request, USERS_READ)
        return dict(await self._server.user(user_id))

    @app.post("/api/server/users/{user_id}/disable", tags=["server"], response_model=ServerAccountChange)
    async def server_disable(self, user_id: IdPath, request: Request) -> dict:
        """Every login ended (sockets closed 4001) and every grant refused until enabled."""
        await self._server_client(request, USERS_ADMIN)
        return dict(await self._server.set_disabled(user_id, True))

    @app.post("/api/server/users/{user_id}/enable", tags=["server"], response_model=ServerAccountChange)
    async def server_enable(self, user_id: IdPath, request: Request) -> dict:
        await self._server_client(request, USERS_ADMIN)
        return dict(await self._server.set_disabled(user_id, False))

    @app.post("/api/server/users/{user_id}/kick", tags=["server"], response_model=ServerAccountChange)
    async def server_kick(self, user_id: IdPath, request: Request) -> dict:
        """End every login of the user (sockets closed 4001); they may log in again."""
        await self._server_client(request, USERS_ADMIN)
        return dict(await self._server.kick(user_id))

    @app.put("/api/server/users/{user_id}/password", tags=["server"], response_model=ServerAccountChange)
    async def server_reset_password(self, user_id: IdPath, body: ServerPassword, request: Request) -> dict:
        """Set a new password and end every login of the user."""
        await self._server_client(request, USERS_ADMIN)
        return dict(await self._server.reset_password(user_id, body.password))

    @app.get("/api/server/users/{user_id}/presence", tags=["server"], response_model=ServerPresence)
    async def server_presence(self, user_id: IdPath, request: Request) -> dict:
        await self._server_client(request, PRESENCE_READ)
        return dict(await self._server.presence(user_id))

    @app.post("/api/server/groups", status_code=201, tags=["server"], response_model=ServerGroup)
    async def server_create_group(self, body: ServerNewGroup, request: Request) -> dict:
        """A group created on behalf of `owner_id`, under the group rules (blocks included)."""
        await self._server_client(request, CONVERSATIONS_ADMIN)
        return dict(await self._server.create_group(body.owner_id, body.name, body.members))

    @app.post("/api/server/groups/{group_id}/members", tags=["server"], response_model=ServerGroup)
    async def server_add_members(self, group_id: IdPath, body: ServerNewMembers, request: Request) -> dict:
        await self._server_client(request, CONVERSATIONS_ADMIN)
        return dict(await self._server.add_members(body.as_user, group_id, body.user_ids))

    @app.delete("/api/server/groups/{group_id}/members/{member_id}", status_code=204, tags=["server"])
    async def server_remove_member(self, group_id: IdPath, member_id: IdPath, as_user: AsUser,
                                   request: Request) -> Response:
        await self._server_client(request, CONVERSATIONS_ADMIN)
        await self._server.remove_member(as_user, group_id, member_id)
        return Response(status_code=204)
