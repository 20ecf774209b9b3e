"""The batched first catch-up pages (storage.catch_up_pages) on a SQLite file, without Ray: for every
reader and conversation each answer is what HistoryReader.read gives that reader alone, or None
where only that read can say why (a stranger, an unknown conversation)."""

from __future__ import annotations

from imray.actors.catch_up import CatchUp
from imray.deployments.history import HistoryReader
from imray.domain.conversations import parse_conv
from imray.domain.errors import DomainError
from imray.storage import accounts, groups, hidden_messages, messages
from imray.storage.catch_up_pages import PageWant, first_pages
from imray.storage.db import Database


def _rows(conv: str, sender: int, seqs: range) -> list[dict]:
    return [dict(msg_id=f"{conv}-{s}", conv=conv, seq=s, sender_id=sender, client_id=f"{conv}-{s}", kind="text",
                 body=f"{conv} {s}", file_id=None, ts=1000 + s, meta=None) for s in seqs]


def _world(db: Database) -> dict:
    """ann owns a group with bob and cat (dan is not in it); bob blocks cat, and deleted group
    message 4 and direct message 2 for himself; ann and bob have a direct conversation; ann and cat
    have one with nothing in it; eve was removed from the group."""
    def setup(conn) -> dict:
        ann, bob, cat, dan, eve = (accounts.create_user(conn, n, "x", n)["id"]
                                   for n in ("ann", "bob", "cat", "dan", "eve"))
        gid = groups.create_group(conn, "team", ann, [bob, cat, eve])["id"]
        groups.remove_member(conn, gid, eve)
        group, direct, empty = f"g:{gid}", f"d:{min(ann, bob)}:{max(ann, bob)}", f"d:{min(ann, cat)}:{max(ann, cat)}"
        rows = _rows(group, ann, range(1, 6)) + _rows(group, cat, range(6, 9)) + _rows(direct, bob, range(1, 4))
        messages.commit_batch(conn, rows, {group: 8, direct: 3}, 2000)
        accounts.block(conn, bob, cat)
        hidden_messages.hide(conn, bob, group, 4)
        hidden_messages.hide(conn, bob, direct, 2)
        return dict(ann=ann, bob=bob, cat=cat, dan=dan, eve=eve, group=group, direct=direct, empty=empty,
                    unknown_group=f"g:{gid + 100}", ghost=f"d:{ann}:{eve + 100}")
    return db.transaction(setup)


async def test_each_batched_page_is_what_the_reader_gets_alone_or_none_where_only_that_read_can_say_why(
        sqlite_db: Database) -> None:
    await batched_pages_match_lone_reads(sqlite_db)


async def batched_pages_match_lone_reads(db: Database) -> None:
    """The check, on any database (test_real_database runs it on MariaDB)."""
    w = _world(db)
    reader = HistoryReader(db)
    wants = [PageWant(w[who], parse_conv(w[conv]), after, limit)
             for who in ("ann", "bob", "cat", "dan", "eve")
             for conv in ("group", "direct", "empty", "unknown_group", "ghost")
             for after, limit in ((0, 200), (3, 200), (2, 3), (8, 200))]
    answers = await reader.first_pages(wants)
    answered = 0
    for want, page in zip(wants, answers, strict=True):
        try:
            alone: list[dict] | str = (await reader.read(want.reader, str(want.conv), want.after, None,
                                                         want.limit))["messages"]
        except DomainError as exc:
            alone = exc.code
        if page is None:
            # Only the lone read's verdict stands: a refusal, or the empty page of a direct conversation
            # that has no message yet (the batch does not look its other user up).
            assert alone in ("forbidden", "not_found") or (alone == [] and str(want.conv) == w["empty"]), want
        else:
            assert page == alone, want
            answered += 1
    assert answered == 5 * 4  # ann and bob: the group and their direct one; cat: the group
    bob_group = answers[wants.index(PageWant(w["bob"], parse_conv(w["group"]), 0, 200))]
    assert bob_group is not None
    assert [m.get("deleted", False) for m in bob_group] == [False, False, False, True] + [False] * 4
    assert [m.get("hidden", False) for m in bob_group] == [False] * 5 + [True] * 3  # cat's: bob blocks her


async def test_many_wants_go_in_chunks_and_keep_their_order(sqlite_db: Database) -> None:
    w = _world(sqlite_db)
    wants = [PageWant(w["bob" if k % 2 else "dan"], parse_conv(w["group"]), k % 8, 200) for k in range(600)]
    answers = first_pages_of(sqlite_db, wants)
    for k, page in enumerate(answers):
        if k % 2:
            assert page is not None and [m["seq"] for m in page] == list(range(k % 8 + 1, 9)), k
        else:
            assert page is None, k  # dan is a stranger


def first_pages_of(db: Database, wants: list[PageWant]) -> list:
    return db.transaction(lambda conn: first_pages(conn, wants))


async def test_a_catch_up_reads_a_long_gap_page_by_page_up_to_its_cap_and_refuses_what_it_may_not_read(
        sqlite_db: Database) -> None:
    w = _world(sqlite_db)
    sqlite_db.transaction(lambda conn: messages.commit_batch(conn, _rows(w["group"], w["ann"], range(9, 31)),
                                                             {w["group"]: 30}, 3000))
    catch_up = CatchUp(HistoryReader(sqlite_db), per_conv=12)
    resumed = await catch_up(w["bob"], {w["group"]: 2, w["direct"]: 0, w["unknown_group"]: 0, "nonsense": 0,
                                        w["empty"]: 0})
    seqs = [int(f.split(b'"seq":')[1].split(b",")[0]) for f in resumed.frames]
    assert seqs == [*range(3, 15), 1, 2, 3]
    assert resumed.caught == {w["group"]: 14, w["direct"]: 3}
    assert resumed.truncated == [w["group"]]
    assert resumed.refused == {w["unknown_group"]: "not_found", "nonsense": "bad_request", w["empty"]: "forbidden"}


def test_an_in_list_query_takes_lists_of_any_length_and_an_empty_one_matches_nothing(sqlite_db: Database) -> None:
    from imray.storage.sql_compat import InListSql
    w = _world(sqlite_db)
    query = InListSql("SELECT user_id, seq FROM hidden_messages WHERE user_id IN ({}) AND conv IN ({}) AND seq > {}")
    def read(conn) -> tuple:
        return (query.fetch_tuples(conn, [w["bob"]], [w["group"], w["direct"]], 0),
                query.fetch_tuples(conn, [w["ann"], w["bob"], w["cat"]], [w["direct"]], 1),
                query.fetch_tuples(conn, [w["bob"]], [w["group"]], 4),
                query.fetch_tuples(conn, [], [w["group"]], 0))
    both, direct_only, none_after, empty = sqlite_db.transaction(read)
    assert sorted(both) == [(w["bob"], 2), (w["bob"], 4)]
    assert direct_only == [(w["bob"], 2)] and none_after == [] and empty == []
