"""ConversationShard: the single owner of a slice of conversations (hash of the conv id).

Three parts share the actor's event loop: `ShardListener` takes the socket nodes' streams (see
`stream`), `ShardCommitter` commits everything queued since its last commit in one transaction and
answers in order, and `FanOut` hands what was committed to the socket nodes whose sessions need it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import ray

from imray.actors.fanout import FanOut
from imray.actors.outbox_sweep import sweep_forever
from imray.actors.shard_commit import ShardCommitter
from imray.actors.shard_listener import NodeStreams, ShardListener
from imray.backends import Backends
from imray.domain.message_changes import Rules
from imray.domain.messaging import ConversationLog, Item, Outcome
from imray.domain.nodes import ShardEndpoint
from imray.heap import freeze_startup_heap
from imray.lifecycle import Tasks, Teardowns
from imray.settings import Settings
from imray.storage.message_store import SqlMessageStore

if TYPE_CHECKING:
    from imray.actors.notifier import Notifier



# Ray's stubs lack the actor options (max_concurrency), and mypy keeps the class a class: callers'
# `.options()` / `.remote()` are untyped.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=10000)  # type: ignore[call-overload]
class ConversationShard:
    def __init__(self, index: int, settings: Settings) -> None:
        self._index = index
        self._backends = Backends(settings, f"shard-{index}")
        store = SqlMessageStore(self._backends.database(threads=2))
        conversations = ConversationLog(store)
        live = self._backends.live()

        def follow(_values: object = None) -> None:
            conversations.direct_messages = live.direct_messages
            conversations.rules = Rules(settings.recall_window_s * 1000, settings.max_reactions, live.max_text_length)

        follow()
        live.on_change(follow)
        self._store = store
        self._shards = settings.shard_count
        streams = NodeStreams()
        self._notifier = _notifier(index, settings, store)  # None: no webhook configured, nothing runs
        self._fanout = FanOut(index, settings, self._backends.actors(), streams, store,
                              self._notifier.post if self._notifier is not None else None)
        self._committer = ShardCommitter(index, conversations, store, self._fanout.post, settings.shard_queue_items)
        host = settings.socket_host or ray.util.get_node_ip_address()
        self._listener = ShardListener(index, host, self._committer.submit, streams, self._fanout.node_ready)
        self._tasks = Tasks(f"shard-{index}")
        self._started: asyncio.Future[None] | None = None
        self._teardowns = Teardowns(f"shard-{index}")  # run newest first: listener, committer, ...
        self._teardowns.add("background tasks", self._tasks.cancel_all)
        if self._notifier is not None:
            self._teardowns.add("notifier", self._notifier.stop)
        self._teardowns.add("fan-out", self._fanout.stop)
        self._teardowns.add("committer", self._committer.stop)
        self._teardowns.add("listener", self._listener.stop)
        freeze_startup_heap()

    # The supervisor calls start() once it has created the shard. A shard that Ray restarted runs
    # only __init__: stream_endpoint() and forget(), the first calls any peer makes to it, therefore
    # await start() first, which is why it is idempotent and safe to call concurrently.
    async def start(self) -> None:
        """Listen for the socket nodes' streams, and run the commit and fan-out loops."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        try:
            # First: embedded, the presence actor must exist, and if it does not yet nothing has started.
            presence = self._backends.presence()
            self._committer.start()
            self._fanout.start(presence)
            if self._notifier is not None:
                self._notifier.start(presence)
            await self._listener.start()
        except BaseException:
            self._started = None  # the next caller tries again (each part starts at most once)
            raise
        # Live settings follow Nacos in the background: a slow Nacos must not hold back the streams.
        self._tasks.spawn(self._backends.start(), name="backends")
        self._tasks.spawn(sweep_forever(self._store, self._committer.publish, self._index, self._shards),
                          name="outbox sweep")

    async def stop(self) -> None:
        """Close the streams, end the loops (what is still queued is answered NOT_STORED), and stop
        the backends; errors are logged, and each part stops regardless."""
        await self._teardowns.run()
        await self._backends.stop()

    def ping(self) -> int:
        return self._index

    async def pause_fanout(self, paused: bool) -> None:
        """Hold this shard's deliveries back (commits and acks go on) until called with False. For
        tests: a crash while paused loses the fan-out of what was acked, which the socket nodes then
        get re-delivered (`redelivery`). A restarted shard starts unpaused."""
        await self.start()
        self._fanout.pause(paused)

    async def stream_endpoint(self) -> ShardEndpoint:
        """Where socket nodes open their stream to this shard, and the secret that admits them."""
        await self.start()
        return self._listener.endpoint()

    async def send(self, items: list[Item]) -> list[Outcome]:
        """Sends from the server API (a bot's) and changes to messages (issue 18): queued and committed
        like a socket node's batch, and delivered the same way; the outcome comes back through Ray
        instead of a stream."""
        await self.start()
        return await self._committer.submit([*items])

    async def publish(self, convs: list[str]) -> None:
        """Commit the group events waiting in the outbox for `convs` (issue 18), after every batch
        queued before; returns once they are committed."""
        await self.start()
        await self._committer.publish(convs)

    async def forget(self, convs: list[str]) -> None:
        """Membership of these conversations changed (group add/remove)."""
        await self.start()
        await self._committer.forget(convs)


def _notifier(index: int, settings: Settings, store: SqlMessageStore) -> Notifier | None:
    """The offline-notification webhook's sender (issue 18), only when a URL is configured: httpx and
    the notifier are not even imported otherwise."""
    if not settings.notify_webhook_url:
        return None
    from imray.actors.notifier import Notifier
    from imray.adapters.webhook import WebhookClient

    client = WebhookClient(settings.notify_webhook_url, settings.notify_webhook_secret, settings.notify_timeout_s,
                           settings.notify_concurrency)
    return Notifier(index, settings, client, muted=store.muted_conversations)
