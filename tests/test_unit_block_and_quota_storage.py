"""The SQL behind two issue-16 rules: which blocks stand inside a would-be group, and how many bytes a
user's uploads take (the quota's measure), on SQLite without Ray."""

from __future__ import annotations

import pytest

from imray.storage import accounts
from imray.storage import files as file_store
from imray.storage import groups as group_store
from imray.storage.db import Database


@pytest.fixture
def db(sqlite_db: Database) -> Database:
    return sqlite_db


def users(db: Database, n: int) -> list[int]:
    return db.transaction(lambda c: [accounts.create_user(c, f"u{i}", "x", "u")["id"] for i in range(n)])


def test_blocks_among_finds_a_block_either_way_that_touches_a_newcomer(db: Database) -> None:
    a, b, c, d = users(db, 4)
    db.transaction(lambda conn: accounts.block(conn, b, a))  # b blocked a
    db.transaction(lambda conn: accounts.block(conn, c, d))  # c blocked d
    found = db.transaction(lambda conn: group_store.blocks_among(conn, [a, b, c], [b]))
    assert found == {(b, a)}
    assert db.transaction(lambda conn: group_store.blocks_among(conn, [a, b, c], [a])) == {(b, a)}
    # Between two people already in (neither is new) it is not returned; outside the group neither.
    assert db.transaction(lambda conn: group_store.blocks_among(conn, [a, b, c], [c])) == set()
    assert db.transaction(lambda conn: group_store.blocks_among(conn, [a, b, c, d], [d])) == {(c, d)}


def test_blocks_among_nobody_is_no_query_and_no_blocks(db: Database) -> None:
    assert db.transaction(lambda conn: group_store.blocks_among(conn, [], [])) == set()


def stored(db: Database, owner: int, file_id: str, size: int, purpose: str = "file") -> None:
    db.transaction(lambda c: file_store.add_file(c, {
        "file_id": file_id, "owner_id": owner, "purpose": purpose, "object_key": f"k/{file_id}",
        "content_type": "text/plain", "size": size, "filename": None}))


def test_stored_bytes_sum_a_users_files_and_avatars_and_no_one_elses(db: Database) -> None:
    a, b = users(db, 2)
    assert db.transaction(lambda c: file_store.stored_bytes(c, a)) == 0
    stored(db, a, "f1", 100)
    stored(db, a, "f2", 50, purpose="avatar")
    stored(db, b, "f3", 7)
    assert db.transaction(lambda c: file_store.stored_bytes(c, a)) == 150
    assert db.transaction(lambda c: file_store.stored_bytes_locked_txn(c, a)) == 150
    assert db.transaction(lambda c: file_store.stored_bytes(c, b)) == 7
