"""The one wiring place: what a process talks to, chosen once from the settings.

Every actor and Serve replica makes one `Backends` and asks it for the ports it needs: database,
cache, revoked logins, presence, object store, rate limits, live settings, registration in the
outside registry, the socket-node directory, the named actors. The choice between the embedded
adapters (SQLite, per-process maps, the presence actor, local files, no registry) and the production
ones (MySQL/MariaDB, Redis, S3, Nacos) is made here and nowhere else; callers see only the ports.

Builders are cheap and do no I/O; what a built part must keep doing in the background (following
Nacos's live settings, following revoked logins from the database) starts at `start()`, and
`stop()` undoes everything that was built, newest first, collecting the errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from imray.adapters.cache import Cache, LocalCache, RedisCache
from imray.adapters.live_config import ConfigSource, LiveSettings
from imray.adapters.named_actors import LOGIN_FAILURES, PRESENCE, ActorHandle, NamedActors, RayNamedActors
from imray.adapters.objects import LocalObjects, ObjectStore, S3Objects
from imray.adapters.presence import ActorPresence, PresencePort, RedisPresence
from imray.adapters.rate_limits import (
    ActorFailureCounts,
    RateLimit,
    RateLimiter,
    RedisFailureCounts,
    SharedRateLimiter,
)
from imray.adapters.registry import Directory, NoDirectory, Registration, Unregistered
from imray.adapters.revocations import RevocationFollower, Revocations
from imray.domain.authenticator import Authenticator
from imray.domain.keyring import KeySource
from imray.domain.login_guard import FailureCounts
from imray.domain.tokens import PublicKey, TokenVerifier
from imray.lifecycle import Tasks, Teardowns
from imray.settings import Settings, parse_settings
from imray.storage.db import Database

log = logging.getLogger("imray.backends")
# A process starts serving with its static settings if Nacos's config does not answer in this time
# (startup must not hang on an unreachable config centre), and keeps asking in the background.
CONFIG_WAIT_S = 10.0
CONFIG_RETRY_S = 10.0


class Backends:
    """The parts one process (`process` names it in logs and in Nacos's work directories) uses."""

    def __init__(self, settings: Settings, process: str) -> None:
        self.settings = settings
        self.process = process
        self._built: dict[str, Any] = {}
        self._tasks = Tasks(process)
        self._teardowns = Teardowns(process)
        self._follow_revocations = False
        self._started = False

    def _once(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._built:
            self._built[name] = build()
        return self._built[name]

    # -- what the production stack swaps: database, cache, presence, objects, rate limits --------

    def database(self, threads: int = 4) -> Database:
        """The process's database (its thread pool sized by the first caller)."""
        def build() -> Database:
            db = Database(self.settings.db_url, threads=threads, timeout_s=self.settings.database_timeout_s)
            self._teardowns.add("database", db.close)
            return db

        database: Database = self._once("database", build)
        return database

    def cache(self) -> Cache:
        def build() -> Cache:
            if not self.settings.redis_url:
                return LocalCache()
            redis_cache = RedisCache(self.settings.redis_url)
            self._teardowns.add("redis cache", redis_cache.close)
            return redis_cache

        cache: Cache = self._once("cache", build)
        return cache

    def revoked_logins(self, follow: bool = True) -> Revocations:
        """The denylist of revoked logins: this process's view of it follows the database from
        `start()` on both stacks (Redis, when there is one, adds the revocations of the last
        second); `follow=False` for a process that only revokes (it writes them to the database)."""
        self._follow_revocations = self._follow_revocations or follow

        def build() -> Revocations:
            revocations = Revocations(self.settings.redis_url)
            self._teardowns.add("revocations", revocations.close)
            return revocations

        revoked: Revocations = self._once("revoked", build)
        return revoked

    def keys(self) -> KeySource:
        """The signing keyring, read from `keys_dir` (never handed over by Ray), followed as it rotates."""
        def build() -> KeySource:
            from imray.storage.keyfiles import KeyFiles

            return KeyFiles(self.settings.keys_path)

        keys: KeySource = self._once("keys", build)
        return keys

    def authenticator(self, keys: list[PublicKey] | None = None, remember: int = 0) -> Authenticator:
        """Bearer-token checks: signature and claims here (with the keyring's keys unless `keys` are
        given), revocation through `revoked_logins`."""
        verifier = TokenVerifier(self.keys() if keys is None else keys, self.settings.base_url, remember=remember)
        return Authenticator(verifier, self.revoked_logins())

    def presence(self) -> PresencePort:
        """Where users' sessions are: Redis, or the presence actor (which must exist by now)."""
        def build() -> PresencePort:
            if not self.settings.redis_url:
                return ActorPresence(self.actors().presence())
            redis_presence = RedisPresence(self.settings.redis_url)
            self._teardowns.add("redis presence", redis_presence.close)
            return redis_presence

        presence: PresencePort = self._once("presence", build)
        return presence

    def host_presence(self) -> ActorHandle | None:
        """The supervisor's part: the embedded presence actor, started only if none is alive (a
        restarted supervisor adopts it); with Redis there is nothing to host. Detached: it outlives
        the supervisor, and `runtime.undeploy` removes it."""
        if self.settings.redis_url:
            return None
        from imray.actors.presence import Presence

        return Presence.options(  # type: ignore[attr-defined]  # ray.remote classes gain .options
            name=PRESENCE, namespace=self.settings.namespace, lifetime="detached", get_if_exists=True).remote()

    def objects(self) -> ObjectStore:
        def build() -> ObjectStore:
            if self.settings.s3_endpoint:
                return S3Objects(self.settings)
            return LocalObjects(self.settings.data_path / "objects")

        objects: ObjectStore = self._once("objects", build)
        return objects

    def rate_limit(self) -> RateLimit:
        """Per-caller request counts, their limit following the live settings."""
        def build() -> RateLimit:
            per_minute = self.settings.rate_limit_per_minute
            limiter: RateLimit = (SharedRateLimiter(self.settings.redis_url, per_minute) if self.settings.redis_url
                                  else RateLimiter(per_minute))
            live = self.live()
            live.on_change(lambda _values: setattr(limiter, "per_minute", live.rate_limit_per_minute))
            return limiter

        limit: RateLimit = self._once("rate_limit", build)
        return limit

    def login_failures(self) -> FailureCounts:
        """Failed logins per account and address, shared by every AuthService replica: in Redis, or
        in the cluster's one LoginFailures actor (started by the first replica that asks)."""
        def build() -> FailureCounts:
            if self.settings.redis_url:
                counts = RedisFailureCounts(self.settings.redis_url)
                self._teardowns.add("redis login failures", counts.close)
                return counts
            from imray.actors.login_failures import LoginFailures

            return ActorFailureCounts(lambda: LoginFailures.options(  # type: ignore[attr-defined]  # @ray.remote
                name=LOGIN_FAILURES, namespace=self.settings.namespace, lifetime="detached",
                get_if_exists=True).remote())

        failures: FailureCounts = self._once("login_failures", build)
        return failures

    # -- Nacos: live settings, registration, directory ------------------------------------------

    def live(self) -> LiveSettings:
        """The settings that change without a restart (Nacos's imray.yaml), followed from `start()`."""
        def build() -> LiveSettings:
            source: ConfigSource | None = None
            if self.settings.nacos_server:
                from imray.adapters.nacos import NacosConfig

                nacos_config = NacosConfig(self.settings, self.process)
                self._teardowns.add("nacos config", nacos_config.close)
                source = nacos_config
            return LiveSettings(self.settings, source)

        live: LiveSettings = self._once("live", build)
        return live

    def registration(self, service: str, host: str, port: int) -> Registration:
        """This process as an instance of `service` in the outside registry; deregistered at stop."""
        def build() -> Registration:
            if not self.settings.nacos_server:
                return Unregistered()
            from imray.adapters.nacos import NacosInstance

            instance = NacosInstance(self.settings, service, host, port, self.process)
            self._teardowns.add(f"{service} registration", instance.deregister)
            return instance

        registration: Registration = self._once(f"registration:{service}", build)
        return registration

    def directory(self, service: str) -> Directory:
        """The instances of `service` the outside registry shows (none without one)."""
        def build() -> Directory:
            if not self.settings.nacos_server:
                return NoDirectory()
            from imray.adapters.nacos import NacosDirectory

            directory = NacosDirectory(self.settings, service, self.process)
            self._teardowns.add(f"{service} directory", directory.close)
            return directory

        directory: Directory = self._once(f"directory:{service}", build)
        return directory

    # -- the cluster --------------------------------------------------------------------------------

    def actors(self) -> NamedActors:
        actors: NamedActors = self._once(
            "actors", lambda: RayNamedActors(self.settings.namespace, self.settings.shard_count))
        return actors

    # -- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following what was built: live settings, and (embedded) revoked logins. A Nacos
        that does not answer is logged: the process serves with its static settings meanwhile."""
        if self._started:
            return
        self._started = True
        if "live" in self._built:
            live: LiveSettings = self._built["live"]
            self._teardowns.add("live settings", live.stop)
            try:
                await asyncio.wait_for(live.start(), CONFIG_WAIT_S)
            except Exception as exc:
                log.warning("%s: live settings unavailable, trying again in the background: %r", self.process, exc)
                self._tasks.spawn(self._follow_live_later(live), name="live settings")
        if self._follow_revocations:
            db = self._built.get("database") or self.database(threads=1)
            follower = RevocationFollower(db, self.revoked_logins(), self.settings.access_token_ttl_s)
            self._tasks.spawn(follower.run(), name="revocation follower")
        self._teardowns.add("background tasks", self._tasks.cancel_all)

    async def _follow_live_later(self, live: LiveSettings) -> None:
        while True:
            await asyncio.sleep(CONFIG_RETRY_S)
            try:
                await asyncio.wait_for(live.start(), CONFIG_WAIT_S)
                return
            except Exception as exc:
                log.warning("%s: live settings still unavailable: %r", self.process, exc)

    async def stop(self) -> list[BaseException]:
        """Undo everything built and started, newest first; the errors, also logged. Afterwards the
        builders build afresh (a stopped part is never handed out again)."""
        errors = await self._teardowns.run()
        self._built.clear()
        self._started = False
        self._follow_revocations = False
        return errors


def with_config_overlay(settings: Settings) -> Settings:
    """Nacos's imray.yaml overlays the settings at `imray up` (a few of them stay live afterwards)."""
    if not settings.nacos_server:
        return settings
    import asyncio

    from imray.adapters.nacos import NacosConfig

    async def read() -> str:
        config = NacosConfig(settings, "imray-up")
        try:
            return await config.get()
        finally:
            await config.close()

    overlay = parse_settings(asyncio.run(read()), "nacos imray.yaml")
    return settings.replace(**overlay) if overlay else settings
