"""AuthService: the OAuth2 authorization centre's Serve edge (the grants are `domain.oauth`)."""

from __future__ import annotations

import os

from ray import serve

from imray.adapters.named_actors import ActorHandle, NamedActors
from imray.backends import Backends
from imray.deployments.oauth_store import DatabaseOAuthStore
from imray.domain.nodes import NodeEndpoint
from imray.domain.oauth import Assignment, Basic, ClientToken, OAuthServer, UserTokens
from imray.domain.passwords import Passwords
from imray.domain.tokens import Principal, SigningKey, TokenIssuer
from imray.heap import freeze_startup_heap
from imray.settings import Settings


class SupervisorPicker:
    """`domain.oauth.NodePicker` through the socket supervisor (its handle looked up once)."""

    def __init__(self, actors: NamedActors) -> None:
        self._actors = actors
        self._supervisor: ActorHandle | None = None

    async def pick(self, user_id: int) -> NodeEndpoint | None:
        if self._supervisor is None:
            self._supervisor = self._actors.supervisor()
        node: NodeEndpoint | None = await self._supervisor.pick.remote(user_id)
        return node


@serve.deployment
class AuthService:
    async def __init__(self, settings: Settings, key: SigningKey) -> None:  # type: ignore[misc]  # Serve awaits it
        self._backends = backends = Backends(settings, f"auth-{os.getpid()}")
        passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
        self._oauth = OAuthServer(DatabaseOAuthStore(backends.database()), SupervisorPicker(backends.actors()),
                                  passwords, TokenIssuer(key, settings.base_url, settings.access_token_ttl_s),
                                  backends.revoked_logins(follow=False), settings.refresh_token_ttl_s)
        await self.start()
        freeze_startup_heap()

    async def start(self) -> None:
        await self._backends.start()

    async def stop(self) -> None:
        await self._backends.stop()

    async def __del__(self) -> None:
        await self.stop()

    async def token(self, form: dict[str, str], basic: Basic) -> UserTokens | ClientToken:
        return await self._oauth.token(form, basic)

    async def revoke(self, form: dict[str, str], basic: Basic) -> None:
        await self._oauth.revoke(form, basic)

    async def assign(self, principal: Principal) -> Assignment:
        return await self._oauth.assign(principal)
