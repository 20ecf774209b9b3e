"""HistoryReader on a SQLite file (no Ray): who may read a conversation, and what they get."""

from __future__ import annotations

import pytest

from imray.deployments.history import HistoryReader
from imray.domain.errors import Forbidden, NotFound
from imray.storage import accounts, groups, messages
from imray.storage.db import Database


@pytest.fixture
def db(sqlite_db: Database) -> Database:
    return sqlite_db


def _setup(db: Database) -> tuple[int, int, int, int]:
    """alice owns a group with bob and three messages; carol is not in it."""
    def setup(conn):
        alice, bob, carol = (accounts.create_user(conn, n, "x", n)["id"] for n in ("alice", "bob", "carol"))
        gid = groups.create_group(conn, "team", alice, [bob])["id"]
        rows = [dict(msg_id=f"m{s}", conv=f"g:{gid}", seq=s, sender_id=alice, client_id=f"c{s}", kind="text",
                     body=f"hello {s}", file_id=None, ts=1000 + s, meta=None) for s in (1, 2, 3)]
        messages.commit_batch(conn, rows, {f"g:{gid}": 3}, 1003)
        return alice, bob, carol, gid
    return db.transaction(setup)


async def _read(db: Database, user: int, conv: str, after: int | None = None, before: int | None = None,
                limit: int = 50) -> list[dict]:
    return (await HistoryReader(db).read(user, conv, after, before, limit))["messages"]


async def test_members_catch_up_a_group_page_by_page(db: Database) -> None:
    alice, bob, _, gid = _setup(db)
    conv = f"g:{gid}"
    page = await _read(db, bob, conv, after=0)
    assert [m["seq"] for m in page] == [1, 2, 3]
    assert page[0] == {"type": "msg", "conv": conv, "seq": 1, "msg_id": "m1", "from": alice, "kind": "text",
                       "body": "hello 1", "ts": 1001}
    assert [m["seq"] for m in await _read(db, bob, conv, after=1, limit=1)] == [2]
    assert [m["seq"] for m in await _read(db, alice, conv)] == [1, 2, 3]  # no after_seq: from the start
    assert await _read(db, bob, conv, after=3) == []  # up to date: an empty page, not an error
    assert [m["seq"] for m in await _read(db, bob, conv, before=3)] == [1, 2]


async def test_strangers_and_removed_members_read_nothing_of_a_group(db: Database) -> None:
    _, bob, carol, gid = _setup(db)
    conv = f"g:{gid}"
    for after in (None, 0, 2, 3):
        with pytest.raises(Forbidden):
            await _read(db, carol, conv, after=after)
    with pytest.raises(Forbidden):
        await _read(db, carol, conv, before=3)
    db.transaction(lambda conn: groups.remove_member(conn, gid, bob))
    with pytest.raises(Forbidden):  # at once: there is no cache of membership
        await _read(db, bob, conv, after=0)


async def test_an_unknown_group_is_not_found(db: Database) -> None:
    _, bob, _, gid = _setup(db)
    for after in (None, 0):
        with pytest.raises(NotFound):
            await _read(db, bob, f"g:{gid + 1000}", after=after)
