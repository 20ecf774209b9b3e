"""Message changes and group events in the ConversationLog (issue 18), on the real SqlMessageStore over
SQLite: who may recall, edit and react, what history shows after, and outbox events with reloaded members."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from sqlalchemy import update

from imray.actors.outbox_sweep import sweep_once
from imray.actors.shard_commit import ShardCommitter
from imray.domain.conversations import shard_of
from imray.domain.errors import BadRequest
from imray.domain.message_changes import ChangeItem, Rules, Target, check_emoji, decide
from imray.domain.message_lifecycle import key_problem
from imray.domain.messaging import ConversationLog, EventItem, Item, Outcome, SendItem
from imray.domain.scopes import IDEMPOTENCY_KEY
from imray.protocol.frames import parse_frame
from imray.storage import accounts, groups, messages, outbox
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore
from imray.storage.schema import group_members, mentions
from imray.storage.schema import messages as messages_table

RULES = Rules(recall_window_ms=120_000, max_reactions=3, max_text=100)


@dataclass
class World:
    db: Database
    log: ConversationLog
    alice: int  # the group's owner
    bob: int
    carol: int  # not in the group
    conv: str

    async def run(self, *items: Item) -> list[Outcome]:
        """One batch as the shard's committer runs it: plan, commit, remember."""
        batch = await self.log.plan(list(items), check_store=True)
        if batch.rows or batch.cursor_moves or batch.outbox_done:
            await self.log._store.commit(batch)  # type: ignore[attr-defined]
        self.log.committed(batch)
        self.deliveries = batch.deliveries
        return batch.outcomes

    def history(self) -> list[dict]:
        return self.db.transaction(lambda c: messages.history(c, self.conv, None, None, 200))

    async def send(self, sender: int, cid: str, body: str = "hi", **extra: object) -> int:
        [out] = await self.run(SendItem(sender, "s", cid, self.conv, "text", body, **extra))  # type: ignore[arg-type]
        assert out.ack is not None, out.error
        return int(orjson.loads(out.ack)["seq"])

    async def change(self, user: int, key: str, target: int, action: str, **extra: str) -> Outcome:
        [out] = await self.run(ChangeItem(user, key, self.conv, target, action, **extra))
        return out


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    db.create_schema()

    def setup(conn):
        ids = [accounts.create_user(conn, name, "x", name)["id"] for name in ("alice", "bob", "carol")]
        group = groups.create_group(conn, "friends", ids[0], [ids[1]])
        conn.execute(update(group_members).where(group_members.c.user_id == ids[0]).values(role="owner"))
        return ids, group["conv"]

    (alice, bob, carol), conv = db.transaction(setup)
    log = ConversationLog(SqlMessageStore(db))
    log.rules = RULES
    try:
        yield World(db, log, alice, bob, carol, conv)
    finally:
        db.close()


def _seq(out: Outcome) -> int:
    assert out.ack is not None, out.error
    return int(orjson.loads(out.ack)["seq"])


async def test_a_recall_is_an_event_and_history_shows_the_message_recalled(world: World) -> None:
    await world.run(EventItem(world.conv))  # whatever create_group queued
    target = await world.send(world.bob, "m1", "oops", mentions=(world.alice,))
    out = await world.change(world.bob, "r1", target, "recall")
    event_seq = _seq(out)
    assert event_seq == target + 1
    by_seq = {m["seq"]: m for m in world.history()}
    assert by_seq[target]["recalled"] is True and by_seq[target]["body"] == ""
    assert "mentions" not in by_seq[target]  # what pointed at people went with the text
    assert by_seq[event_seq]["kind"] == "event" and by_seq[event_seq]["event"] == {"type": "recall", "seq": target}
    assert by_seq[event_seq]["from"] == world.bob
    # Everyone in the group hears of it, the recaller's other sessions too.
    [delivery] = world.deliveries
    assert set(delivery.users) == {world.alice, world.bob} and delivery.seq == event_seq
    # The same key again: the same answer, nothing stored twice; a second recall changes nothing.
    assert (await world.change(world.bob, "r1", target, "recall")).ack == out.ack
    again = await world.change(world.bob, "r2", target, "recall")
    assert orjson.loads(again.ack or "{}")["seq"] == 0
    assert len(world.history()) == event_seq


