"""ShardCommitter on a SQLite file (no Ray): a row the database refuses fails alone, a seq taken
behind the shard's back is read again, and the queue is bounded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from imray.actors.shard_commit import ShardCommitter
from imray.domain.messaging import REFUSED, SHARD_BUSY, Batch, ConversationLog, Delivery, Outcome, SendItem
from imray.storage import accounts, migrate
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore
from imray.storage.schema import messages


class Store(SqlMessageStore):
    """The real store, which refuses batches carrying a row with body "poison" (as a database
    refuses a row it cannot take), and whose commits can be held back."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.commits = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, batch: Batch) -> None:
        await self.gate.wait()
        self.commits += 1
        if any(row["body"] == "poison" for row in batch.rows):
            raise IntegrityError("INSERT INTO messages", {}, Exception("refused"))
        await super().commit(batch)


@pytest.fixture
def db(sqlite_db: Database) -> Database:
    return sqlite_db  # conftest's fresh SQLite database with imray's schema


def users(db: Database, count: int) -> list[int]:
    return db.transaction(lambda c: [accounts.create_user(c, f"user{i}", "x", "n")["id"] for i in range(count)])


def send(sender: int, conv: str, client_id: str, body: str = "hi") -> SendItem:
    return SendItem(sender=sender, session="s", client_id=client_id, conv=conv, kind="text", body=body)


def seq(outcome: Outcome) -> int | None:
    return json.loads(outcome.ack)["seq"] if outcome.ack else None


class Committer:
    def __init__(self, store: Store, max_queued: int = 50_000) -> None:
        self.delivered: list[Delivery] = []
        self.log = ConversationLog(store)
        self.committer = ShardCommitter(0, self.log, store, self.delivered.extend, max_queued)
        self.committer.start()

    async def __call__(self, *items: SendItem) -> list[Outcome]:
        return await self.committer.submit(list(items))


async def test_one_refused_row_fails_alone_and_every_other_item_of_its_commit_is_stored(db: Database) -> None:
    a, b, c = users(db, 3)
    store = Store(db)
    commit = Committer(store)
    ab, ac = f"d:{a}:{b}", f"d:{a}:{c}"
    items = [send(a, ab, "1"), send(b, ab, "2"), send(a, ac, "3", "poison"), send(c, ac, "4"), send(a, ab, "5")]
    outcomes = await commit(*items)
    assert [o.error for o in outcomes] == [None, None, REFUSED, None, None]
    assert [seq(o) for o in outcomes] == [1, 2, None, 1, 3]
    assert sorted(d.frame for d in commit.delivered if '"poison"' in d.frame) == []
    assert len([d for d in commit.delivered if d.seq]) == 4
    # Later sends to the same conversations go on without a gap.
    assert [seq(o) for o in await commit(send(c, ac, "6"), send(b, ab, "7"))] == [2, 4]
    await commit.committer.stop()


def write_behind(db: Database, conv: str, seq_: int, sender: int) -> None:
    db.transaction(lambda c: c.execute(insert(messages).values(
        msg_id=f"behind{seq_:026d}", conv=conv, seq=seq_, sender_id=sender, client_id=f"behind-{seq_}",
        kind="text", body="behind", ts=1)))


async def test_after_a_seq_conflict_the_shard_reads_the_last_seq_from_the_database(db: Database) -> None:
    a, b = users(db, 2)
    commit = Committer(Store(db))
    conv = f"d:{a}:{b}"
    assert [seq(o) for o in await commit(send(a, conv, "1"))] == [1]
    write_behind(db, conv, 2, b)  # a second writer (or a commit whose answer was lost) took seq 2
    write_behind(db, conv, 3, b)
    assert [seq(o) for o in await commit(send(a, conv, "2"), send(b, conv, "3"))] == [4, 5]
    assert [seq(o) for o in await commit(send(a, conv, "4"))] == [6]
    await commit.committer.stop()


async def test_a_resend_the_shard_had_not_seen_gets_its_first_ack(db: Database) -> None:
    a, b = users(db, 2)
    conv = f"d:{a}:{b}"
    before, after = Committer(Store(db)), Committer(Store(db))  # a shard, and the same restarted
    first = await before(send(a, conv, "same"))
    again = await after(send(a, conv, "same"), send(b, conv, "other"))
    assert again[0].ack == first[0].ack and [seq(o) for o in again] == [1, 2]
    await before.committer.stop()
    await after.committer.stop()


