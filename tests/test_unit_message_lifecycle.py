"""The message lifecycle's edge and reads (issue 18), without Ray: change keys and emoji as the HTTP edge
checks them, delete-for-me placeholders in history pages, and the conversation list's unread counts,
"mentioned" and last message after events, recalls and deletes, on a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from pydantic import ValidationError
from sqlalchemy import insert

from imray.deployments.lifecycle_models import Edit, Reaction, Recall
from imray.domain.errors import BadRequest, Forbidden, NotFound
from imray.domain.message_changes import ChangeItem, Rules, Target, decide
from imray.domain.message_lifecycle import check_deletable, deleted, deleted_frame, key_problem, new_key
from imray.domain.messaging import message_row, msg_frame
from imray.storage import conversation_list, hidden_messages, messages
from imray.storage.db import Database
from imray.storage.schema import mentions

ME, OTHER = 1, 2
CONV = "d:1:2"
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # a ZWJ sequence of 7 code points
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"  # a flag with tag characters


# -- keys and emoji at the edge -----------------------------------------------------------------------

def test_a_change_key_is_1_to_64_characters_of_any_kind_but_lone_surrogates() -> None:
    assert key_problem("k") is None and key_problem("é" * 64) is None and key_problem("👍 x") is None
    assert key_problem("") and key_problem("k" * 65) and key_problem("a\ud800")
    assert len(new_key()) == 32 and new_key() != new_key()


@pytest.mark.parametrize("emoji", ["👍", FAMILY, "🇯🇵", ENGLAND, "1\ufe0f\u20e3", "❤\ufe0f", "+1", "👍🏽"])
def test_reactions_take_emoji_sequences_flags_and_keycaps(emoji: str) -> None:
    assert Reaction.model_validate({"emoji": emoji}).emoji == emoji


@pytest.mark.parametrize("emoji", ["", " ", "👍 ", "\u202e👍", "a\u200fb", "\x00", "\t", "x" * 17, "\ud83d"])
def test_reactions_refuse_blanks_controls_direction_marks_and_long_ones(emoji: str) -> None:
    with pytest.raises(ValidationError):
        Reaction.model_validate({"emoji": emoji})


def test_change_bodies_refuse_unknown_fields_wrong_types_and_bad_keys() -> None:
    assert Recall.model_validate({}).id is None and Recall.model_validate({"id": "k1"}).id == "k1"
    for bad in ({"id": ""}, {"id": "k" * 65}, {"id": 7}, {"id": "a\udc00"}, {"other": 1}):
        with pytest.raises(ValidationError):
            Recall.model_validate(bad)
    with pytest.raises(ValidationError):
        Edit.model_validate({"body": 5})
    with pytest.raises(ValidationError):
        Edit.model_validate({})


def test_only_a_stored_message_that_is_not_an_event_can_be_deleted_for_oneself() -> None:
    check_deletable("text")
    check_deletable("image")
    with pytest.raises(NotFound):
        check_deletable(None)
    with pytest.raises(BadRequest):
        check_deletable("event")
    assert orjson.loads(deleted_frame(CONV, 9)) == {"type": "deleted", "conv": CONV, "seq": 9}


def test_the_recall_window_holds_for_the_sender_and_not_for_a_group_admin() -> None:
    rules = Rules(recall_window_ms=120_000, max_reactions=20, max_text=4000)
    target = Target("g:5", 3, ME, "text", "hi", None, 1_000_000, {})
    recall = ChangeItem(ME, "k", "g:5", 3, "recall")
    assert decide(recall, target, admin=False, reacted=False, now_ms=1_000_000 + 120_000, rules=rules) is not None
    with pytest.raises(Forbidden):
        decide(recall, target, admin=False, reacted=False, now_ms=1_000_000 + 120_001, rules=rules)
    assert decide(ChangeItem(OTHER, "k", "g:5", 3, "recall"), target, admin=True, reacted=False,
                  now_ms=10**12, rules=rules) is not None


# -- reads on SQLite --------------------------------------------------------------------------------

@pytest.fixture
def db(sqlite_db: Database) -> Iterator[Database]:
    yield sqlite_db


def store(db: Database, *msgs: tuple[int, int, str, str, dict | None]) -> None:
    """(seq, sender, kind, body, meta) rows of CONV, and both users' read cursors at 0."""
    rows = [message_row(msg_frame(CONV, seq, f"m{seq:04d}", sender, kind, body, 1000 + seq, None,
                                  orjson.dumps(meta).decode() if meta else None), f"c{seq}")
            for seq, sender, kind, body, meta in msgs]
    db.transaction(lambda c: messages.commit_batch(c, rows, {CONV: max(m[0] for m in msgs)}, 2000))
    db.transaction(lambda c: messages.add_cursors(c, CONV, [ME, OTHER]))