async def test_only_the_sender_recalls_within_the_window_and_admins_at_any_time(world: World) -> None:
    target = await world.send(world.bob, "m1")
    assert (await world.change(world.alice, "x", 999, "recall")).error == ("not_found", "no such message")
    world.log.rules = Rules(recall_window_ms=-1, max_reactions=3, max_text=100)  # the window has passed
    assert (await world.change(world.bob, "r1", target, "recall")).error[0] == "forbidden"  # type: ignore[index]
    mine = await world.send(world.alice, "m2")
    out = await world.change(world.alice, "r2", target, "recall")  # the owner recalls bob's, late
    assert out.error is None
    assert (await world.change(world.bob, "r3", mine, "recall")).error[0] == "forbidden"  # type: ignore[index]
    [carol_try] = await world.run(ChangeItem(world.carol, "c", world.conv, mine, "recall"))
    assert carol_try.error is not None and carol_try.error[0] == "forbidden"  # not a member


async def test_an_edit_replaces_the_text_and_marks_it_edited(world: World) -> None:
    target = await world.send(world.bob, "m1", "helo")
    assert (await world.change(world.alice, "e0", target, "edit", body="hacked")).error[0] == "forbidden"  # type: ignore[index]
    assert (await world.change(world.bob, "e1", target, "edit", body="   ")).error[0] == "bad_request"  # type: ignore[index]
    assert (await world.change(world.bob, "e2", target, "edit", body="x" * 101)).error[0] == "too_large"  # type: ignore[index]
    event = _seq(await world.change(world.bob, "e3", target, "edit", body="hello"))
    by_seq = {m["seq"]: m for m in world.history()}
    assert by_seq[target]["body"] == "hello" and by_seq[target]["edited"] > 0
    assert by_seq[event]["event"] == {"type": "edit", "seq": target, "body": "hello"}
    await world.change(world.bob, "r", target, "recall")
    assert (await world.change(world.bob, "e4", target, "edit", body="back")).error[0] == "bad_request"  # type: ignore[index]


async def test_reactions_count_per_emoji_and_repeat_nothing(world: World) -> None:
    target = await world.send(world.bob, "m1")
    for user, key in ((world.alice, "a1"), (world.bob, "b1")):
        assert (await world.change(user, key, target, "react", emoji="👍")).error is None
    again = await world.change(world.alice, "a2", target, "react", emoji="👍")
    assert orjson.loads(again.ack or "{}")["seq"] == 0  # already there: no event
    await world.change(world.alice, "a3", target, "react", emoji="👎")  # a different emoji, not the same one
    await world.change(world.alice, "a4", target, "react", emoji="🇫🇷")
    assert (await world.change(world.alice, "a5", target, "react", emoji="🍣")).error == (
        "bad_request", "a message has at most 3 different reactions")
    await world.change(world.bob, "b2", target, "unreact", emoji="👍")
    nothing = await world.change(world.bob, "b3", target, "unreact", emoji="👍")
    assert orjson.loads(nothing.ack or "{}")["seq"] == 0
    [message] = [m for m in world.history() if m["seq"] == target]
    assert message["reactions"] == {"👍": 1, "👎": 1, "🇫🇷": 1}
    await world.change(world.alice, "a6", target, "unreact", emoji="👍")
    [message] = [m for m in world.history() if m["seq"] == target]
    assert message["reactions"] == {"👎": 1, "🇫🇷": 1}


def test_an_emoji_is_short_and_visible() -> None:
    for ok in ("👍", "👨‍👩‍👧‍👦", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "❤️", "+1"):
        check_emoji(ok)
    for bad in ("", " ", "👍 ", "a\u202eb", "x\x00", "y" * 17):
        with pytest.raises(BadRequest):
            check_emoji(bad)


def test_changes_to_events_and_unknown_actions_are_refused() -> None:
    event = Target("g:1", 2, 1, "event", "", None, 0, {"event": {"type": "joined"}})
    with pytest.raises(Exception, match="no such message"):
        decide(ChangeItem(1, "k", "g:1", 2, "recall"), event, admin=True, reacted=False, now_ms=0, rules=RULES)
    with pytest.raises(BadRequest):
        decide(ChangeItem(1, "k", "g:1", 2, "delete"), event, admin=True, reacted=False, now_ms=0, rules=RULES)


async def test_replies_and_mentions_are_stored_and_only_members_are_named(world: World) -> None:
    first = await world.send(world.alice, "m1")
    reply = await world.send(world.bob, "m2", "yes", reply_to=first, mentions=(world.alice, world.carol, world.bob))
    [message] = [m for m in world.history() if m["seq"] == reply]
    assert message["reply_to"] == first and message["mentions"] == [world.alice, world.bob]
    named = world.db.transaction(lambda c: c.execute(mentions.select()).all())
    assert [(r.user_id, r.seq) for r in named] == [(world.alice, reply)]  # not the sender, not a stranger
    [out] = await world.run(SendItem(world.bob, "s", "m3", world.conv, "text", "x", reply_to=reply + 5))
    assert out.error == ("bad_request", "reply_to must be the seq of an earlier message")


