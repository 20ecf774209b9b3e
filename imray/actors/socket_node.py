"""SocketNode: one actor, one WebSocket server on its Ray node's IP and its own port.

The Ray shell around a `SocketServer` (sessions, frames, deliveries): it wires the server to the
conversation shards (one stream each, batched: one frame per shard per loop turn), to presence and
to the supervisor, keeps presence and the outside registry current, and owns the node's start and
stop. Frames to a session leave in the order they were pushed, and a stuck client cannot make the
node buffer without limit (see `session.Session`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import ray

from imray.actors.batching import Batcher
from imray.actors.catch_up import CatchUp
from imray.actors.login_stamps import LoginStamps
from imray.actors.presence_news import PresenceNews
from imray.actors.session import Session
from imray.actors.shard_link import ShardLink
from imray.actors.socket_server import SocketServer
from imray.actors.wire import pack_items, unpack_outcomes
from imray.adapters import metrics
from imray.adapters.nacos import SOCKET_SERVICE
from imray.adapters.named_actors import ActorHandle
from imray.adapters.presence import REFRESH_S, PresencePort
from imray.adapters.registry import Registration
from imray.adapters.user_push import UserPush
from imray.backends import Backends
from imray.deployments.history import HistoryReader
from imray.domain.messaging import Item, Outcome
from imray.domain.nodes import NodeEndpoint, NodeStats
from imray.domain.tokens import TokenIssuer
from imray.heap import collect_fully_less_often, freeze_startup_heap
from imray.lifecycle import Tasks
from imray.protocol.frames import dumps
from imray.settings import Settings

log = logging.getLogger("imray.socket")

PRESENCE_LINGER_S = 0.01
REGISTRATION_UPDATE_S = 1.0
SESSIONS_METRIC_S = 5.0
DRAIN_POLL_S = 0.2
KEYRING_CHECK_S = 1.0  # how often the node asks its keyring (which reads the files every 2 s at most)
# Verified access tokens a node keeps (~0.4 KB each): a session coming back after a cut (a reconnect
# storm) presents the token it had, and costs a lookup instead of a signature check (~15 % of its CPU).
TOKENS_REMEMBERED = 20000


def _rss_bytes() -> int:
    """This process's resident memory (Linux), for `imray status` and the connection benchmark."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


