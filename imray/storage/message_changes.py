"""What changes to stored messages read and write (issue 18): targets, reactions, mentions, group rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.engine import Connection

from imray.domain.message_changes import Target
from imray.domain.messaging import GroupRules, TargetUpdate
from imray.storage.schema import group_members, groups, mentions, message_reactions, messages
from imray.storage.sql_compat import insert_ignore


def targets(conn: Connection, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Target]:
    """The messages at (conv, seq) `keys` that exist."""
    if not keys:
        return {}
    rows = conn.execute(select(messages.c.conv, messages.c.seq, messages.c.sender_id, messages.c.kind,
                               messages.c.body, messages.c.file_id, messages.c.ts, messages.c.meta)
                        .where(tuple_(messages.c.conv, messages.c.seq).in_(list(keys))))
    return {(r.conv, int(r.seq)): Target(r.conv, int(r.seq), int(r.sender_id), r.kind, r.body, r.file_id, int(r.ts),
                                         orjson.loads(r.meta) if r.meta else {}) for r in rows}


def reacted(conn: Connection, keys: Sequence[tuple[str, int, int, str]]) -> set[tuple[str, int, int, str]]:
    """The (conv, seq, user, emoji) reactions among `keys` that are there."""
    if not keys:
        return set()
    cols = message_reactions.c
    rows = conn.execute(select(cols.conv, cols.seq, cols.user_id, cols.emoji)
                        .where(tuple_(cols.conv, cols.seq, cols.user_id).in_([k[:3] for k in keys])))
    found = {(r.conv, int(r.seq), int(r.user_id), r.emoji) for r in rows}
    return found & set(keys)


def group_rules(conn: Connection, group_ids: Sequence[int]) -> dict[str, GroupRules]:
    """Each group's owner and admins, muted members, whether it is muted or dissolved."""
    heads = conn.execute(select(groups.c.id, groups.c.muted_all, groups.c.dissolved_at)
                         .where(groups.c.id.in_(list(group_ids)))).all()
    rows = conn.execute(select(group_members.c.group_id, group_members.c.user_id, group_members.c.role,
                               group_members.c.muted)
                        .where(group_members.c.group_id.in_(list(group_ids)),
                               (group_members.c.role != "member") | group_members.c.muted.is_(True))).all()
    out: dict[str, GroupRules] = {}
    for head in heads:
        mine = [r for r in rows if r.group_id == head.id]
        out[f"g:{head.id}"] = GroupRules(frozenset(int(r.user_id) for r in mine if r.role != "member"),
                                         frozenset(int(r.user_id) for r in mine if r.muted),
                                         bool(head.muted_all), head.dissolved_at is not None)
    return out


def apply(conn: Connection, updates: Mapping[tuple[str, int], TargetUpdate],
          reactions: Mapping[tuple[str, int, int, str], bool], named: Sequence[tuple[int, str, int]]) -> None:
    """Changed targets, reaction rows and mention rows, in the commit's transaction."""
    if updates:
        changed = (update(messages)
                   .where(messages.c.conv == bindparam("k_conv"), messages.c.seq == bindparam("k_seq"))
                   .values(body=bindparam("v_body"), file_id=bindparam("v_file"), meta=bindparam("v_meta")))
        conn.execute(changed, [{"k_conv": u.conv, "k_seq": u.seq, "v_body": u.body, "v_file": u.file_id,
                                "v_meta": u.meta} for u in updates.values()])
    added = [{"conv": c, "seq": s, "user_id": u, "emoji": e} for (c, s, u, e), on in reactions.items() if on]
    if added:
        insert_ignore(conn, message_reactions, added)
    for (c, s, u, e), on in reactions.items():
        if not on:
            cols = message_reactions.c
            conn.execute(delete(message_reactions).where(cols.conv == c, cols.seq == s, cols.user_id == u,
                                                         cols.emoji == e))
    if named:
        insert_ignore(conn, mentions, [{"user_id": u, "conv": c, "seq": s} for u, c, s in named])