async def test_past_its_bound_the_queue_refuses_a_batch_at_once_and_stores_nothing_of_it(db: Database) -> None:
    a, b = users(db, 2)
    store = Store(db)
    commit = Committer(store, max_queued=3)
    conv = f"d:{a}:{b}"
    store.gate.clear()  # the first commit holds: what comes meanwhile queues
    first = asyncio.ensure_future(commit(send(a, conv, "0")))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(commit(send(a, conv, "1"), send(a, conv, "2")))
    refused = await asyncio.wait_for(commit(send(a, conv, "3"), send(a, conv, "4")), 1)
    assert [o.error for o in refused] == [SHARD_BUSY, SHARD_BUSY]
    one_more = asyncio.ensure_future(commit(send(a, conv, "5")))  # still within the bound
    store.gate.set()
    assert [seq(o) for o in await first] == [1]
    assert [seq(o) for o in await queued] == [2, 3]
    assert [seq(o) for o in await one_more] == [4]
    await commit.committer.stop()


async def test_client_ids_are_compared_exactly_after_the_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    migrate.upgrade(url)
    assert (migrate.current(url) or "") >= "0003"  # the head: later migrations keep 0003's columns
    db = Database(url)
    try:
        a, b = users(db, 2)
        conv = f"d:{a}:{b}"
        commit = Committer(Store(db))
        ids = ["p", "p ", "P", "p\u00e9", "pe"]
        outcomes = await commit(*(send(a, conv, i) for i in ids))
        assert [seq(o) for o in outcomes] == [1, 2, 3, 4, 5]
        restarted = Committer(Store(db))
        resent = await restarted(*(send(a, conv, i) for i in reversed(ids)))
        assert [seq(o) for o in resent] == [5, 4, 3, 2, 1]
        await commit.committer.stop()
        await restarted.committer.stop()
    finally:
        db.close()


class AnswerLost(Store):
    """The real store, whose next commit goes through but whose answer is lost (the connection
    dropped after COMMIT), as when the database restarts mid-commit."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.lose_next = False

    async def commit(self, batch: Batch) -> None:
        await super().commit(batch)
        if self.lose_next:
            self.lose_next = False
            raise ConnectionError("server closed the connection after COMMIT")


async def test_a_commit_whose_answer_was_lost_is_fanned_out_before_anything_newer(db: Database) -> None:
    a, b = users(db, 2)
    store = AnswerLost(db)
    commit = Committer(store)
    ab = f"d:{a}:{b}"
    assert [seq(o) for o in await commit(send(a, ab, "1"))] == [1]
    store.lose_next = True
    with pytest.raises(ConnectionError):  # the sender is told `internal` and will resend
        await commit(send(a, ab, "2"), send(b, ab, "3"))
    assert [d.seq for d in commit.delivered] == [1]  # nothing fanned out on a failed commit
    # The resends (and a new message) once the database answers: the same acks, nothing stored
    # twice, and the messages that had landed reach the members, in seq order, before the new one.
    outcomes = await commit(send(a, ab, "2"), send(b, ab, "3"), send(a, ab, "4"))
    assert [seq(o) for o in outcomes] == [2, 3, 4]
    assert [d.seq for d in commit.delivered] == [1, 2, 3, 4]
    rows = db.transaction(lambda c: c.execute(messages.select().where(messages.c.conv == ab)).all())
    assert sorted(r.seq for r in rows) == [1, 2, 3, 4]


async def test_a_commit_that_failed_before_it_landed_fans_nothing_out_later(db: Database) -> None:
    a, b = users(db, 2)
    store = Store(db)
    commit = Committer(store)
    ab = f"d:{a}:{b}"
    original = store.commit

    async def broken(batch: Batch) -> None:
        raise ConnectionError("the database is away")

    store.commit = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await commit(send(a, ab, "1"))
    store.commit = original  # type: ignore[method-assign]
    assert [seq(o) for o in await commit(send(a, ab, "1"))] == [1]
    assert [d.seq for d in commit.delivered] == [1]  # delivered once, by the commit that stored it