@ray.remote(num_cpus=0, max_concurrency=10000)  # type: ignore[call-overload]  # stubs lack actor options
class SocketNode:
    """Started by the supervisor: `start()` once, then `deliver` from shards, `stats` and
    `resync_presence` from the supervisor, and `stop()` when the node drains."""

    def __init__(self, node_id: str, port: int, settings: Settings) -> None:  # keys: from settings.keys_path
        self.node_id = node_id
        self._port = port
        self._settings = settings
        self._backends = Backends(settings, f"socket-{node_id}")
        self._tasks = Tasks(f"socket-{node_id}")
        self._host = ""
        self._server: SocketServer | None = None
        self._links: list[ShardLink] = []
        self._news: PresenceNews | None = None
        self._registration: Registration | None = None
        self._upkeep: asyncio.Task[None] | None = None
        self._to_shards: Batcher[int, Item, Outcome] = Batcher(self._call_shard)
        # A presence call costs the node and the presence actor ~0.3 ms of CPU each; in a burst of
        # logins, 10 ms of waiting folds ~5 sessions into one call, at 10 ms on each auth_ok.
        self._to_presence: Batcher[str, tuple[int, int], None] = Batcher(self._call_presence, PRESENCE_LINGER_S)

    async def start(self) -> NodeEndpoint:
        settings, backends = self._settings, self._backends
        actors = backends.actors()
        self._presence: PresencePort = backends.presence()
        self._supervisor: ActorHandle = actors.supervisor()
        revoked = backends.revoked_logins()
        # Issue 18: who went online or offline reaches their contacts (`presence_news`).
        self._news = PresenceNews(backends.database(threads=1), UserPush(self._presence, actors))
        server = self._server = SocketServer(
            self.node_id, settings, backends.authenticator(remember=TOKENS_REMEMBERED), backends.live(),
            submit=self._to_shards.submit, shard_count=settings.shard_count, url_of=self._url_of,
            presence_change=self._presence_change, known_revoked=revoked.known,
            # Issue 21: a resume's catch-up, read here with history's rules (two reads at a time).
            catch_up=CatchUp(HistoryReader(backends.database(threads=2))),
        )
        revoked.on_revoked(server.close_logins)  # the follower's news: a revoked login's sessions go (4001)
        # Deliveries come straight from the streams to the server: no hop through the actor method.
        self._links = [ShardLink(self.node_id, i, actors, server.deliver, settings.shard_submit_timeout_s)
                       for i in range(settings.shard_count)]
        for link in self._links:
            link.start()
        self._host = settings.socket_host or ray.util.get_node_ip_address()
        await server.listen(self._host, self._port)
        self._tasks.spawn(self._refresh_presence(), name="presence refresh")
        self._tasks.spawn(self._report_sessions(), name="sessions metric")
        self._tasks.spawn(self._follow_keys(), name="keyring")
        # Issue 18: the logins with sessions here are listed as seen (GET /api/users/me/logins).
        self._tasks.spawn(LoginStamps(backends.database(threads=1), server.open_logins).run(), name="login stamps")
        await backends.start()  # live settings, and the follower of revoked logins
        registration = self._registration = backends.registration(SOCKET_SERVICE, self._host, self._port)
        await registration.register(self._metadata())
        self._upkeep = self._tasks.spawn(self._keep_registration_current(), name="registration upkeep")
        freeze_startup_heap()
        collect_fully_less_often()
        return self.endpoint()

    async def stop(self) -> None:
        """Drain: leave the registry first, so nobody is sent here, then close every session (1001),
        then the streams to the shards, the background work, and the backends."""
        await self._leave_registry()
        if self._server is not None:
            await self._server.close()
        await asyncio.gather(*(link.stop() for link in self._links))
        await self._to_shards.stop()
        await self._to_presence.stop()
        if self._news is not None:
            await self._news.stop()
        await self._tasks.cancel_all()
        await self._backends.stop()

    def endpoint(self) -> NodeEndpoint:
        context = ray.get_runtime_context()  # an actor's: its actor id is always set
        url = self._settings.socket_url(self.node_id, self._host, self._port)  # public: what clients are told
        return NodeEndpoint(node_id=self.node_id, url=url, host=self._host, port=self._port,
                            ray_node_id=context.get_node_id(), actor_id=context.get_actor_id() or "")

    def stats(self) -> NodeStats:
        server = self._server
        return NodeStats(node_id=self.node_id, connections=server.connection_count() if server else 0,
                         users=len(server.sessions) if server else 0, rss_bytes=_rss_bytes(),
                         draining=server.draining if server else False)

    async def drain(self, targets: list[NodeEndpoint], timeout_s: float) -> tuple[int, int]:
        """Take no new sessions and move every one here to `targets` (issue 20): out of the registry,
        then each session gets a `move` frame with a token pinned to its new node (the same login and
        expiry: only the pin changes) and closes once its client has reconnected there. Returns (told,
        closed): sessions told to move, and those still here after `timeout_s`, closed (1001)."""
        assert self._server is not None and targets, "a started node, and somewhere to go"
        await self._leave_registry()
        issuer = TokenIssuer(self._backends.keys(), self._settings.base_url, self._settings.access_token_ttl_s)

        def move_frame(session: Session) -> str:
            principal = session.principal
            assert principal is not None and principal.user_id is not None  # an authenticated session
            target = targets[principal.user_id % len(targets)]  # a user's sessions move together
            token = issuer.issue_user(principal.user_id, principal.client_id, target.node_id, principal.family,
                                      principal.scope, expires_at=principal.exp)
            return dumps({"type": "move", "socket_url": target.url, "socket_node": target.node_id,
                          "access_token": token, "expires_in": max(0, principal.exp - int(time.time()))})

        told = self._server.move_all(move_frame)
        log.info("draining: %d sessions told to move to %s", told, [t.node_id for t in targets],
                 extra={"node": self.node_id})
        for _ in range(max(1, int(timeout_s / DRAIN_POLL_S))):  # moved clients close as they reconnect
            if not self._server.connection_count():
                break
            await asyncio.sleep(DRAIN_POLL_S)
        closed = self._server.close_remaining()
        return told, closed

    def deliver(self, blob: bytes) -> None:
        """A shard's deliveries for this node (`wire.pack_deliveries`), through Ray while this node
        has no stream to that shard."""
        if self._server is not None:
            self._server.deliver(blob)

    def push(self, users: list[int], frame: str) -> int:
        """A frame (JSON text) for every session here of `users` (issue 18; `adapters.user_push`
        finds the nodes): news that is not a message, such as contacts' and presence. How many
        sessions it went to."""
        return self._server.push(users, frame) if self._server is not None else 0

    def push_many(self, pushes: list[tuple[list[int], str]]) -> int:
        """`push` for several frames in one call, in order."""
        return sum(self.push(users, frame) for users, frame in pushes)

    async def resync_presence(self) -> None:
        """Tell presence everything this node holds (it may have restarted empty)."""
        sessions = self._server.sessions_per_user() if self._server else {}
        await self._presence.replace_node(self.node_id, sessions)

    # -- background upkeep ----------------------------------------------------------------------

    async def _refresh_presence(self) -> None:
        """Entries expire unless refreshed; a lost presence store is whole again within one round."""
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.resync_presence()
            except Exception as exc:  # presence down: sessions still work, fan-out falls back
                log.warning("presence refresh failed: %r", exc)

    async def _leave_registry(self) -> None:
        """Out of the registry (Nacos), so nobody is sent here, and no longer re-registered."""
        if self._upkeep is not None:
            self._upkeep.cancel()  # or it would register the node again
        if self._registration is not None:
            try:
                await self._registration.deregister()
            except Exception as exc:  # the registry's own expiry forgets the node soon enough
                log.warning("deregistering failed: %r", exc, extra={"node": self.node_id})

    async def _report_sessions(self) -> None:
        """The sessions gauge (issue 20), every few seconds: Ray's agent exports every 10 s or so anyway."""
        metrics.declare_backend_errors()
        while True:
            if self._server is not None:
                metrics.gauge("imray_sessions", self._server.connection_count(), node=self.node_id)
            await asyncio.sleep(SESSIONS_METRIC_S)

    async def _follow_keys(self) -> None:
        """Sessions whose token's key was retired are closed within a few seconds (issue 17, keys)."""
        keys = self._backends.keys()
        ring = keys.current()
        while True:
            await asyncio.sleep(KEYRING_CHECK_S)
            try:
                now = keys.current()  # looks at the files at most every keyfiles.CHECK_S
            except Exception as exc:
                log.warning("keyring check failed: %r", exc)
                continue
            if now is not ring and self._server is not None:
                closed = self._server.close_retired({k.kid for k in now.keys})
                if closed:
                    log.info("closed %d sessions of retired keys", closed)
            ring = now

    def _metadata(self) -> dict[str, str]:
        endpoint = self.endpoint()
        return {"node_id": self.node_id, "ray_node_id": endpoint.ray_node_id, "actor_id": endpoint.actor_id,
                "connections": str(self.stats().connections), "url": endpoint.url}

    async def _keep_registration_current(self) -> None:
        """The connection count in the registry follows the node's, re-registered at most once a second."""
        assert self._registration is not None
        while True:
            await asyncio.sleep(REGISTRATION_UPDATE_S)
            try:
                await self._registration.update(self._metadata())
            except Exception as exc:  # the registry away: the instance comes back with the next success
                metrics.backend_error("nacos")
                log.warning("registry update failed: %r", exc)

    # -- calls to shards (streams), presence and the supervisor ---------------------------------

    async def _call_shard(self, index: int, items: list[Item]) -> list[Outcome]:
        started = time.perf_counter()
        outcomes = unpack_outcomes(await self._links[index].submit(pack_items(items)))
        metrics.observe("imray_ack_ms", (time.perf_counter() - started) * 1000, node=self.node_id)
        return outcomes

    def _presence_change(self, user: int, delta: int) -> asyncio.Future[None]:
        return self._to_presence.submit(self.node_id, (user, delta))

    async def _call_presence(self, node: str, changes: list[tuple[int, int]]) -> list[None]:
        try:
            transitions = await self._presence.apply(node, changes)
        except Exception as exc:  # degrade, never refuse a session: the next refresh repairs presence
            if self._settings.redis_url:  # embedded, presence is an actor: not a backend's error
                metrics.backend_error("redis")
            log.warning("presence update failed: %r", exc)
        else:
            if transitions and self._news is not None:
                self._news.post(transitions)
        return [None] * len(changes)

    async def _url_of(self, node_id: str) -> str | None:
        url: str | None = await self._supervisor.url_of.remote(node_id)
        return url
