"""Contacts without Ray: the request rules, the stored pairs, presence privacy, and the `contacts`
direct-message policy as a shard applies it (ConversationLog on the real SqlMessageStore, SQLite)."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from imray.actors.presence import PresenceTable
from imray.adapters.live_config import live_values
from imray.adapters.presence import net_transitions
from imray.deployments.contact_models import NewContactRequest
from imray.deployments.http import add_error_handlers
from imray.domain.contacts import (
    ContactLimits,
    PairState,
    RequestOutcome,
    check_message,
    check_other,
    contact_frame,
    decide_accept,
    decide_request,
    ended_by_block,
    presence_frame,
    visible_presence,
)
from imray.domain.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound
from imray.domain.messaging import ConversationLog, SendItem
from imray.settings import Settings
from imray.storage import accounts
from imray.storage import contacts as store
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore

LIMITS = ContactLimits(message_chars=10, pending_sent=2, pending_received=3, contacts=2)


def decide(state: PairState, sent: int = 0, received: int = 0, mine: int = 0, theirs: int = 0) -> RequestOutcome:
    return decide_request(state, sent, received, mine, theirs, LIMITS)


def test_a_request_across_a_block_either_way_is_refused() -> None:
    with pytest.raises(Forbidden):
        decide(PairState(they_block=True))
    with pytest.raises(Forbidden):
        decide(PairState(i_block=True))
    with pytest.raises(Forbidden):  # even when they had asked first
        decide(PairState(received=True, they_block=True))


def test_repeats_and_requests_to_contacts_change_nothing() -> None:
    assert decide(PairState(sent=True), sent=2) is RequestOutcome.ALREADY_SENT  # at the cap: still a repeat
    assert decide(PairState(contacts=True)) is RequestOutcome.ALREADY_CONTACTS


def test_a_request_to_someone_who_asked_first_accepts_theirs() -> None:
    assert decide(PairState(received=True), sent=2, received=3) is RequestOutcome.ACCEPTS


def test_pending_caps_hold_for_the_sender_and_the_recipient() -> None:
    assert decide(PairState(), sent=1, received=2) is RequestOutcome.NEW
    with pytest.raises(Conflict):
        decide(PairState(), sent=2)
    with pytest.raises(Conflict):
        decide(PairState(), received=3)


def test_the_contact_cap_holds_on_both_sides_at_accept() -> None:
    assert decide_accept(PairState(received=True), 1, 1, LIMITS) is True
    assert decide_accept(PairState(contacts=True), 2, 2, LIMITS) is False  # a repeat accept
    with pytest.raises(Conflict):
        decide_accept(PairState(received=True), 2, 0, LIMITS)
    with pytest.raises(Conflict):
        decide_accept(PairState(received=True), 0, 2, LIMITS)
    with pytest.raises(NotFound):
        decide_accept(PairState(sent=True), 0, 0, LIMITS)  # one's own request is not the other's to accept


def test_messages_are_short_text_and_odd_unicode_is_kept() -> None:
    assert check_message(None, LIMITS) == ""
    assert check_message("héllo 👋🏽", LIMITS) == "héllo 👋🏽"
    assert check_message("a\nb\tc", LIMITS) == "a\nb\tc"
    with pytest.raises(Invalid):
        check_message("x" * 11, LIMITS)
    with pytest.raises(Invalid):
        check_message("a\x00b", LIMITS)
    with pytest.raises(Invalid):
        check_message("\ud800", LIMITS)  # a lone surrogate (JSON allows it, UTF-8 does not)


def test_nobody_is_their_own_contact() -> None:
    with pytest.raises(BadRequest):
        check_other(7, 7)


def test_a_block_ends_the_contact_and_both_requests() -> None:
    assert ended_by_block(1, 2, PairState()) == []
    assert ended_by_block(1, 2, PairState(contacts=True)) == [("removed", 1, 2)]
    assert ended_by_block(1, 2, PairState(sent=True, received=True)) == [("cancelled", 1, 2), ("declined", 2, 1)]


def test_frames_say_what_happened_and_hidden_presence_says_nothing() -> None:
    assert json.loads(contact_frame("requested", 1, 2, 5, "hi")) == {
        "type": "contact", "event": "requested", "from_id": 1, "to_id": 2, "ts": 5, "message": "hi"}
    assert "message" not in json.loads(contact_frame("accepted", 1, 2, 5))
    assert json.loads(presence_frame(3, True, 99)) == {"type": "presence", "user_id": 3, "online": True}
    assert json.loads(presence_frame(3, False, 99))["last_seen"] == 99
    assert visible_presence(3, False, True, 99) == {"user_id": 3, "online": False, "last_seen": None}
    assert visible_presence(3, True, True, 99) == {"user_id": 3, "online": True, "last_seen": None}
    assert visible_presence(3, True, False, 99) == {"user_id": 3, "online": False, "last_seen": 99}


def test_the_live_policy_accepts_contacts() -> None:
    assert live_values("direct_messages: contacts\n", Settings())["direct_messages"] == "contacts"
    with pytest.raises(ValueError):
        live_values("direct_messages: friends\n", Settings())


# -- storage and the shard's policy, on SQLite ---------------------------------------------------------

@pytest.fixture
def db(sqlite_db: Database) -> Database:
    return sqlite_db


def users(db: Database, *names: str) -> list[int]:
    return db.transaction(lambda c: [accounts.create_user(c, n, "x", n)["id"] for n in names])


def test_contacts_are_stored_both_ways_and_requests_go_with_acceptance(db: Database) -> None:
    a, b, c = users(db, "ann", "ben", "cat")
    db.transaction(lambda conn: store.add_request(conn, a, b, "hi", 1))
    db.transaction(lambda conn: store.add_request(conn, a, b, "again", 2))  # one per ordered pair
    assert db.transaction(lambda conn: store.pair_state(conn, b, a)) == PairState(received=True)
    received, sent = db.transaction(lambda conn: store.requests_of(conn, b))
    assert [(r["from_id"], r["message"], r["username"]) for r in received] == [(a, "hi", "ann")] and sent == []
    db.transaction(lambda conn: store.add_contact(conn, b, a, 3))
    assert db.transaction(lambda conn: store.pair_state(conn, a, b)) == PairState(contacts=True)
    assert db.transaction(lambda conn: store.contacts_of(conn, [a, b, c])) == {a: [b], b: [a]}
    assert [r["user_id"] for r in db.transaction(lambda conn: store.contact_list(conn, a))] == [b]
    assert db.transaction(lambda conn: store.remove_contact(conn, b, a)) is True
    assert db.transaction(lambda conn: store.contacts_of(conn, [a, b])) == {}


def test_last_seen_is_upserted_and_keeps_the_privacy_choice(db: Database) -> None:
    a, b = users(db, "ann", "ben")
    db.transaction(lambda conn: store.set_show_presence(conn, a, False))
    db.transaction(lambda conn: store.set_last_seen(conn, {a: 10, b: 20}))
    db.transaction(lambda conn: store.set_last_seen(conn, {b: 30}))
    assert db.transaction(lambda conn: store.presence_rows(conn, [a, b])) == {a: (False, 10), b: (True, 30)}


async def test_under_the_contacts_policy_only_contacts_start_a_direct_conversation(db: Database) -> None:
    a, b, c = users(db, "ann", "ben", "cat")
    sql = SqlMessageStore(db)
    log = ConversationLog(sql)
    log.direct_messages = "contacts"
    ab, ac = f"d:{min(a, b)}:{max(a, b)}", f"d:{min(a, c)}:{max(a, c)}"
    db.transaction(lambda conn: store.add_contact(conn, a, b, 1))
    batch = await log.plan([SendItem(a, "s", "1", ab, "text", "hi"), SendItem(a, "s", "2", ac, "text", "hi")])
    assert batch.outcomes[0].ack is not None
    assert batch.outcomes[1].error == ("forbidden", "only contacts may start a direct conversation")
    await sql.commit(batch)
    log.committed(batch)
    # Removed as a contact: the conversation that has messages goes on (as under `existing`).
    db.transaction(lambda conn: store.remove_contact(conn, a, b))
    log.forget(ab)
    later = await log.plan([SendItem(b, "s", "3", ab, "text", "still here")])
    assert later.outcomes[0].ack is not None
    # Becoming contacts reaches the shard once it forgets the conversation (as a contact change makes it).
    db.transaction(lambda conn: store.add_contact(conn, a, c, 2))
    log.forget(ac)
    assert (await log.plan([SendItem(c, "s", "4", ac, "text", "hi")])).outcomes[0].ack is not None
    # Under `open` nothing about contacts is read at all.
    log.direct_messages = "open"
    log.forget(ac)
    await log.plan([SendItem(c, "s", "5", ac, "text", "hi")])
    assert log._convs[ac].contacts is None


# -- online/offline transitions, as the presence store sees them ---------------------------------------

def test_only_a_first_session_anywhere_and_a_last_one_are_transitions() -> None:
    table = PresenceTable()
    assert table.apply("sn-1", [(7, +1)]) == [(7, True)]
    assert table.apply("sn-2", [(7, +1)]) == []  # online already, on another node
    assert table.apply("sn-1", [(7, -1)]) == []
    assert table.apply("sn-2", [(7, -1)]) == [(7, False)]
    assert table.apply("sn-1", [(8, +1), (8, -1), (9, -1)]) == []  # net: nothing changed, nothing said
    assert table.apply("sn-1", [(8, +1), (9, +1)]) == [(8, True), (9, True)]


def test_a_dropped_node_takes_offline_only_the_users_it_held_alone() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(1, +1), (2, +1)])
    table.apply("sn-2", [(2, +1)])
    assert table.drop_node("sn-1") == [1]
    assert table.online([1, 2]) == [2]


def test_redis_results_reduce_to_net_transitions_per_user() -> None:
    # (before, after) per change, as the Lua script answers them
    assert net_transitions([1, 2, 1], [(False, True), (True, True), (True, False)]) == []
    assert net_transitions([1, 2], [(False, True), (True, False)]) == [(1, True), (2, False)]
    assert net_transitions([3, 3, 3], [(True, False), (False, True), (True, False)]) == [(3, False)]


def test_a_lone_surrogate_in_a_json_body_is_a_422_not_a_500() -> None:
    app = FastAPI()
    add_error_handlers(app)

    @app.post("/x")
    async def x(body: NewContactRequest) -> dict:
        return {}

    client = TestClient(app, raise_server_exceptions=False)
    r = client.post("/x", content=b'{"user_id": 5, "message": "\\ud800"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "message"]
    r = client.post("/x", json={"user_id": "é"})
    assert r.status_code == 422 and r.json()["detail"][0]["input"] == "é"  # FastAPI's own answer otherwise
