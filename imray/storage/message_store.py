"""The SQL adapter of the messaging port: what a ConversationShard reads and commits."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection

from imray.domain.conversations import ConvId
from imray.domain.files import Upload
from imray.domain.message_changes import Target
from imray.domain.messaging import Batch, GroupRules, MsgFrame, PendingEvent
from imray.storage import accounts, conversation_list, outbox
from imray.storage import contacts as contact_store
from imray.storage import files as file_store
from imray.storage import groups as group_store
from imray.storage import message_changes as changes
from imray.storage import messages as msgs
from imray.storage.db import Database
from imray.storage.schema import group_members, groups, users


class SqlMessageStore:
    """`domain.messaging.MessageStore` on the database: reads in the pool, the commit as one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def members(self, convs: Sequence[ConvId]) -> dict[str, frozenset[int] | None]:
        def load(conn: Connection) -> dict[str, frozenset[int] | None]:
            out: dict[str, frozenset[int] | None] = {}
            group_ids = [c.group_id for c in convs if c.is_group]
            if group_ids:
                existing = set(conn.execute(select(groups.c.id).where(groups.c.id.in_(group_ids))).scalars())
                rows = conn.execute(select(group_members.c.group_id, group_members.c.user_id)
                                    .where(group_members.c.group_id.in_(group_ids))).all()
                by_group: dict[int, set[int]] = {g: set() for g in existing}
                for row in rows:
                    by_group.setdefault(row.group_id, set()).add(row.user_id)
                out.update({f"g:{g}": frozenset(by_group[g]) if g in existing else None for g in group_ids})
            pairs = [c for c in convs if not c.is_group]
            if pairs:
                wanted = {u for c in pairs for u in (c.a, c.b)}
                # A deleted account (issue 18) keeps its row but no longer takes direct messages.
                found = set(conn.execute(select(users.c.id).where(users.c.id.in_(wanted),
                                                                  users.c.deleted_at.is_(None))).scalars())
                out.update({str(c): frozenset((c.a, c.b)) if {c.a, c.b} <= found else None for c in pairs})
            return out

        return await self._db.run(load)

    async def muted(self, convs: Sequence[ConvId]) -> dict[str, frozenset[int]]:
        """Per direct conversation, the side that the other side has blocked."""
        if not convs:
            return {}
        found = await self._db.run(lambda conn: accounts.blocks_between(conn, [(c.a, c.b) for c in convs]))
        return {str(c): frozenset(blocked for blocker, blocked in found if {blocker, blocked} == {c.a, c.b})
                for c in convs}

    async def blockers(self, groups: Mapping[str, frozenset[int]]) -> dict[str, dict[int, frozenset[int]]]:
        """Per group (conv -> its members, as `members` read them), each member blocked by other
        members -> those members (who see them hidden)."""
        everyone = sorted({u for found in groups.values() for u in found})
        if not everyone:
            return {}
        pairs = await self._db.run(lambda conn: group_store.blocks_among(conn, everyone, everyone))
        out: dict[str, dict[int, frozenset[int]]] = {}
        for conv, found in groups.items():
            hiding: dict[int, set[int]] = {}
            for blocker, blocked in pairs:
                if blocker in found and blocked in found:
                    hiding.setdefault(blocked, set()).add(blocker)
            if hiding:
                out[conv] = {u: frozenset(b) for u, b in hiding.items()}
        return out

    async def contacts(self, convs: Sequence[ConvId]) -> set[str]:
        """The direct conversations among `convs` whose two users are contacts (issue 18)."""
        found = await self._db.run(lambda conn: contact_store.contact_pairs(conn, [(c.a, c.b) for c in convs]))
        return {str(c) for c in convs if (c.a, c.b) in found}

    async def muted_conversations(self, pairs: list[tuple[int, str]]) -> set[tuple[int, str]]:
        """The (user, conv) pairs among `pairs` whose user muted the conversation (issue 18)."""
        return await self._db.read(lambda conn: conversation_list.muted_among(conn, pairs))

    async def group_rules(self, group_ids: Sequence[int]) -> dict[str, GroupRules]:
        return await self._db.run(lambda conn: changes.group_rules(conn, group_ids))

    async def targets(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Target]:
        return await self._db.run(lambda conn: changes.targets(conn, keys))

    async def reacted(self, keys: Sequence[tuple[str, int, int, str]]) -> set[tuple[str, int, int, str]]:
        return await self._db.run(lambda conn: changes.reacted(conn, keys))

    async def pending_events(self, convs: Sequence[str]) -> list[PendingEvent]:
        return await self._db.run(lambda conn: outbox.pending_for(conn, convs))

    async def stale_event_convs(self, older_than_ms: int, limit: int) -> list[str]:
        """Conversations whose group events wait since before `older_than_ms`: their publisher died."""
        return await self._db.read(lambda conn: outbox.stale_convs(conn, older_than_ms, limit))

    async def last_seqs(self, convs: Sequence[str]) -> dict[str, int]:
        return await self._db.run(lambda conn: msgs.last_seqs(conn, convs))

    async def files(self, file_ids: Sequence[str]) -> dict[str, Upload]:
        return await self._db.run(lambda conn: file_store.files_by_ids(conn, list(file_ids)))

    async def find_by_client_ids(self, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], MsgFrame]:
        return await self._db.run(lambda conn: msgs.find_by_client_ids(conn, keys))

    async def committed_since(self, since_ms: int, limit: int) -> list[MsgFrame]:
        """The newest `limit` messages committed at or after `since_ms` (by the committing shard's
        clock), oldest first, every shard's: the caller keeps its own."""
        since = f"{max(since_ms, 0):012x}"  # the msg_id's first 12 hex digits (`MessageIds`)
        return await self._db.read(lambda conn: msgs.committed_since(conn, since, limit))

    async def commit(self, batch: Batch) -> None:
        now = int(time.time() * 1000)
        if self._db.takes_scripts and not (batch.new_directs or batch.cursor_moves or batch.updates
                                           or batch.reactions or batch.mentions or batch.outbox_done):
            # Messages only (most commits): one round trip to the server instead of three. Anything
            # else `write` below stores sends the batch that way, whole.
            await self._db.run_script(lambda script: msgs.commit_batch_script(script, batch.rows, batch.heads, now))
            return

        def write(conn: Connection) -> None:
            msgs.commit_batch(conn, batch.rows, batch.heads, now)
            for conv, members in batch.new_directs.items():
                msgs.add_cursors(conn, conv, members)
            if batch.cursor_moves:
                msgs.advance_cursors(conn, batch.cursor_moves)
            if batch.updates or batch.reactions or batch.mentions:
                changes.apply(conn, batch.updates, batch.reactions, batch.mentions)
            if batch.outbox_done:
                outbox.done(conn, batch.outbox_done)

        await self._db.run_write(write)
