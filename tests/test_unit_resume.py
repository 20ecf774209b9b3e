"""Catch-up over the socket (issue 21) in a session: live frames held while the catch-up is read,
then the catch-up, then the held frames in order, none of the messages it already had twice."""

from __future__ import annotations

import asyncio

from test_unit_session import Connection, run, turns

from imray.actors.catch_up import Resumed
from imray.actors.session import Session, encode_frame


def _msg(conv: str, seq: int) -> bytes:
    return encode_frame(f'{{"type":"msg","conv":"{conv}","seq":{seq}}}')


def test_held_frames_follow_the_catch_up_and_what_it_had_is_not_sent_again() -> None:
    async def test() -> None:
        ws = Connection()
        session = Session(1, ws, backlog_limit=100)  # type: ignore[arg-type]
        session.push('{"type":"auth_ok"}')
        session.hold()
        session.push_frame(_msg("g:1", 5), "g:1", 5)  # live while the read runs: the read has it too
        session.push('{"type":"typing","conv":"g:1","user_id":2}')
        session.push_frame(_msg("g:1", 6), "g:1", 6)  # committed after the read
        session.push_frame(_msg("d:1:2", 3), "d:1:2", 3)  # a conversation the client did not name
        await turns()
        assert ws.received() == ['{"type":"auth_ok"}']  # nothing live before the catch-up
        caught = Resumed(frames=[b'{"type":"msg","conv":"g:1","seq":4}', b'{"type":"msg","conv":"g:1","seq":5}'],
                         caught={"g:1": 5})
        session.release([*map(encode_frame, caught.frames), encode_frame(caught.summary())], caught.caught)
        session.push_frame(_msg("g:1", 5), "g:1", 5)  # delivered late, after the release: still not twice
        session.push_frame(_msg("g:1", 7), "g:1", 7)
        await turns()
        seqs = [(f.split('"conv":"')[1].split('"')[0], int(f.split('"seq":')[1].rstrip("}")))
                for f in ws.received() if '"msg"' in f]
        assert seqs == [("g:1", 4), ("g:1", 5), ("g:1", 6), ("d:1:2", 3), ("g:1", 7)]
        kinds = [f.split('"type":"')[1].split('"')[0] for f in ws.received()]
        assert kinds == ["auth_ok", "msg", "msg", "resume_ok", "typing", "msg", "msg", "msg"]

    run(test)


def test_a_session_that_piles_up_more_held_frames_than_its_backlog_is_cut() -> None:
    async def test() -> None:
        ws = Connection()
        session = Session(1, ws, backlog_limit=3, cut_grace_s=0.1)  # type: ignore[arg-type]
        session.hold()
        for seq in range(1, 5):
            session.push_frame(_msg("g:1", seq), "g:1", seq)
        await asyncio.sleep(0.2)
        assert session.cut and ws.closed_with is not None and ws.closed_with[0] == 4008
        session.release([encode_frame("late")], {})  # a catch-up that ends after the cut writes nothing
        await turns()
        assert "late" not in ws.received()

    run(test)


def test_last_words_of_a_held_session_are_not_held() -> None:
    async def test() -> None:
        ws = Connection()
        session = Session(1, ws, backlog_limit=10)  # type: ignore[arg-type]
        session.hold()
        session.push_frame(_msg("g:1", 1), "g:1", 1)
        session.end('{"type":"error","code":"unauthorized"}', 4001, "revoked")
        await asyncio.sleep(0.05)
        assert ws.received() == ['{"type":"error","code":"unauthorized"}'] and ws.closed_with == (4001, "revoked")

    run(test)
