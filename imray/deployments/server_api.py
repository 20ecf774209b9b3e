"""The server API's work, in the gateway's process: confidential clients acting on users, groups and conversations.

Scopes and senders are `domain.scopes`' decisions; accounts are changed in the database (one
transaction each) and logins revoked through the same machinery as a log-out (`revocations`), so
socket nodes close the sessions within their follower's second. Sends go to the owning shard
through Ray and are committed and delivered like a socket's.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

import orjson
from ray.serve.handle import DeploymentHandle
from sqlalchemy.engine import Connection

from imray.adapters.named_actors import ActorMissing
from imray.backends import Backends
from imray.deployments.common import call
from imray.domain.conversations import parse_conv
from imray.domain.errors import Forbidden, NotFound, Unauthorized, Unavailable
from imray.domain.groups import Group
from imray.domain.messaging import SendItem, check_send
from imray.domain.scopes import SYSTEM_SESSION, ServerClient, check_idempotency_key, outcome_error, require, sender_of
from imray.domain.tokens import Principal
from imray.settings import Settings
from imray.storage import admin
from imray.storage.admin import AdminUser

CLIENTS_REMEMBERED = 1000


class Sent(TypedDict):
    msg_id: str
    conv: str
    seq: int
    ts: int
    sender_id: int
    idempotency_key: str


class Presence(TypedDict):
    user_id: int
    online: bool
    nodes: list[str]


class LoginsEnded(TypedDict):
    user: AdminUser
    logins_ended: int


class ServerApi:
    def __init__(self, settings: Settings, backends: Backends, users: DeploymentHandle,
                 web: DeploymentHandle) -> None:
        self._settings, self._backends = settings, backends
        self._users, self._web = users, web
        self._db = backends.database()
        self._revoked = backends.revoked_logins()
        self._live = backends.live()
        # client id -> (what the database said, until when it is believed): a revoked client's
        # tokens stop working here within `server_client_check_s`.
        self._clients: dict[str, tuple[ServerClient | None, float]] = {}

    # -- who calls ------------------------------------------------------------------------------

    async def caller(self, principal: Principal, scope: str) -> ServerClient:
        """The client behind a verified token, if it carries `scope` and is not revoked."""
        require(principal, scope)
        client = await self._client(principal.client_id)
        if client is None or client.revoked:
            raise Unauthorized("this client was revoked")
        return client

    async def _client(self, client_id: str) -> ServerClient | None:
        now = time.monotonic()
        known = self._clients.get(client_id)
        if known is not None and known[1] > now:
            return known[0]
        found = await self._db.run(lambda c: admin.server_client(c, client_id))
        if len(self._clients) >= CLIENTS_REMEMBERED:
            self._clients.clear()
        self._clients[client_id] = (found, now + self._settings.server_client_check_s)
        return found

    # -- messages -------------------------------------------------------------------------------

    async def send(self, client: ServerClient, conv: str, key: str, body: str) -> Sent:
        """A text message from the client's bot; the same key again gets the same message."""
        sender = sender_of(client)
        check_idempotency_key(key)
        parse_conv(conv)
        check_send("text", body, None, self._live.max_text_length)
        try:
            shard = self._backends.actors().owner_of(conv)
        except ActorMissing:
            raise Unavailable("service temporarily unavailable") from None
        outcomes = await shard.send.remote([SendItem(sender, SYSTEM_SESSION, key, conv, "text", body)])
        outcome = outcomes[0]
        if outcome.error is not None:
            raise outcome_error(*outcome.error)
        assert outcome.ack is not None  # a send's outcome is an ack or an error
        ack: dict[str, Any] = orjson.loads(outcome.ack)
        return {"msg_id": ack["msg_id"], "conv": ack["conv"], "seq": ack["seq"], "ts": ack["ts"],
                "sender_id": sender, "idempotency_key": key}

    # -- users ----------------------------------------------------------------------------------

    async def create_user(self, username: str, password: str, nickname: str | None) -> AdminUser:
        created = await call(self._users.register.remote(username, password, nickname))
        return await self.user(created["id"])

    async def user(self, user_id: int) -> AdminUser:
        found = await self._db.run(lambda c: admin.user(c, user_id))
        if found is None:
            raise NotFound("no such user")
        return found

    async def user_by_name(self, username: str) -> AdminUser:
        found = await self._db.run(lambda c: admin.user_by_name(c, username))
        if found is None:
            raise NotFound("no such user")
        return found

    async def set_disabled(self, user_id: int, disabled: bool) -> LoginsEnded:
        """Disable (every login ended, every grant refused) or enable an account."""
        def change(conn: Connection) -> tuple[AdminUser, list[str]]:
            if admin.user(conn, user_id) is None:
                raise NotFound("no such user")
            admin.set_disabled(conn, user_id, disabled)
            families = admin.end_logins(conn, user_id, self._settings.access_token_ttl_s) if disabled else []
            changed = admin.user(conn, user_id)
            assert changed is not None  # in the same transaction
            return changed, families

        user, families = await self._db.run(change)
        await self._spread(families)
        return {"user": user, "logins_ended": len(families)}

    async def kick(self, user_id: int) -> LoginsEnded:
        """End every login of the user: their tokens stop working, their sockets close (4001)."""
        def end(conn: Connection) -> tuple[AdminUser, list[str]]:
            user = admin.user(conn, user_id)
            if user is None:
                raise NotFound("no such user")
            return user, admin.end_logins(conn, user_id, self._settings.access_token_ttl_s)

        user, families = await self._db.run(end)
        await self._spread(families)
        return {"user": user, "logins_ended": len(families)}

    async def reset_password(self, user_id: int, password: str) -> LoginsEnded:
        if (await self.user(user_id))["bot"]:
            raise Forbidden("a bot account has no password")
        await call(self._users.set_password.remote(user_id, password))
        return await self.kick(user_id)

    async def _spread(self, families: list[str]) -> None:
        """The database has the revocations: tell Redis and this process now (followers read them within a second)."""
        for family in families:
            await self._revoked.revoke(family, self._settings.access_token_ttl_s)

    async def presence(self, user_id: int) -> Presence:
        await self.user(user_id)
        found = await self._backends.presence().lookup([user_id])
        nodes = sorted(node for node, users in found.items() if user_id in users)
        return {"user_id": user_id, "online": bool(nodes), "nodes": nodes}

    # -- groups on a user's behalf ----------------------------------------------------------------

    async def create_group(self, owner_id: int, name: str, members: list[int]) -> Group:
        return await call(self._web.create_group.remote(owner_id, name, members))

    async def add_members(self, as_user: int, group_id: int, user_ids: list[int]) -> Group:
        return await call(self._web.add_members.remote(as_user, group_id, user_ids))

    async def remove_member(self, as_user: int, group_id: int, member_id: int) -> None:
        await call(self._web.remove_member.remote(as_user, group_id, member_id))
