"""ConversationLog driven through the real SqlMessageStore on a SQLite file: no Ray, no network."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from imray.domain.errors import BadRequest, TooLarge
from imray.domain.messaging import (
    Batch,
    ConversationLog,
    Item,
    ReadItem,
    SendItem,
    TypingItem,
    check_send,
)
from imray.storage import accounts, conversation_list, groups, messages
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore


@dataclass
class World:
    db: Database
    store: SqlMessageStore
    alice: int
    bob: int
    carol: int
    group: int

    @property
    def direct(self) -> str:  # alice <-> bob
        a, b = sorted((self.alice, self.bob))
        return f"d:{a}:{b}"

    @property
    def gconv(self) -> str:  # alice (owner) and bob; carol is not a member
        return f"g:{self.group}"

    def history(self, conv: str, after_seq: int | None = None, limit: int = 200) -> list[dict]:
        return self.db.transaction(lambda c: messages.history(c, conv, after_seq, None, limit))

    def convs(self, user: int) -> dict[str, dict]:
        def load(conn):
            return conversation_list.page(conn, user, groups.group_ids_of(conn, user), None, 200)
        return {item["conv"]: item for item in self.db.transaction(load)}

    def count_rows(self) -> int:
        return len(self.history(self.direct)) + len(self.history(self.gconv))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    db.create_schema()

    def setup(conn):
        ids = [accounts.create_user(conn, name, "x", name)["id"] for name in ("alice", "bob", "carol")]
        group = groups.create_group(conn, "friends", ids[0], [ids[1]])
        return ids, group["id"]

    (alice, bob, carol), group = db.transaction(setup)
    try:
        yield World(db, SqlMessageStore(db), alice, bob, carol, group)
    finally:
        db.close()


def send(sender: int, conv: str, client_id: str, body: str = "hi", session: str = "s", kind: str = "text",
         file_id: str | None = None) -> SendItem:
    return SendItem(sender=sender, session=session, client_id=client_id, conv=conv, kind=kind, body=body,
                    file_id=file_id)


async def run_batch(log: ConversationLog, store: SqlMessageStore, items: Sequence[Item]) -> Batch:
    """What the shard actor does: plan, commit durably, then tell the log."""
    batch = await log.plan(items)
    await store.commit(batch)
    log.committed(batch)
    return batch


async def plan(log: ConversationLog, items: Sequence[Item]) -> Batch:
    return await log.plan(items)


def seqs(batch: Batch) -> list[int | None]:
    return [json.loads(o.ack)["seq"] if o.ack else None for o in batch.outcomes]


def errors(batch: Batch) -> list[str | None]:
    return [o.error[0] if o.error else None for o in batch.outcomes]


# --- seq ---------------------------------------------------------------------------------------

async def test_seq_from_one_without_gaps(world: World) -> None:
    log = ConversationLog(world.store)
    conv = world.direct
    got: list[int] = []
    for size in (1, 3, 2, 5):
        start = len(got)
        batch = await run_batch(log, world.store, [send(world.alice if i % 2 else world.bob, conv, f"c{start + i}")
                                                   for i in range(size)])
        assert errors(batch) == [None] * size
        got += seqs(batch)
    assert got == list(range(1, 12))
    stored = world.history(conv)
    assert [m["seq"] for m in stored] == list(range(1, 12))
    assert len({m["msg_id"] for m in stored}) == 11


async def test_seqs_are_per_conversation(world: World) -> None:
    log = ConversationLog(world.store)
    batch = await run_batch(log, world.store, [send(world.alice, world.direct, "a1"),
                                               send(world.alice, world.gconv, "a2"),
                                               send(world.bob, world.direct, "b1"), send(world.bob, world.gconv, "b2")])
    assert seqs(batch) == [1, 1, 2, 2]
    assert batch.heads == {world.direct: 2, world.gconv: 2}


async def test_ack_shape(world: World) -> None:
    log = ConversationLog(world.store)
    batch = await run_batch(log, world.store, [send(world.alice, world.direct, "cid-1", body="hello")])
    ack = json.loads(batch.outcomes[0].ack)
    assert set(ack) == {"type", "id", "msg_id", "conv", "seq", "ts"}
    assert ack["type"] == "ack" and ack["id"] == "cid-1" and ack["conv"] == world.direct and ack["seq"] == 1
    assert isinstance(ack["ts"], int) and ack["ts"] > 1_600_000_000_000  # milliseconds
    [row] = world.history(world.direct)
    assert (row["msg_id"], row["ts"], row["body"], row["from"]) == (ack["msg_id"], ack["ts"], "hello", world.alice)


# --- idempotent resend -----------------------------------------------------------------------------

async def test_resend_within_one_batch(world: World) -> None:
    log = ConversationLog(world.store)
    batch = await run_batch(log, world.store, [send(world.alice, world.direct, "dup", body="first"),
                                               send(world.alice, world.direct, "other"),
                                               send(world.alice, world.direct, "dup", body="second")])
    assert batch.outcomes[0].ack == batch.outcomes[2].ack
    assert seqs(batch) == [1, 2, 1]
    assert len(batch.rows) == 2
    assert [json.loads(d.frame)["seq"] for d in batch.deliveries] == [1, 2]  # the resend is not delivered again
    assert [m["body"] for m in world.history(world.direct)] == ["first", "hi"]


async def test_resend_across_batches(world: World) -> None:
    log = ConversationLog(world.store)
    first = await run_batch(log, world.store, [send(world.alice, world.direct, "dup")])
    again = await run_batch(log, world.store, [send(world.alice, world.direct, "dup", body="changed")])
    assert again.outcomes[0].ack == first.outcomes[0].ack
    assert again.rows == [] and again.heads == {} and again.deliveries == []
    assert len(world.history(world.direct)) == 1
    assert seqs(await run_batch(log, world.store, [send(world.alice, world.direct, "next")])) == [2]


async def test_resend_after_restart_is_deduplicated_by_the_database(world: World) -> None:
    first_log = ConversationLog(world.store)
    first = await run_batch(first_log, world.store, [send(world.alice, world.direct, "dup"),
                                                     send(world.bob, world.gconv, "g-dup")])
    log = ConversationLog(world.store)  # a restarted shard: nothing in memory
    again = await run_batch(log, world.store, [send(world.alice, world.direct, "dup"),
                                               send(world.bob, world.gconv, "g-dup"),
                                               send(world.alice, world.direct, "fresh")])
    assert again.outcomes[0].ack == first.outcomes[0].ack
    assert again.outcomes[1].ack == first.outcomes[1].ack
    assert seqs(again) == [1, 1, 2]  # the head was reloaded from the database too
    assert len(again.rows) == 1
    assert world.count_rows() == 3


async def test_dedupe_survives_memory_eviction(world: World) -> None:
    log = ConversationLog(world.store, dedupe_capacity=1)
    first = await run_batch(log, world.store, [send(world.alice, world.direct, "a")])
    await run_batch(log, world.store, [send(world.alice, world.direct, "b"), send(world.alice, world.direct, "c")])
    again = await run_batch(log, world.store, [send(world.alice, world.direct, "a")])
    assert again.outcomes[0].ack == first.outcomes[0].ack and again.rows == []


async def test_same_client_id_from_another_sender_is_a_new_message(world: World) -> None:
    log = ConversationLog(world.store)
    batch = await run_batch(log, world.store, [send(world.alice, world.direct, "same"),
                                               send(world.bob, world.direct, "same")])
    assert seqs(batch) == [1, 2]
    assert json.loads(batch.outcomes[0].ack)["msg_id"] != json.loads(batch.outcomes[1].ack)["msg_id"]


# --- refusals --------------------------------------------------------------------------------

async def test_non_member_forbidden(world: World) -> None:
    log = ConversationLog(world.store)
    batch = await run_batch(log, world.store, [
        send(world.carol, world.gconv, "c1"),
        send(world.carol, world.direct, "c2"),
        ReadItem(world.carol, "s", world.gconv, 1),
        TypingItem(world.carol, "s", world.direct),
        send(world.alice, world.gconv, "ok"),
    ])
    assert errors(batch) == ["forbidden"] * 4 + [None]
    assert all(o.ack is None for o in batch.outcomes[:4])
    assert "member" in batch.outcomes[0].error[1]
    assert seqs(batch)[4] == 1  # the refused sends took no seq
    assert [len(world.history(c)) for c in (world.gconv, world.direct)] == [1, 0]


async def test_unknown_conversation_not_found(world: World) -> None:
    log = ConversationLog(world.store)
    unknown_user = world.carol + 1000
    batch = await plan(log, [
        send(world.alice, f"g:{world.group + 1000}", "x1"),
        send(world.alice, f"d:{world.alice}:{unknown_user}", "x2"),
        ReadItem(world.alice, "s", f"g:{world.group + 1000}", 3),
        TypingItem(world.alice, "s", f"d:{world.alice}:{unknown_user}"),
    ])
    assert errors(batch) == ["not_found"] * 4
    assert batch.rows == [] and batch.deliveries == []


@pytest.mark.parametrize("conv", ["d:2:1", "d:1:1", "x", "", "g:01", "g:0"])
async def test_bad_conv_id(world: World, conv: str) -> None:
    log = ConversationLog(world.store)
    batch = await plan(log, [send(world.alice, conv, "bad"), send(world.alice, world.direct, "good")])
    assert errors(batch) == ["bad_request", None]
    assert seqs(batch) == [None, 1]


async def test_membership_change_after_forget(world: World) -> None:
    log = ConversationLog(world.store)
    assert errors(await run_batch(log, world.store, [send(world.carol, world.gconv, "c1")])) == ["forbidden"]
    world.db.transaction(lambda c: groups.add_members(c, world.group, [world.carol]))
    log.forget(world.gconv)
    batch = await run_batch(log, world.store, [send(world.carol, world.gconv, "c1")])
    assert errors(batch) == [None] and seqs(batch) == [1]


# --- rollback ----------------------------------------------------------------------------------

async def test_rollback_restores_the_head(world: World) -> None:
    log = ConversationLog(world.store)
    await run_batch(log, world.store, [send(world.alice, world.direct, "m1")])
    failed = await plan(log, [send(world.alice, world.direct, "m2"), send(world.bob, world.direct, "m3"),
                              send(world.alice, world.gconv, "g1")])
    assert seqs(failed) == [2, 3, 1]
    log.rollback(failed)  # the commit failed
    batch = await run_batch(log, world.store, [send(world.bob, world.direct, "m4"),
                                               send(world.alice, world.gconv, "g2")])
    assert seqs(batch) == [2, 1]
    # the rolled-back client ids were never stored, so sending them again is a new message
    retry = await run_batch(log, world.store, [send(world.alice, world.direct, "m2")])
    assert seqs(retry) == [3] and len(retry.rows) == 1
    assert [m["seq"] for m in world.history(world.direct)] == [1, 2, 3]


async def test_rollback_of_a_first_message_recreates_cursors(world: World) -> None:
    log = ConversationLog(world.store)
    failed = await plan(log, [send(world.alice, world.direct, "m1")])
    assert world.direct in failed.new_directs
    log.rollback(failed)
    batch = await run_batch(log, world.store, [send(world.alice, world.direct, "m1")])
    assert seqs(batch) == [1]
    assert batch.new_directs == {world.direct: tuple(sorted((world.alice, world.bob)))}
    assert world.direct in world.convs(world.bob)


# --- reads, typing, deliveries -----------------------------------------------------------------------

async def test_read_cursor_is_clamped_to_the_head(world: World) -> None:
    log = ConversationLog(world.store)
    await run_batch(log, world.store, [send(world.alice, world.direct, f"m{i}") for i in range(3)])
    batch = await run_batch(log, world.store, [ReadItem(world.bob, "bob-s", world.direct, 99)])
    assert errors(batch) == [None] and batch.outcomes[0].ack is None
    assert batch.cursor_moves == [(world.bob, world.direct, 3)]
    [receipt] = batch.deliveries
    assert json.loads(receipt.frame) == {"type": "receipt", "conv": world.direct, "user_id": world.bob, "seq": 3}
    # The other member's sessions, and the reader's own other sessions (read sync), not the reading one.
    assert receipt.users == (world.alice, world.bob) and receipt.skip == "bob-s"
    assert world.convs(world.bob)[world.direct]["read_seq"] == 3


async def test_read_cursor_only_moves_forward(world: World) -> None:
    log = ConversationLog(world.store)
    await run_batch(log, world.store, [send(world.alice, world.direct, f"m{i}") for i in range(4)])
    await run_batch(log, world.store, [ReadItem(world.bob, "s", world.direct, 3)])
    batch = await run_batch(log, world.store, [ReadItem(world.bob, "s", world.direct, 1)])
    assert batch.cursor_moves == [] and batch.deliveries == []  # no move: nothing stored, no receipt
    assert world.convs(world.bob)[world.direct]["read_seq"] == 3
    # A fresh owner (a restarted shard) does not know the cursor; the store still never moves it back.
    batch = await run_batch(ConversationLog(world.store), world.store, [ReadItem(world.bob, "s", world.direct, 1)])
    assert batch.cursor_moves == [(world.bob, world.direct, 1)]
    assert world.convs(world.bob)[world.direct]["read_seq"] == 3


async def test_typing_is_relayed_not_stored(world: World) -> None:
    log = ConversationLog(world.store)
    batch = await run_batch(log, world.store, [TypingItem(world.alice, "s1", world.gconv)])
    assert errors(batch) == [None] and batch.rows == [] and batch.cursor_moves == []
    [typing] = batch.deliveries
    assert json.loads(typing.frame) == {"type": "typing", "conv": world.gconv, "user_id": world.alice}
    assert typing.users == (world.bob,)
    assert world.history(world.gconv) == []


async def test_deliveries_skip_only_the_sending_session(world: World) -> None:
    log = ConversationLog(world.store)
    batch = await run_batch(log, world.store, [send(world.alice, world.gconv, "c1", body="yo", session="alice-phone")])
    [delivery] = batch.deliveries
    assert delivery.skip == "alice-phone"
    assert set(delivery.users) == {world.alice, world.bob}  # alice's other sessions get it too
    frame = json.loads(delivery.frame)
    ack = json.loads(batch.outcomes[0].ack)
    assert frame == {"type": "msg", "conv": world.gconv, "seq": 1, "msg_id": ack["msg_id"], "from": world.alice,
                     "kind": "text", "body": "yo", "ts": ack["ts"]}


def _upload(world: World, file_id: str, owner: int, content_type: str) -> None:
    from imray.storage import files

    world.db.transaction(lambda c: files.add_file(c, {
        "file_id": file_id, "owner_id": owner, "purpose": "file", "object_key": f"files/{owner}/{file_id}",
        "content_type": content_type, "size": 10, "filename": None}))


async def test_file_message(world: World) -> None:
    _upload(world, "F1", world.alice, "image/png")
    _upload(world, "T1", world.alice, "text/plain")
    _upload(world, "B1", world.bob, "image/png")
    log = ConversationLog(world.store)
    batch = await run_batch(log, world.store, [
        send(world.alice, world.direct, "f1", body="", kind="image", file_id="F1"),
        send(world.alice, world.direct, "f2", body="", kind="image", file_id="NOPE"),  # no such upload
        send(world.alice, world.direct, "f3", body="", kind="file", file_id="B1"),  # bob's, not alice's
        send(world.alice, world.direct, "f4", body="", kind="image", file_id="T1"),  # not an image
        send(world.alice, world.direct, "f5", body="", kind="file", file_id="T1"),
    ])
    assert errors(batch) == [None, "not_found", "not_found", "bad_request", None]
    frame = json.loads(batch.deliveries[0].frame)
    assert frame["kind"] == "image" and frame["file_id"] == "F1"
    rows = world.history(world.direct)
    assert rows[0] == frame and [r["seq"] for r in rows] == [1, 2]  # refused ones took no seq


# --- storage views ---------------------------------------------------------------------------------

async def test_commit_then_history_in_order(world: World) -> None:
    log = ConversationLog(world.store)
    bodies = [f"message {i}" for i in range(7)]
    for i in range(0, 7, 3):
        await run_batch(log, world.store, [send(world.alice if j % 2 else world.bob, world.gconv, f"c{j}",
                                                body=bodies[j])
                                           for j in range(i, min(i + 3, 7))])
    rows = world.history(world.gconv)
    assert [r["seq"] for r in rows] == list(range(1, 8))
    assert [r["body"] for r in rows] == bodies
    assert all(r["type"] == "msg" and r["conv"] == world.gconv for r in rows)
    assert [r["seq"] for r in world.history(world.gconv, after_seq=4)] == [5, 6, 7]
    assert [r["seq"] for r in world.history(world.gconv, limit=2)] == [1, 2]
    before = world.db.transaction(lambda c: messages.history(c, world.gconv, None, 6, 2))
    assert [r["seq"] for r in before] == [4, 5]


async def test_conversation_list_unread_excludes_own_messages(world: World) -> None:
    log = ConversationLog(world.store)
    await run_batch(log, world.store, [send(world.alice, world.direct, f"a{i}") for i in range(3)]
                    + [send(world.bob, world.direct, "b0", body="b0")]
                    + [send(world.alice, world.gconv, f"g{i}") for i in range(2)])
    bob, alice = world.convs(world.bob), world.convs(world.alice)
    assert bob[world.direct]["unread"] == 3 and alice[world.direct]["unread"] == 1
    assert bob[world.gconv]["unread"] == 2 and alice[world.gconv]["unread"] == 0
    assert bob[world.direct]["last_seq"] == 4 and bob[world.direct]["read_seq"] == 0
    assert bob[world.direct]["last_message"]["body"] == "b0"
    assert world.convs(world.carol) == {}
    await run_batch(log, world.store, [ReadItem(world.bob, "s", world.direct, 2)])
    assert world.convs(world.bob)[world.direct]["unread"] == 1
    await run_batch(log, world.store, [ReadItem(world.bob, "s", world.direct, 4)])
    assert world.convs(world.bob)[world.direct]["unread"] == 0


async def test_new_member_does_not_inherit_unread_history(world: World) -> None:
    log = ConversationLog(world.store)
    await run_batch(log, world.store, [send(world.alice, world.gconv, f"g{i}") for i in range(3)])
    world.db.transaction(lambda c: groups.add_members(c, world.group, [world.carol]))
    log.forget(world.gconv)
    await run_batch(log, world.store, [send(world.alice, world.gconv, "g3")])
    carol = world.convs(world.carol)[world.gconv]
    assert (carol["read_seq"], carol["last_seq"], carol["unread"]) == (3, 4, 1)


# --- check_send --------------------------------------------------------------------------------

def test_check_send_accepts() -> None:
    check_send("text", "hello", None, 10)
    check_send("text", "x" * 10, None, 10)
    check_send("image", "", "file-1", 10)
    check_send("file", "caption", "file-1", 10)


@pytest.mark.parametrize(("kind", "body", "file_id", "error"), [
    ("text", "x" * 11, None, TooLarge),
    ("image", "x" * 11, "f", TooLarge),
    ("text", "", None, BadRequest),
    ("text", " \n\t ", None, BadRequest),
    ("text", "hello", "file-1", BadRequest),
    ("image", "caption", None, BadRequest),
    ("file", "", "", BadRequest),
])
def test_check_send_refuses(kind: str, body: str, file_id: str | None, error: type) -> None:
    with pytest.raises(error) as info:
        check_send(kind, body, file_id, 10)
    assert info.value.message


async def test_same_client_id_committed_by_another_shard_first(world: World) -> None:
    """Two shards own two conversations; the sender reuses a client id in both. The database's unique
    (sender, client id) refuses the second commit; after a rollback, planning again turns it into a resend."""
    shard_a, shard_b = ConversationLog(world.store), ConversationLog(world.store)
    planned_b = await plan(shard_b, [send(world.alice, world.gconv, "dup"), send(world.bob, world.gconv, "other")])
    first = await run_batch(shard_a, world.store, [send(world.alice, world.direct, "dup")])
    with pytest.raises(IntegrityError):
        await world.store.commit(planned_b)
    assert world.history(world.gconv) == []  # the failed batch left nothing behind
    shard_b.rollback(planned_b)
    again = await run_batch(shard_b, world.store, [send(world.alice, world.gconv, "dup"),
                                                   send(world.bob, world.gconv, "other")])
    assert again.outcomes[0].ack == first.outcomes[0].ack
    assert seqs(again) == [1, 1] and json.loads(again.outcomes[1].ack)["conv"] == world.gconv
    assert [m["seq"] for m in world.history(world.gconv)] == [1]


def test_message_ids_grow_with_time_and_stay_apart_between_logs() -> None:
    """Growing ids keep each commit on the last pages of the msg_id index; two shards never collide."""
    from imray.domain.messaging import MessageIds

    first, second = MessageIds(), MessageIds()
    now = 1_780_000_000_000
    ids = [first.next(now) for _ in range(1000)] + [first.next(now + 1) for _ in range(10)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) <= 32 for i in ids)  # the column's width
    assert first.next(now + 2) < first.next(now + 3)
    assert not {second.next(now) for _ in range(1000)} & set(ids)