def listed(db: Database, user: int = ME) -> dict:
    [item] = db.transaction(lambda c: conversation_list.page(c, user, [], None, 50))
    return item


def test_history_shows_what_the_reader_deleted_as_placeholders_and_others_see_it_whole(db: Database) -> None:
    store(db, (1, OTHER, "text", "one", None), (2, OTHER, "text", "two", {"reply_to": 1}),
          (3, ME, "text", "three", None))
    assert db.transaction(lambda c: hidden_messages.hide(c, ME, CONV, 2)) is True
    assert db.transaction(lambda c: hidden_messages.hide(c, ME, CONV, 2)) is False  # a repeat
    expected = deleted(CONV, 2, "m0002", OTHER, "text", 1002)
    assert expected == {"type": "msg", "conv": CONV, "seq": 2, "msg_id": "m0002", "from": OTHER, "kind": "text",
                        "body": "", "ts": 1002, "deleted": True}
    for page in (db.transaction(lambda c: messages.history(c, CONV, 0, None, 50, reader=ME)),
                 db.transaction(lambda c: messages.history(c, CONV, None, 4, 50, reader=ME))):
        assert [m["seq"] for m in page] == [1, 2, 3] and page[1] == expected
        assert page[0]["body"] == "one" and page[2]["body"] == "three"
    theirs = db.transaction(lambda c: messages.history(c, CONV, 0, None, 50, reader=OTHER))
    assert theirs[1]["body"] == "two" and theirs[1]["reply_to"] == 1 and "deleted" not in theirs[1]
    assert db.transaction(lambda c: messages.history(c, CONV, 0, None, 50))[1]["body"] == "two"
    assert db.transaction(lambda c: hidden_messages.kind_of(c, CONV, 3)) == "text"
    assert db.transaction(lambda c: hidden_messages.kind_of(c, CONV, 4)) is None


def test_unread_leaves_out_events_recalls_and_deletes_and_mentioned_lasts_until_read(db: Database) -> None:
    store(db, (1, OTHER, "text", "hello", None),
          (2, OTHER, "text", "", {"recalled": True}),
          (3, OTHER, "event", "", {"event": {"type": "recall", "seq": 2}}),
          (4, OTHER, "text", "with a \"recalled\":true inside", {"reactions": {'x","recalled":true': 1}}),
          (5, OTHER, "text", "hey @me", {"mentions": [ME]}),
          (6, ME, "text", "mine", None),
          (7, OTHER, "text", "deleted for me", None))
    db.transaction(lambda c: c.execute(insert(mentions).values(user_id=ME, conv=CONV, seq=5)))
    db.transaction(lambda c: hidden_messages.hide(c, ME, CONV, 7))
    item = listed(db)
    assert (item["unread"], item["mentioned"]) == (3, True)  # seqs 1, 4, 5
    assert item["last_message"]["seq"] == 6  # 7 is deleted for me
    assert listed(db, OTHER)["last_message"]["seq"] == 7 and listed(db, OTHER)["mentioned"] is False

    db.transaction(lambda c: messages.advance_cursors(c, [(ME, CONV, 5)]))
    assert (listed(db)["unread"], listed(db)["mentioned"]) == (0, False)


def test_a_recalled_mention_is_not_mentioned_and_an_event_is_never_the_last_message(db: Database) -> None:
    store(db, (1, OTHER, "text", "older", None),
          (2, OTHER, "text", "", {"recalled": True}),
          (3, OTHER, "event", "", {"event": {"type": "recall", "seq": 2}}),
          (4, OTHER, "event", "", {"event": {"type": "react", "seq": 1, "emoji": "👍"}}))
    db.transaction(lambda c: c.execute(insert(mentions).values(user_id=ME, conv=CONV, seq=2)))
    item = listed(db)
    assert (item["unread"], item["mentioned"], item["last_seq"]) == (1, False, 4)
    assert item["last_message"]["seq"] == 2 and item["last_message"]["recalled"] is True
    db.transaction(lambda c: hidden_messages.hide(c, ME, CONV, 2))
    db.transaction(lambda c: hidden_messages.hide(c, ME, CONV, 1))
    assert listed(db)["last_message"] is None and listed(db)["unread"] == 0
