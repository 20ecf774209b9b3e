"""AuthService: the OAuth2 authorization centre's Serve edge (the grants are `domain.oauth`)."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from ray import serve
from ray.exceptions import RayActorError

from imray.adapters import metrics
from imray.adapters.nacos import SOCKET_SERVICE
from imray.adapters.named_actors import ActorHandle, ActorMissing, NamedActors
from imray.adapters.registry import Directory
from imray.backends import Backends
from imray.deployments.account_store import DatabaseLoginBook
from imray.deployments.code_store import DatabaseCodeStore
from imray.deployments.common import BackendsService
from imray.deployments.oauth_store import DatabaseOAuthStore
from imray.domain.authorization_code import AuthorizationCodes, Outcome
from imray.domain.errors import DomainError, Unavailable
from imray.domain.login_guard import LoginGuard, LoginLimits, PasswordQueue
from imray.domain.nodes import NodeEndpoint
from imray.domain.oauth import Assignment, Basic, ClientToken, Introspection, OAuthServer, UserTokens
from imray.domain.passwords import Passwords
from imray.domain.placement import pick_listed
from imray.domain.tokens import Principal, TokenIssuer, TokenVerifier
from imray.heap import freeze_startup_heap
from imray.settings import Settings

log = logging.getLogger("imray.auth")
PICK_RETRY_S = 15.0
PICK_RETRY_PAUSE_S = 0.25
SUPERVISOR_ANSWER_S = 5.0  # a pick not answered by then is taken from the registry's list, if there is one
REGISTRY_ANSWER_S = 3.0


class SupervisorPicker:
    """`domain.oauth.NodePicker` through the socket supervisor, and the outside registry when it does not answer.

    Ray restarts a supervisor that died, and the restarted one adopts the live socket nodes within
    seconds: a pick that fails meanwhile is tried again (the handle looked up afresh) for up to
    `retry_s`, well within a client's request time, before the login is answered 503. Meanwhile, with
    Nacos, the login is pinned to a node Nacos lists (it shows each node while its actor lives): a replica
    whose host was cut off while the supervisor restarted kept calling the old supervisor's address for
    over 35 s after the heal (Ray never told it of the restart), and answered every login 503 (CI, 2026-11-30).
    """

    def __init__(self, actors: NamedActors, directory: Directory, retry_s: float = PICK_RETRY_S,
                 answer_s: float = SUPERVISOR_ANSWER_S) -> None:
        self._actors = actors
        self._directory = directory
        self._retry_s, self._answer_s = retry_s, answer_s
        self._supervisor: ActorHandle | None = None

    async def pick(self, user_id: int, prefer: str | None = None) -> NodeEndpoint | None:
        deadline = time.monotonic() + self._retry_s
        while True:
            try:
                if self._supervisor is None:
                    self._supervisor = self._actors.supervisor()
                left = max(min(deadline - time.monotonic(), self._answer_s), PICK_RETRY_PAUSE_S)
                node: NodeEndpoint | None = await asyncio.wait_for(self._supervisor.pick.remote(user_id, prefer),
                                                                left)
                return node
            except (ActorMissing, RayActorError, TimeoutError) as exc:
                self._supervisor = None
                listed = await self._from_registry(user_id, prefer)
                if listed is not None:
                    log.warning("supervisor unavailable (%r): pinned to %s, as the registry lists it",
                                exc, listed.node_id)
                    return listed
                if time.monotonic() + PICK_RETRY_PAUSE_S > deadline:
                    # The body of any unreachable Ray service (docs/protocol.md: "Other statuses").
                    raise Unavailable("service temporarily unavailable") from exc
                log.info("supervisor unavailable (%r): trying again", exc)
                await asyncio.sleep(PICK_RETRY_PAUSE_S)

    async def _from_registry(self, user_id: int, prefer: str | None) -> NodeEndpoint | None:
        try:
            listed = await asyncio.wait_for(self._directory.endpoints(), REGISTRY_ANSWER_S)
        except TimeoutError:
            return None
        return pick_listed(listed, user_id, prefer) if listed else None


@serve.deployment
class AuthService(BackendsService):
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]  # Serve awaits it
        self._backends = backends = Backends(settings, f"auth-{os.getpid()}")
        passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
        self._password_queue = PasswordQueue(settings.password_checks_at_once or len(os.sched_getaffinity(0)),
                                             settings.password_checks_waiting)
        guard = LoginGuard(backends.login_failures(), LoginLimits(
            settings.login_failures_per_account, settings.login_failures_per_address,
            settings.login_failure_window_s), self._password_queue)
        keys = backends.keys()  # read from settings.keys_path, and followed as they rotate
        self._codes = AuthorizationCodes(DatabaseCodeStore(backends.database()), passwords,
                                         backends.revoked_logins(follow=False), settings.base_url,
                                         code_ttl_s=settings.authorization_code_ttl_s,
                                         keep_s=settings.access_token_ttl_s, guard=guard)
        # Revoked logins followed from the database (not only its own): introspection answers with them.
        picker = SupervisorPicker(backends.actors(), backends.directory(SOCKET_SERVICE))
        self._oauth = OAuthServer(DatabaseOAuthStore(backends.database()), picker,
                                  passwords, TokenIssuer(keys, settings.base_url, settings.access_token_ttl_s),
                                  backends.revoked_logins(), settings.refresh_token_ttl_s,
                                  guard=guard, verifier=TokenVerifier(keys, settings.base_url), codes=self._codes,
                                  logins=DatabaseLoginBook(backends.database()))  # listed (issue 18)
        await self.start()
        freeze_startup_heap()

    async def token(self, form: dict[str, str], basic: Basic, address: str = "",
                    user_agent: str = "") -> UserTokens | ClientToken:
        grant = form.get("grant_type", "")
        try:
            tokens = await self._oauth.token(form, basic, address, user_agent)
        except DomainError as exc:
            if grant in ("password", "refresh_token") and exc.status < 500:  # refused, not unavailable
                metrics.count("imray_logins", 1, outcome="failed")
                # An audit line (Serve adds the request id): never the username, which is now and
                # then a password typed into the wrong field.
                log.warning("grant refused", extra={"grant": grant, "error": getattr(exc, "error", exc.code),
                                                     "address": address})
            raise
        if grant in ("password", "refresh_token"):
            metrics.count("imray_logins", 1, outcome="ok")
        return tokens

    async def stop(self) -> None:
        self._password_queue.close()
        await super().stop()

    async def revoke(self, form: dict[str, str], basic: Basic) -> None:
        await self._oauth.revoke(form, basic)

    async def assign(self, principal: Principal) -> Assignment:
        return await self._oauth.assign(principal)

    async def introspect(self, form: dict[str, str], basic: Basic) -> Introspection:
        return await self._oauth.introspect(form, basic)

    async def authorize_page(self, params: dict[str, str]) -> Outcome:
        """GET /oauth2/authorize: the login and consent page, or the request's error."""
        return await self._codes.page(params)

    async def authorize(self, params: dict[str, str], address: str = "") -> Outcome:
        """POST /oauth2/authorize (its CSRF token checked by the gateway): a code, or why not."""
        return await self._codes.submit(params, address)
