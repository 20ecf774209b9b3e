"""The first catch-up page of many reconnecting sessions, read in one transaction (issue 21).

A reconnect storm asks for the same few pages many times over: the sessions of a group's members,
all after the same seq. Answering each alone took two statements per session (the page with its
access check, then whom the reader blocks) and a pool thread's hop; here a batch of sessions costs
one statement per distinct page, one for which readers are members, one for what they deleted for
themselves and one for whom they block. Each answer is what `HistoryReader.read` gives that reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from imray.domain.conversations import ConvId
from imray.domain.message_lifecycle import deleted
from imray.domain.messaging import MSG_FIELDS, MsgFrame, hide_blocked, msg_frame
from imray.storage import messages as msgs
from imray.storage.sql_compat import InListSql, driver_rows, placeholder

CHUNK = 256  # wants per round of statements: keeps each IN list well inside every database's limits

_MEMBERS = InListSql("SELECT group_id, user_id FROM group_members WHERE group_id IN ({}) AND user_id IN ({})")
_HIDDEN = InListSql("SELECT user_id, conv, seq FROM hidden_messages"
                    " WHERE user_id IN ({}) AND conv IN ({}) AND seq > {}")
_BLOCKS = InListSql("SELECT user_id, blocked_id FROM blocks WHERE user_id IN ({})")
# The batch's distinct pages in one statement. Seqs have no gaps (the contract: a conversation's
# seqs are 1..N), so the page after `after` of up to `limit` messages is the range (after,
# after + limit]: a plain range read of the (conv, seq) index each. An earlier UNION ALL of
# `ORDER BY seq LIMIT n` subqueries cost MariaDB ~7x the CPU (derived tables), 140-220 against
# ~20 µs a want, most of the database's share of a reconnect storm.
_PAGES = "SELECT " + ", ".join(MSG_FIELDS) + " FROM messages WHERE "
_RANGE = "(conv = {0} AND seq > {0} AND seq <= {0})"


@dataclass(frozen=True)
class PageWant:
    reader: int
    conv: ConvId
    after: int
    limit: int


def first_pages(conn: Connection, wants: Sequence[PageWant]) -> list[list[MsgFrame] | None]:
    """Each want's page after its seq, as its reader may see it; None where this read cannot answer
    alone (not a member, or a direct conversation with nothing in it yet): the caller asks
    `HistoryReader.read`, which tells a stranger (403) from an unknown conversation (404)."""
    out: list[list[MsgFrame] | None] = []
    for i in range(0, len(wants), CHUNK):
        out += _chunk(conn, wants[i:i + CHUNK])
    return out


def _chunk(conn: Connection, wants: Sequence[PageWant]) -> list[list[MsgFrame] | None]:
    group_readers = {w.reader for w in wants if w.conv.is_group}
    members: set[tuple[int, int]] = set()
    if group_readers:
        rows = _MEMBERS.fetch_tuples(conn, sorted({w.conv.group_id for w in wants if w.conv.is_group}),
                                     sorted(group_readers))
        members = {(int(g), int(u)) for g, u in rows}
    allowed = [(w.conv.group_id, w.reader) in members if w.conv.is_group else w.reader in (w.conv.a, w.conv.b)
               for w in wants]
    pages = _pages(conn, sorted({(str(w.conv), w.after, w.limit) for w, ok in zip(wants, allowed, strict=True) if ok}))
    if not pages:
        return [None] * len(wants)
    convs = {key[0] for key in pages}
    readers = {w.reader for w, ok in zip(wants, allowed, strict=True) if ok}
    hidden = {(int(u), c, int(s)) for u, c, s in _HIDDEN.fetch_tuples(conn, sorted(readers), sorted(convs),
                                                                       min(key[1] for key in pages))}
    blocked: dict[int, set[int]] = {}
    if group_readers & readers:
        for user, other in _BLOCKS.fetch_tuples(conn, sorted(group_readers & readers)):
            blocked.setdefault(int(user), set()).add(int(other))
    empty_direct = {key[0] for key, page in pages.items() if not page and key[0].startswith("d:")}
    heads = msgs.last_seqs(conn, sorted(empty_direct)) if empty_direct else {}
    out: list[list[MsgFrame] | None] = []
    for want, ok in zip(wants, allowed, strict=True):
        conv = str(want.conv)
        if not ok or heads.get(conv, 1) == 0:  # a direct conversation without messages: does its other user exist?
            out.append(None)
            continue
        page = [deleted(m["conv"], m["seq"], m["msg_id"], m["from"], m["kind"], m["ts"])
                if (want.reader, conv, m["seq"]) in hidden else m for m in pages[(conv, want.after, want.limit)]]
        out.append(hide_blocked(page, blocked.get(want.reader, ())) if want.conv.is_group else page)
    return out


def _pages(conn: Connection, keys: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], list[MsgFrame]]:
    """Each (conv, after, limit) page in nobody's view (every message whole), read in one statement."""
    if not keys:
        return {}
    sql = _PAGES + " OR ".join([_RANGE.format(placeholder(conn))] * len(keys))
    params = tuple(x for conv, after, limit in keys for x in (conv, after, after + limit))
    pages: dict[tuple[str, int, int], list[MsgFrame]] = {key: [] for key in keys}
    by_conv: dict[str, list[tuple[str, int, int]]] = {}
    for key in keys:
        by_conv.setdefault(key[0], []).append(key)
    # Ranges of one conversation may overlap (sessions that saw different seqs): a row is read
    # once and goes to every page it falls in, in seq order (an OR keeps no order).
    for row in sorted(driver_rows(conn, sql, params), key=lambda r: (r[0], r[1])):
        frame = msg_frame(*row)
        for key in by_conv.get(row[0], ()):
            if key[1] < row[1] <= key[1] + key[2]:
                pages[key].append(frame)
    return pages
