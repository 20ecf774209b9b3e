"""History reads, served in the gateway replica that received the request.

A DeploymentHandle hop to another replica cost more CPU than the read itself (profiled: about
3 ms in the gateway and 2.4 ms in WebService per request, against 0.6 ms for a route without a
hop). So the read and its access check run here, in one database call, with no cache:
a removed member loses access at once, on every replica. A group's catch-up page carries its
access check in the same statement; only an empty page asks the membership again, to tell a
member who is up to date from a stranger. A group's messages from someone the reader blocks come
back `hidden` (one more indexed read, only for a page that has messages), and messages the reader
deleted for themselves `deleted` (issue 18: joined in by the page's own statement).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from imray.domain.conversations import parse_conv
from imray.domain.errors import Forbidden, NotFound
from imray.domain.groups import check_membership
from imray.domain.messaging import MsgFrame, hide_blocked
from imray.storage import accounts, catch_up_pages
from imray.storage import groups as group_store
from imray.storage import messages as msgs
from imray.storage.db import Database


class HistoryReader:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def read(self, user_id: int, conv_text: str, after_seq: int | None, before_seq: int | None,
                   limit: int) -> dict[str, list[MsgFrame]]:
        """Nobody reads a conversation they are not part of (403); unknown conversations are 404."""
        conv = parse_conv(conv_text)

        def read(conn: Connection) -> list[MsgFrame]:
            if conv.is_group and before_seq is None:  # catching up, as every reconnect does
                page = msgs.member_page_after(conn, conv.group_id, user_id, after_seq or 0, limit)
                if not page:  # up to date, or not a member (403) or no such group (404)
                    check_membership(group_store.membership(conn, conv.group_id, user_id))
                return hide_blocked(page, accounts.blocked_by(conn, user_id)) if page else page
            if conv.is_group:
                check_membership(group_store.membership(conn, conv.group_id, user_id))
                page = msgs.history(conn, str(conv), after_seq, before_seq, limit, reader=user_id)
                return hide_blocked(page, accounts.blocked_by(conn, user_id)) if page else page
            elif user_id not in (conv.a, conv.b):
                raise Forbidden("you are not part of this conversation")
            page = msgs.history(conn, str(conv), after_seq, before_seq, limit, reader=user_id)
            # A direct conversation with messages exists; without any, its other user must.
            if (not conv.is_group and not page and msgs.last_seq(conn, str(conv)) == 0
                    and accounts.user_by_id(conn, conv.b if user_id == conv.a else conv.a) is None):
                raise NotFound("no such conversation")
            return page

        return {"messages": await self._db.read(read)}

    async def first_pages(self, wants: list[catch_up_pages.PageWant]) -> list[list[MsgFrame] | None]:
        """Many readers' catch-up pages in one database call (`storage.catch_up_pages`): None where
        `read` must answer alone."""
        return await self._db.read(lambda conn: catch_up_pages.first_pages(conn, wants))