async def test_outbox_events_reach_the_members_after_the_change_and_the_removed_one(world: World) -> None:
    await world.run(EventItem(world.conv))
    before = len(world.history())

    def kick(conn):
        conn.execute(group_members.delete().where(group_members.c.user_id == world.bob))
        outbox.record(conn, world.conv, world.alice, {"type": "removed", "user_id": world.bob}, notify=[world.bob])

    world.db.transaction(kick)
    world.log.forget(world.conv)  # what the committer does before it publishes
    await world.run(EventItem(world.conv))
    history = world.history()
    assert len(history) == before + 1
    assert history[-1]["event"] == {"type": "removed", "user_id": world.bob} and history[-1]["from"] == world.alice
    [delivery] = world.deliveries
    assert set(delivery.users) == {world.alice, world.bob}
    assert world.db.transaction(lambda c: outbox.pending_for(c, [world.conv])) == []
    await world.run(EventItem(world.conv))  # nothing waits: nothing happens
    assert len(world.history()) == before + 1
    [out] = await world.run(SendItem(world.bob, "s", "late", world.conv, "text", "x"))
    assert out.error is not None and out.error[0] == "forbidden"


async def test_muted_members_and_dissolved_groups_cannot_write(world: World) -> None:
    from imray.storage.schema import groups as groups_table
    gid = int(world.conv[2:])
    world.db.transaction(lambda c: c.execute(update(group_members).where(group_members.c.user_id == world.bob)
                                             .values(muted=True)))
    world.log.forget(world.conv)
    [out] = await world.run(SendItem(world.bob, "s", "m1", world.conv, "text", "x"))
    assert out.error == ("forbidden", "you are muted in this group")
    await world.send(world.alice, "m2")  # the owner still writes
    world.db.transaction(lambda c: c.execute(update(groups_table).where(groups_table.c.id == gid)
                                             .values(dissolved_at=1)))
    world.log.forget(world.conv)
    [out] = await world.run(SendItem(world.alice, "s", "m3", world.conv, "text", "x"))
    assert out.error is not None and "dissolved" in out.error[1]


async def test_a_client_cannot_take_the_key_of_a_group_event(world: World) -> None:
    """Events are stored under "~ev:<random key>"; were a client's message there first, the event
    could never be committed. Such ids are the server's: the socket's send frame and the server API's
    idempotency keys refuse a leading "~"."""
    world.db.transaction(lambda c: outbox.record(c, world.conv, world.alice, {"type": "updated", "name": "x"}))
    await world.run(EventItem(world.conv))
    keys = world.db.transaction(lambda c: [r.client_id for r in c.execute(messages_table.select()).all()])
    event_key = [k for k in keys if k.startswith("~")][-1]
    frame = orjson.dumps({"type": "send", "id": event_key, "conv": world.conv, "body": "x"})
    with pytest.raises(BadRequest, match="id"):
        parse_frame(frame.decode(), 10_000)
    assert IDEMPOTENCY_KEY.fullmatch(event_key) is None and IDEMPOTENCY_KEY.fullmatch("a~b") is not None
    assert key_problem(event_key) is not None and key_problem("a~b") is None  # a change's id (HTTP)
    assert parse_frame(frame.decode().replace(event_key, "a~b"), 10_000)


async def test_the_sweep_commits_events_whose_publisher_died_once_and_only_its_own(world: World) -> None:
    """A change stored with its outbox row, and nobody asked for the event (the web service died):
    the owning shard's sweep commits it through the commit loop; another shard's sweep leaves it."""
    store = world.log._store  # type: ignore[attr-defined]
    committer = ShardCommitter(0, world.log, store, lambda deliveries: None)
    committer.start()
    try:
        await committer.publish([world.conv])  # what create_group queued
        before = len(world.history())
        world.db.transaction(lambda c: outbox.record(c, world.conv, world.alice, {"type": "updated", "name": "x"}))
        owner = shard_of(world.conv, 2)
        future = 10**13  # rows older than this: all of them
        assert await sweep_once(store, committer.publish, 1 - owner, 2, future) == []
        assert len(world.history()) == before
        assert await sweep_once(store, committer.publish, owner, 2, future) == [world.conv]
        assert [m["event"] for m in world.history()[before:]] == [{"type": "updated", "name": "x"}]
        assert await sweep_once(store, committer.publish, owner, 2, future) == []  # nothing left: nothing twice
        assert len(world.history()) == before + 1
    finally:
        await committer.stop()
