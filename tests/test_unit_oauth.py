"""The OAuth2 centre's decisions (domain.oauth.OAuthServer): client authentication, the password,
refresh-token and client-credentials grants, revocation, and socket-node assignment.

Its ports are in-memory fakes here; tokens are issued by the real `TokenIssuer` and read back with
the real `TokenVerifier`, so what the tests check is what a gateway would see.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field

import pytest

from imray.domain.authenticator import Authenticator
from imray.domain.errors import DomainError, Unauthorized, Unavailable
from imray.domain.nodes import NodeEndpoint
from imray.domain.oauth import (
    MAX_PASSWORD,
    MAX_USERNAME,
    PUBLIC_CLIENT,
    Client,
    OAuthError,
    OAuthServer,
    RefreshReuse,
    RefreshUse,
)
from imray.domain.tokens import USER_SCOPE, Principal, SigningKey, TokenIssuer, TokenVerifier, digest

ISSUER = "http://127.0.0.1:8000"
ACCESS_TTL_S = 900
REFRESH_TTL_S = 3600
ALICE_ID, ALICE, ALICE_PASSWORD = 11, "alice", "correct horse"
BOT, BOT_SECRET, BOT_SCOPE = "bot", "bot-secret", "chat.read chat.write users.read"


# -- fakes for the ports -------------------------------------------------------------------------


@dataclass
class StoredRefresh:
    family: str
    user_id: int
    client_id: str
    scope: str
    ttl_s: int
    used: bool = False


class FakeStore:
    """`OAuthStore` in memory, with the semantics its Protocol states."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {BOT: Client(BOT, BOT_SCOPE, digest(BOT_SECRET))}
        self.users: dict[str, tuple[int, str]] = {ALICE: (ALICE_ID, f"hash:{ALICE_PASSWORD}")}
        self.refresh: dict[str, StoredRefresh] = {}
        self.revoked_families: list[tuple[str, int]] = []
        self.credential_lookups: list[str] = []
        self.consumed: list[tuple[str, int]] = []
        self.disabled_users: set[int] = set()  # the server API's disable

    async def disabled(self, user_id: int) -> bool:
        return user_id in self.disabled_users

    async def client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    async def credentials(self, username: str) -> tuple[int, str] | None:
        self.credential_lookups.append(username)
        return self.users.get(username)

    async def store_refresh(self, token_hash: str, family: str, user_id: int, client_id: str, scope: str,
                            ttl_s: int) -> None:
        self.refresh[token_hash] = StoredRefresh(family, user_id, client_id, scope, ttl_s)

    async def consume_refresh(self, token_hash: str, client_id: str,
                              keep_s: int) -> RefreshUse | RefreshReuse | None:
        self.consumed.append((token_hash, keep_s))
        row = self.refresh.get(token_hash)
        if row is None or row.client_id != client_id:
            return None
        if row.used:
            self._revoke(row.family, keep_s)
            return RefreshReuse(row.family)
        row.used = True
        return RefreshUse(row.user_id, row.client_id, row.family)

    async def revoke_family(self, token_hash: str, client_id: str, keep_s: int) -> str | None:
        row = self.refresh.get(token_hash)
        if row is None or row.client_id != client_id:
            return None
        self._revoke(row.family, keep_s)
        return row.family

    def _revoke(self, family: str, keep_s: int) -> None:
        for row in self.refresh.values():
            if row.family == family:
                row.used = True
        self.revoked_families.append((family, keep_s))


def node(n: int) -> NodeEndpoint:
    return NodeEndpoint(node_id=f"node-{n}", url=f"ws://10.0.0.{n}:9101/ws", host=f"10.0.0.{n}", port=9101,
                        ray_node_id=f"ray-{n}", actor_id=f"actor-{n}")


class FakeNodes:
    """`NodePicker`: hands out the queued nodes in turn (the last one again when they run out);
    an empty queue means no socket node is alive."""

    def __init__(self, *nodes: NodeEndpoint) -> None:
        self.queue = list(nodes)
        self.asked: list[int] = []
        self.alive = {n.node_id: n for n in nodes}

    async def pick(self, user_id: int, prefer: str | None = None) -> NodeEndpoint | None:
        self.asked.append(user_id)
        if prefer in self.alive:  # as the supervisor: a live preferred node is kept
            return self.alive[prefer]
        if not self.queue:
            return None
        return self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]


