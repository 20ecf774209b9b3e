"""The SDK's per-conversation ordering (imray.client.streams): once, in seq order, gaps reported."""

from __future__ import annotations

from imray.client import Message, Streams


def msg(seq: int, conv: str = "d:1:2", body: str = "", sender: int = 1) -> Message:
    return Message(conv=conv, seq=seq, msg_id=f"m{seq}", from_=sender, kind="text", body=body or f"b{seq}", ts=seq)


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


def test_messages_in_order_are_delivered_at_once_and_move_seen() -> None:
    streams = Streams()
    assert seqs(streams.offer(msg(1), 0.0)) == [1]
    assert seqs(streams.offer(msg(2), 0.0)) == [2]
    assert streams.seen == {"d:1:2": 2}
    assert not streams.holding("d:1:2")


def test_a_duplicate_is_dropped_whether_already_delivered_or_still_held() -> None:
    streams = Streams({"d:1:2": 3})
    assert streams.offer(msg(3), 0.0) == []
    assert streams.offer(msg(1), 0.0) == []
    assert streams.offer(msg(5), 0.0) == []
    assert streams.offer(msg(5, body="again"), 0.0) == []
    assert [(m.seq, m.body) for m in streams.offer(msg(4), 0.0)] == [(4, "b4"), (5, "b5")]


def test_a_message_past_a_gap_is_held_until_the_gap_fills_then_all_follow_in_order() -> None:
    streams = Streams({"d:1:2": 1})
    assert streams.offer(msg(4), 1.0) == []
    assert streams.offer(msg(3), 1.1) == []
    assert streams.holding("d:1:2")
    gap = streams.gap("d:1:2")
    assert gap is not None and (gap.after_seq, gap.before_seq) == (1, 3)
    assert seqs(streams.offer(msg(2), 1.2)) == [2, 3, 4]
    assert not streams.holding("d:1:2") and streams.gap("d:1:2") is None


def test_a_gap_is_due_for_history_only_after_the_wait_and_its_wait_restarts_when_it_moves() -> None:
    streams = Streams({"d:1:2": 0})
    streams.offer(msg(2), 10.0)
    streams.offer(msg(4), 10.2)
    assert streams.gaps_due(10.4, 0.5) == []
    assert [(g.conv, g.after_seq, g.before_seq) for g in streams.gaps_due(10.5, 0.5)] == [("d:1:2", 0, 2)]
    assert seqs(streams.offer(msg(1), 10.6)) == [1, 2]  # the first gap filled; 3 is still missing
    assert streams.gaps_due(11.0, 0.5) == []
    assert [(g.after_seq, g.before_seq) for g in streams.gaps_due(11.1, 0.5)] == [(2, 4)]


def test_a_conversation_without_seen_starts_at_zero_and_delivers_from_seq_one() -> None:
    streams = Streams({"d:1:2": 7})
    assert streams.offer(msg(2, conv="g:9"), 0.0) == []
    assert seqs(streams.offer(msg(1, conv="g:9"), 0.0)) == [1, 2]
    assert streams.seen == {"d:1:2": 7, "g:9": 2}


def test_the_baseline_counts_what_exists_as_seen_but_never_moves_a_seen_back() -> None:
    streams = Streams({"d:1:3": 5})
    streams.baseline("d:1:2", 4)
    streams.baseline("d:1:3", 2)
    assert streams.seen == {"d:1:3": 5, "d:1:2": 4}
    assert streams.offer(msg(4), 0.0) == []
    assert seqs(streams.offer(msg(5), 0.0)) == [5]


def test_own_messages_from_acks_take_their_place_among_live_and_history_messages() -> None:
    streams = Streams({"d:1:2": 0})
    own = msg(2, sender=2, body="mine")
    assert streams.offer(own, 0.0) == []  # seq 1 (theirs) not in yet
    delivered = streams.offer(msg(1), 0.0) + streams.offer(msg(3), 0.0)
    assert [(m.seq, m.from_) for m in delivered] == [(1, 1), (2, 2), (3, 1)]
    assert streams.offer(msg(2, sender=2), 0.0) == []  # the same message from history later: dropped


def test_conversations_are_independent() -> None:
    streams = Streams()
    streams.offer(msg(2, conv="d:1:2"), 0.0)
    assert seqs(streams.offer(msg(1, conv="d:1:3"), 0.0)) == [1]
    assert streams.holding("d:1:2") and not streams.holding("d:1:3")


def test_seen_given_at_start_is_copied_not_shared() -> None:
    seen = {"d:1:2": 1}
    streams = Streams(seen)
    streams.offer(msg(2), 0.0)
    assert seen == {"d:1:2": 1} and streams.seen == {"d:1:2": 2}