class FakePasswords:
    """`PasswordVerifier`: a stored hash is "hash:" + the password."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str]] = []

    def verify(self, stored: str | None, password: str) -> bool:
        self.calls.append((stored, password))
        return stored is not None and stored == f"hash:{password}"


@dataclass
class FakeRevoked:
    """`RevokedLogins` in memory: family -> the ttl it was revoked for."""

    families: dict[str, int] = field(default_factory=dict)

    async def is_revoked(self, family: str) -> bool:
        return family in self.families

    async def revoke(self, family: str, ttl_s: int) -> None:
        self.families[family] = ttl_s


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def nodes() -> FakeNodes:
    return FakeNodes(node(1), node(2))


@pytest.fixture
def passwords() -> FakePasswords:
    return FakePasswords()


@pytest.fixture
def revoked() -> FakeRevoked:
    return FakeRevoked()


@pytest.fixture
def verifier(key: SigningKey) -> TokenVerifier:
    return TokenVerifier([key.public()], ISSUER)


@pytest.fixture
def server(store: FakeStore, nodes: FakeNodes, passwords: FakePasswords, revoked: FakeRevoked,
           key: SigningKey) -> OAuthServer:
    return OAuthServer(store, nodes, passwords, TokenIssuer(key, ISSUER, ACCESS_TTL_S), revoked, REFRESH_TTL_S)


def password_form(**changes: str) -> dict[str, str]:
    return {"grant_type": "password", "client_id": PUBLIC_CLIENT, "username": ALICE, "password": ALICE_PASSWORD,
            **changes}


async def oauth_error(awaitable: object) -> OAuthError:
    with pytest.raises(OAuthError) as exc:
        await awaitable  # type: ignore[misc]
    return exc.value


async def login(server: OAuthServer) -> dict[str, object]:
    return dict(await server.token(password_form(), None))


# -- the password grant --------------------------------------------------------------------------


async def test_the_right_password_gives_tokens_pinned_to_the_picked_node(
        server: OAuthServer, nodes: FakeNodes, verifier: TokenVerifier) -> None:
    tokens = await login(server)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == ACCESS_TTL_S
    assert tokens["scope"] == USER_SCOPE
    assert tokens["user_id"] == ALICE_ID
    assert tokens["socket_url"] == "ws://10.0.0.1:9101/ws"
    assert tokens["socket_node"] == "node-1"
    assert nodes.asked == [ALICE_ID]
    principal = verifier.verify(tokens["access_token"])
    assert principal.user_id == ALICE_ID
    assert principal.sub == str(ALICE_ID)
    assert principal.client_id == PUBLIC_CLIENT
    assert principal.scope == USER_SCOPE
    assert principal.node == "node-1"
    assert principal.family is not None
    assert len(principal.family) == 32


async def test_the_refresh_token_is_stored_only_as_its_digest_with_the_login(
        server: OAuthServer, store: FakeStore, verifier: TokenVerifier) -> None:
    tokens = await login(server)
    refresh = tokens["refresh_token"]
    assert isinstance(refresh, str)
    assert len(refresh) >= 40
    assert refresh not in store.refresh
    stored = store.refresh[digest(refresh)]
    family = verifier.verify(tokens["access_token"]).family
    assert stored == StoredRefresh(family=family, user_id=ALICE_ID, client_id=PUBLIC_CLIENT, scope=USER_SCOPE,
                                   ttl_s=REFRESH_TTL_S)


async def test_each_password_login_is_a_login_of_its_own(server: OAuthServer, verifier: TokenVerifier) -> None:
    first, second = await login(server), await login(server)
    assert verifier.verify(first["access_token"]).family != verifier.verify(second["access_token"]).family
    assert first["refresh_token"] != second["refresh_token"]


async def test_a_wrong_password_is_an_invalid_grant(server: OAuthServer, store: FakeStore) -> None:
    error = await oauth_error(server.token(password_form(password="wrong"), None))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert store.refresh == {}


async def test_an_unknown_user_is_the_same_invalid_grant_as_a_wrong_password(
        server: OAuthServer, passwords: FakePasswords) -> None:
    unknown = await oauth_error(server.token(password_form(username="mallory"), None))
    wrong = await oauth_error(server.token(password_form(password="wrong"), None))
    assert (unknown.error, unknown.status, unknown.message) == (wrong.error, wrong.status, wrong.message)
    assert unknown.error == "invalid_grant"


async def test_an_unknown_user_still_costs_a_password_check(server: OAuthServer, passwords: FakePasswords) -> None:
    await oauth_error(server.token(password_form(username="mallory"), None))
    assert passwords.calls == [(None, ALICE_PASSWORD)]


async def test_a_username_too_long_to_exist_is_not_looked_up_but_still_checked(
        server: OAuthServer, store: FakeStore, passwords: FakePasswords) -> None:
    error = await oauth_error(server.token(password_form(username="x" * (MAX_USERNAME + 1)), None))
    assert error.error == "invalid_grant"
    assert store.credential_lookups == []
    assert passwords.calls == [(None, ALICE_PASSWORD)]


async def test_a_username_of_the_longest_length_is_looked_up(server: OAuthServer, store: FakeStore) -> None:
    await oauth_error(server.token(password_form(username="x" * MAX_USERNAME), None))
    assert store.credential_lookups == ["x" * MAX_USERNAME]


async def test_only_the_first_max_password_characters_are_verified(
        server: OAuthServer, passwords: FakePasswords) -> None:
    await oauth_error(server.token(password_form(password="p" * (MAX_PASSWORD + 500)), None))
    assert passwords.calls == [(f"hash:{ALICE_PASSWORD}", "p" * MAX_PASSWORD)]


@pytest.mark.parametrize("missing", ["username", "password"])
async def test_a_password_grant_without_username_or_password_is_an_invalid_request(
        server: OAuthServer, passwords: FakePasswords, missing: str) -> None:
    form = password_form()
    del form[missing]
    error = await oauth_error(server.token(form, None))
    assert (error.error, error.status) == ("invalid_request", 400)
    assert passwords.calls == []


@pytest.mark.parametrize("empty", ["username", "password"])
async def test_an_empty_username_or_password_is_an_invalid_request(server: OAuthServer, empty: str) -> None:
    error = await oauth_error(server.token(password_form(**{empty: ""}), None))
    assert (error.error, error.status) == ("invalid_request", 400)


async def test_a_login_when_no_socket_node_is_alive_is_unavailable_and_stores_nothing(
        store: FakeStore, passwords: FakePasswords, revoked: FakeRevoked, key: SigningKey) -> None:
    server = OAuthServer(store, FakeNodes(), passwords, TokenIssuer(key, ISSUER, ACCESS_TTL_S), revoked,
                         REFRESH_TTL_S)
    with pytest.raises(Unavailable) as exc:
        await server.token(password_form(), None)
    assert exc.value.status == 503
    assert not isinstance(exc.value, OAuthError)
    assert store.refresh == {}


async def test_a_confidential_client_may_use_the_password_grant_with_its_secret(
        server: OAuthServer, verifier: TokenVerifier) -> None:
    tokens = await server.token(password_form(client_id=BOT, client_secret=BOT_SECRET), None)
    assert verifier.verify(tokens["access_token"]).client_id == BOT


# -- client authentication -----------------------------------------------------------------------


async def test_the_built_in_app_needs_no_secret_for_a_login(server: OAuthServer) -> None:
    tokens = await server.token(password_form(), None)
    assert tokens["user_id"] == ALICE_ID


async def test_a_request_without_a_client_id_is_an_invalid_client(server: OAuthServer) -> None:
    form = password_form()
    del form["client_id"]
    error = await oauth_error(server.token(form, None))
    assert (error.error, error.status) == ("invalid_client", 401)


async def test_an_unknown_client_is_an_invalid_client(server: OAuthServer, passwords: FakePasswords) -> None:
    error = await oauth_error(server.token(password_form(client_id="nobody", client_secret="x"), None))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert passwords.calls == []  # the client is refused before any password is checked


async def test_a_wrong_client_secret_in_the_form_is_an_invalid_client(server: OAuthServer) -> None:
    form = {"grant_type": "client_credentials", "client_id": BOT, "client_secret": "wrong"}
    error = await oauth_error(server.token(form, None))
    assert (error.error, error.status) == ("invalid_client", 401)


async def test_a_wrong_client_secret_in_basic_auth_is_an_invalid_client(server: OAuthServer) -> None:
    error = await oauth_error(server.token({"grant_type": "client_credentials"}, (BOT, "wrong")))
    assert (error.error, error.status) == ("invalid_client", 401)


async def test_a_confidential_client_without_its_secret_is_an_invalid_client(server: OAuthServer) -> None:
    error = await oauth_error(server.token(password_form(client_id=BOT), None))
    assert (error.error, error.status) == ("invalid_client", 401)


async def test_the_right_secret_in_basic_auth_authenticates_the_client(
        server: OAuthServer, verifier: TokenVerifier) -> None:
    token = await server.token({"grant_type": "client_credentials"}, (BOT, BOT_SECRET))
    assert verifier.verify(token["access_token"]).client_id == BOT


async def test_basic_auth_and_a_form_secret_together_are_an_invalid_request(server: OAuthServer) -> None:
    form = {"grant_type": "client_credentials", "client_secret": BOT_SECRET}
    error = await oauth_error(server.token(form, (BOT, BOT_SECRET)))
    assert (error.error, error.status) == ("invalid_request", 400)


async def test_basic_auth_wins_over_a_client_id_in_the_form(server: OAuthServer, verifier: TokenVerifier) -> None:
    form = {"grant_type": "client_credentials", "client_id": PUBLIC_CLIENT}
    token = await server.token(form, (BOT, BOT_SECRET))
    assert verifier.verify(token["access_token"]).client_id == BOT


async def test_a_registered_client_without_a_secret_cannot_authenticate(server: OAuthServer,
                                                                        store: FakeStore) -> None:
    # Only the built-in app is a public client: a stored client with no secret hash is refused.
    store.clients["other-app"] = Client("other-app", USER_SCOPE, None)
    error = await oauth_error(server.token(password_form(client_id="other-app"), None))
    assert (error.error, error.status) == ("invalid_client", 401)


# -- grant types ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [{}, {"grant_type": ""}], ids=["absent", "empty"])
async def test_a_request_without_a_grant_type_is_an_invalid_request(server: OAuthServer,
                                                                    form: dict[str, str]) -> None:
    error = await oauth_error(server.token({**form, "client_id": PUBLIC_CLIENT}, None))
    assert (error.error, error.status) == ("invalid_request", 400)


@pytest.mark.parametrize("grant", ["authorization_code", "implicit", "PASSWORD"])
async def test_an_unknown_grant_type_is_unsupported(server: OAuthServer, grant: str) -> None:
    error = await oauth_error(server.token({"grant_type": grant, "client_id": PUBLIC_CLIENT}, None))
    assert (error.error, error.status) == ("unsupported_grant_type", 400)
    assert grant in error.message


async def test_an_oauth_error_is_a_domain_error_that_survives_pickling() -> None:
    error = OAuthError("invalid_client", "client authentication failed", 401)
    assert isinstance(error, DomainError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.error, copy.message, copy.status) == (OAuthError, "invalid_client",
                                                                   "client authentication failed", 401)


# -- refresh-token rotation ----------------------------------------------------------------------


def refresh_form(token: object, client_id: str = PUBLIC_CLIENT) -> dict[str, str]:
    assert isinstance(token, str)
    return {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": token}


async def test_a_refresh_token_gives_new_tokens_for_the_same_login(
        server: OAuthServer, verifier: TokenVerifier) -> None:
    first = await login(server)
    second = await server.token(refresh_form(first["refresh_token"]), None)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user_id"] == ALICE_ID
    assert second["scope"] == USER_SCOPE
    assert second["expires_in"] == ACCESS_TTL_S
    old, new = verifier.verify(first["access_token"]), verifier.verify(second["access_token"])
    assert new.family == old.family
    assert (new.user_id, new.client_id) == (ALICE_ID, PUBLIC_CLIENT)


async def test_refreshed_tokens_are_pinned_to_the_node_picked_now(
        server: OAuthServer, verifier: TokenVerifier) -> None:
    first = await login(server)
    second = await server.token(refresh_form(first["refresh_token"]), None)
    assert (first["socket_node"], second["socket_node"]) == ("node-1", "node-2")
    assert second["socket_url"] == "ws://10.0.0.2:9101/ws"
    assert verifier.verify(second["access_token"]).node == "node-2"


async def test_a_refresh_asking_to_keep_its_socket_node_keeps_it(
        server: OAuthServer, verifier: TokenVerifier) -> None:
    first = await login(server)  # pinned to node-1; the next pick would be node-2
    second = await server.token({**refresh_form(first["refresh_token"]), "socket_node": "node-1"}, None)
    assert second["socket_node"] == "node-1"
    assert verifier.verify(second["access_token"]).node == "node-1"


async def test_a_refresh_token_is_spent_with_the_access_tokens_lifetime_as_keep(
        server: OAuthServer, store: FakeStore) -> None:
    first = await login(server)
    await server.token(refresh_form(first["refresh_token"]), None)
    assert store.consumed == [(digest(first["refresh_token"]), ACCESS_TTL_S)]


async def test_a_used_refresh_token_is_refused(server: OAuthServer) -> None:
    first = await login(server)
    await server.token(refresh_form(first["refresh_token"]), None)
    error = await oauth_error(server.token(refresh_form(first["refresh_token"]), None))
    assert (error.error, error.status) == ("invalid_grant", 400)


async def test_a_reused_refresh_token_revokes_the_whole_login(
        server: OAuthServer, revoked: FakeRevoked, verifier: TokenVerifier) -> None:
    first = await login(server)
    second = await server.token(refresh_form(first["refresh_token"]), None)
    family = verifier.verify(first["access_token"]).family
    assert revoked.families == {}
    await oauth_error(server.token(refresh_form(first["refresh_token"]), None))
    assert revoked.families == {family: ACCESS_TTL_S}
    # Every access token of that login, the rotated one too, is refused from now on...
    auth = Authenticator(verifier, revoked)
    for tokens in (first, second):
        with pytest.raises(Unauthorized):
            await auth.authenticate(tokens["access_token"])
    # ...and so is the refresh token it was rotated into.
    error = await oauth_error(server.token(refresh_form(second["refresh_token"]), None))
    assert error.error == "invalid_grant"


async def test_a_reused_refresh_token_leaves_other_logins_alone(
        server: OAuthServer, revoked: FakeRevoked, verifier: TokenVerifier) -> None:
    leaked, other = await login(server), await login(server)
    await server.token(refresh_form(leaked["refresh_token"]), None)
    await oauth_error(server.token(refresh_form(leaked["refresh_token"]), None))
    auth = Authenticator(verifier, revoked)
    assert (await auth.authenticate(other["access_token"])).user_id == ALICE_ID
    assert (await server.token(refresh_form(other["refresh_token"]), None))["user_id"] == ALICE_ID


async def test_an_unknown_refresh_token_is_an_invalid_grant_and_revokes_nothing(
        server: OAuthServer, revoked: FakeRevoked) -> None:
    error = await oauth_error(server.token(refresh_form("not-a-token"), None))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert revoked.families == {}


async def test_a_refresh_grant_without_a_refresh_token_is_an_invalid_request(
        server: OAuthServer, store: FakeStore) -> None:
    error = await oauth_error(server.token({"grant_type": "refresh_token", "client_id": PUBLIC_CLIENT}, None))
    assert (error.error, error.status) == ("invalid_request", 400)
    assert store.consumed == []


async def test_a_refresh_token_presented_by_another_client_is_refused_and_not_spent(
        server: OAuthServer, store: FakeStore, revoked: FakeRevoked) -> None:
    tokens = await login(server)  # issued to the built-in app
    error = await oauth_error(server.token(
        {**refresh_form(tokens["refresh_token"], BOT), "client_secret": BOT_SECRET}, None))
    assert (error.error, error.status) == ("invalid_grant", 400)
    # Not spent (RFC 6749 §6: the client is checked first): its owner's next refresh is no "reuse".
    assert not store.refresh[digest(tokens["refresh_token"])].used
    renewed = await server.token(refresh_form(tokens["refresh_token"]), None)
    assert renewed["refresh_token"] != tokens["refresh_token"]
    assert revoked.families == {}


async def test_another_client_cannot_revoke_a_login_it_does_not_hold(
        server: OAuthServer, store: FakeStore, revoked: FakeRevoked) -> None:
    tokens = await login(server)  # issued to the built-in app
    # RFC 7009 §2.2: answered like an unknown token, and nothing is revoked.
    assert await server.revoke({"client_id": BOT, "client_secret": BOT_SECRET,
                                "token": tokens["refresh_token"]}, None) is None
    assert revoked.families == {}
    assert not store.refresh[digest(tokens["refresh_token"])].used
    assert (await server.token(refresh_form(tokens["refresh_token"]), None))["user_id"] == ALICE_ID


async def test_only_the_first_512_characters_of_a_refresh_token_are_hashed(
        server: OAuthServer, store: FakeStore) -> None:
    await oauth_error(server.token(refresh_form("r" * 2000), None))
    assert store.consumed == [(digest("r" * 512), ACCESS_TTL_S)]


# -- client credentials --------------------------------------------------------------------------


def credentials_form(**changes: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": BOT, "client_secret": BOT_SECRET, **changes}


async def test_client_credentials_with_an_empty_scope_are_refused_not_given_the_whole_scope(
        server: OAuthServer) -> None:
    for empty in ("", "   "):
        error = await oauth_error(server.token(credentials_form(scope=empty), None))
        assert (error.error, error.status) == ("invalid_scope", 400), empty


async def test_client_credentials_without_a_scope_get_the_clients_whole_scope(
        server: OAuthServer, verifier: TokenVerifier) -> None:
    token = await server.token(credentials_form(), None)
    assert token == {"access_token": token["access_token"], "token_type": "Bearer", "expires_in": ACCESS_TTL_S,
                     "scope": "chat.read chat.write users.read"}
    principal = verifier.verify(token["access_token"])
    assert principal.user_id is None
    assert principal.node is None
    assert principal.family is None
    assert (principal.sub, principal.client_id) == (BOT, BOT)
    assert principal.scope == "chat.read chat.write users.read"


async def test_client_credentials_may_narrow_the_scope(server: OAuthServer, verifier: TokenVerifier) -> None:
    token = await server.token(credentials_form(scope="users.read"), None)
    assert token["scope"] == "users.read"
    assert verifier.verify(token["access_token"]).scope == "users.read"


async def test_the_granted_scope_is_sorted_and_each_name_once(server: OAuthServer) -> None:
    token = await server.token(credentials_form(scope="users.read chat.read users.read"), None)
    assert token["scope"] == "chat.read users.read"


async def test_a_scope_beyond_the_clients_is_an_invalid_scope(server: OAuthServer) -> None:
    error = await oauth_error(server.token(credentials_form(scope="chat.read admin"), None))
    assert (error.error, error.status) == ("invalid_scope", 400)
    assert "chat.read chat.write users.read" in error.message


async def test_the_built_in_app_may_not_use_client_credentials(server: OAuthServer) -> None:
    error = await oauth_error(server.token({"grant_type": "client_credentials", "client_id": PUBLIC_CLIENT}, None))
    assert (error.error, error.status) == ("invalid_client", 401)


async def test_client_credentials_give_no_refresh_token_and_need_no_node(
        store: FakeStore, passwords: FakePasswords, revoked: FakeRevoked, key: SigningKey) -> None:
    nodes = FakeNodes()  # none alive
    server = OAuthServer(store, nodes, passwords, TokenIssuer(key, ISSUER, ACCESS_TTL_S), revoked, REFRESH_TTL_S)
    token = await server.token(credentials_form(), None)
    assert "refresh_token" not in token
    assert nodes.asked == []
    assert store.refresh == {}


# -- revocation (RFC 7009) -----------------------------------------------------------------------


async def test_revoking_an_unknown_token_is_not_an_error(server: OAuthServer, revoked: FakeRevoked) -> None:
    assert await server.revoke({"client_id": PUBLIC_CLIENT, "token": "never-issued"}, None) is None
    assert revoked.families == {}


async def test_revoking_a_refresh_token_revokes_its_login_everywhere(
        server: OAuthServer, store: FakeStore, revoked: FakeRevoked, verifier: TokenVerifier) -> None:
    tokens = await login(server)
    family = verifier.verify(tokens["access_token"]).family
    await server.revoke({"client_id": PUBLIC_CLIENT, "token": tokens["refresh_token"]}, None)
    assert store.revoked_families == [(family, ACCESS_TTL_S)]
    assert revoked.families == {family: ACCESS_TTL_S}
    with pytest.raises(Unauthorized):
        await Authenticator(verifier, revoked).authenticate(tokens["access_token"])
    error = await oauth_error(server.token(refresh_form(tokens["refresh_token"]), None))
    assert error.error == "invalid_grant"


async def test_revoking_without_a_token_is_an_invalid_request(server: OAuthServer) -> None:
    error = await oauth_error(server.revoke({"client_id": PUBLIC_CLIENT}, None))
    assert (error.error, error.status) == ("invalid_request", 400)


async def test_revoking_needs_an_authenticated_client(server: OAuthServer, revoked: FakeRevoked) -> None:
    tokens = await login(server)
    error = await oauth_error(server.revoke({"client_id": BOT, "client_secret": "wrong",
                                             "token": tokens["refresh_token"]}, None))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert revoked.families == {}


# -- socket-node assignment ----------------------------------------------------------------------


async def test_assign_issues_a_fresh_token_pinned_to_the_newly_picked_node(
        server: OAuthServer, nodes: FakeNodes, verifier: TokenVerifier) -> None:
    tokens = await login(server)  # pinned to node-1
    principal = verifier.verify(tokens["access_token"])
    assignment = await server.assign(principal)
    assert assignment["socket_node"] == "node-2"
    assert assignment["socket_url"] == "ws://10.0.0.2:9101/ws"
    assert assignment["expires_in"] <= ACCESS_TTL_S
    assert assignment["access_token"] != tokens["access_token"]
    fresh = verifier.verify(assignment["access_token"])
    assert fresh.node == "node-2"
    assert fresh.exp == principal.exp  # a re-pin, not a renewal
    assert (fresh.user_id, fresh.client_id, fresh.family) == (ALICE_ID, PUBLIC_CLIENT, principal.family)
    assert nodes.asked == [ALICE_ID, ALICE_ID]


async def test_assign_gives_a_token_without_a_login_a_new_login_of_its_own(
        server: OAuthServer, verifier: TokenVerifier) -> None:
    principal = Principal(sub=str(ALICE_ID), client_id=PUBLIC_CLIENT, scope=USER_SCOPE, jti="j",
                          exp=int(time.time()) + 60, user_id=ALICE_ID, node="node-1", family=None)
    first = verifier.verify((await server.assign(principal))["access_token"])
    second = verifier.verify((await server.assign(principal))["access_token"])
    assert first.family is not None
    assert len(first.family) == 32
    assert first.family != second.family


async def test_assign_never_outlives_the_token_presented(server: OAuthServer, verifier: TokenVerifier) -> None:
    """A leaked access token cannot renew itself: each assign ends when the token it came from does."""
    exp = int(time.time()) + 5
    principal = Principal(sub=str(ALICE_ID), client_id=PUBLIC_CLIENT, scope=USER_SCOPE, jti="j", exp=exp,
                          user_id=ALICE_ID, node="node-1", family="f" * 32)
    for _ in range(3):
        assignment = await server.assign(principal)
        principal = verifier.verify(assignment["access_token"])
        assert principal.exp == exp
        assert assignment["expires_in"] <= 5


async def test_assign_when_no_socket_node_is_alive_is_unavailable(
        store: FakeStore, passwords: FakePasswords, revoked: FakeRevoked, key: SigningKey) -> None:
    server = OAuthServer(store, FakeNodes(), passwords, TokenIssuer(key, ISSUER, ACCESS_TTL_S), revoked,
                         REFRESH_TTL_S)
    principal = Principal(sub=str(ALICE_ID), client_id=PUBLIC_CLIENT, scope=USER_SCOPE, jti="j", exp=0,
                          user_id=ALICE_ID, node="node-1", family="f" * 32)
    with pytest.raises(Unavailable) as exc:
        await server.assign(principal)
    assert exc.value.status == 503


# -- disabled accounts (server API) ----------------------------------------------------------------


async def test_a_disabled_account_gets_no_tokens_even_with_the_right_password(
        server: OAuthServer, store: FakeStore) -> None:
    store.disabled_users.add(ALICE_ID)
    error = await oauth_error(server.token(password_form(), None))
    assert (error.error, error.message) == ("invalid_grant", "this account is disabled")


async def test_a_refresh_token_of_an_account_disabled_since_is_refused(server: OAuthServer, store: FakeStore) -> None:
    tokens = await login(server)
    store.disabled_users.add(ALICE_ID)
    error = await oauth_error(server.token(refresh_form(tokens["refresh_token"]), None))
    assert error.error == "invalid_grant"
    store.disabled_users.clear()  # enabled again: a fresh login works
    assert (await login(server))["user_id"] == ALICE_ID
