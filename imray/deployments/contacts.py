"""Contacts in the gateway's process: friend requests, the contact list, contacts' presence, privacy.

Each change is one transaction (the pair's state read, `domain.contacts` decides, written), then
both sides' live sessions are told (`adapters.user_push`) and the direct conversation's shard
forgets what it cached of the pair (the `contacts` direct-message policy reads it).
"""

from __future__ import annotations

import logging
from typing import Literal, TypedDict

from sqlalchemy.engine import Connection

from imray.adapters.rate_limits import RateLimit, RateLimiter, SharedRateLimiter
from imray.adapters.user_push import UserPush
from imray.backends import Backends
from imray.deployments.common import membership_changed
from imray.domain.contacts import (
    ContactEvent,
    ContactLimits,
    ContactPresence,
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
from imray.domain.conversations import direct_conv
from imray.domain.errors import DomainError, NotFound, Unavailable
from imray.settings import Settings
from imray.storage import contacts as store
from imray.storage.accounts import now_ms
from imray.storage.contacts import ContactRow, RequestRow

log = logging.getLogger("imray.contacts")
Ended = list[tuple[ContactEvent, int, int]]  # (event, from, to)


class RequestRateLimited(DomainError):
    code, status = "rate_limited", 429


class ContactState(TypedDict):
    user_id: int
    state: Literal["pending", "contact"]


class Requests(TypedDict):
    received: list[RequestRow]
    sent: list[RequestRow]


def limits_of(settings: Settings) -> ContactLimits:
    return ContactLimits(settings.contact_message_chars, settings.contact_pending_sent_max,
                         settings.contact_pending_received_max, settings.contacts_max)


def end_on_block_txn(conn: Connection, blocker: int, blocked: int) -> Ended:
    """A block ends the pair's contact and pending requests (docs/protocol.md §5): what it ended."""
    ended = ended_by_block(blocker, blocked, store.pair_state(conn, blocker, blocked))
    if ended:
        store.remove_contact(conn, blocker, blocked)
        store.delete_request(conn, blocker, blocked)
        store.delete_request(conn, blocked, blocker)
    return ended


async def announce(backends: Backends, ended: Ended) -> None:
    """Tell both sides' live sessions of each event (best effort: never fails the caller)."""
    now = now_ms()
    try:
        push = UserPush(backends.presence(), backends.actors())
        await push.push_many([([from_id, to_id], contact_frame(event, from_id, to_id, now))
                              for event, from_id, to_id in ended])
    except Exception as exc:
        log.warning("contacts: pushing what a block ended failed: %r", exc)


class ContactsApi:
    def __init__(self, settings: Settings, backends: Backends) -> None:
        self._db = backends.database()
        self._backends = backends
        self._limits = limits_of(settings)
        per_minute = settings.contact_requests_per_minute
        self._rate: RateLimit = (SharedRateLimiter(settings.redis_url, per_minute) if settings.redis_url
                                 else RateLimiter(per_minute))
        self._push: UserPush | None = None

    @property
    def push(self) -> UserPush:
        # Built on first use: on the embedded stack the presence actor may not exist while the gateway starts.
        if self._push is None:
            self._push = UserPush(self._backends.presence(), self._backends.actors())
        return self._push

    async def _changed(self, ended: Ended, a: int, b: int, message: str | None = None) -> None:
        """After a commit: the shard forgets the pair if they became or stopped being contacts, and
        both sides hear of it. Neither can fail the request: what was committed stands."""
        if any(event in ("accepted", "removed") for event, _, _ in ended):
            try:
                await membership_changed(self._backends.actors(), str(direct_conv(a, b)))
            except Exception as exc:  # the shard reads the pair again after its restart anyway
                log.warning("contacts: telling the shard failed: %r", exc)
        now = now_ms()
        try:
            for event, from_id, to_id in ended:
                await self.push.push((from_id, to_id), contact_frame(event, from_id, to_id, now, message))
        except Exception as exc:  # presence away: the lists over HTTP stay right
            log.warning("contacts: pushing the news failed: %r", exc)

    # -- requests --------------------------------------------------------------------------------

    async def request(self, me: int, other: int, message: str | None) -> ContactState:
        check_other(me, other)
        text = check_message(message, self._limits)
        if not await self._rate.check(f"contact:{me}"):
            raise RequestRateLimited("too many contact requests, slow down")

        def send(conn: Connection) -> RequestOutcome:
            if not store.user_exists(conn, other):
                raise NotFound("no such user")
            outcome = decide_request(store.pair_state(conn, me, other), store.pending_sent(conn, me),
                                     store.pending_received(conn, other), store.contact_count(conn, me),
                                     store.contact_count(conn, other), self._limits)
            if outcome is RequestOutcome.NEW:
                store.add_request(conn, me, other, text, now_ms())
            elif outcome is RequestOutcome.ACCEPTS:
                store.add_contact(conn, me, other, now_ms())
            return outcome

        outcome = await self._db.run(send)
        if outcome is RequestOutcome.NEW:
            await self._changed([("requested", me, other)], me, other, text)
        elif outcome is RequestOutcome.ACCEPTS:
            await self._changed([("accepted", other, me)], me, other)
        pending = outcome in (RequestOutcome.NEW, RequestOutcome.ALREADY_SENT)
        return {"user_id": other, "state": "pending" if pending else "contact"}

    async def accept(self, me: int, other: int) -> ContactState:
        check_other(me, other)

        def accept(conn: Connection) -> bool:
            made = decide_accept(store.pair_state(conn, me, other), store.contact_count(conn, me),
                                 store.contact_count(conn, other), self._limits)
            if made:
                store.add_contact(conn, me, other, now_ms())
            return made

        if await self._db.run(accept):
            await self._changed([("accepted", other, me)], me, other)
        return {"user_id": other, "state": "contact"}

    async def decline(self, me: int, other: int) -> None:
        """Refuse other's request to me (they may ask again)."""
        check_other(me, other)
        if not await self._db.run(lambda c: store.delete_request(c, other, me)):
            raise NotFound("no pending contact request from this user")
        await self._changed([("declined", other, me)], me, other)

    async def cancel(self, me: int, other: int) -> None:
        """Withdraw my request to other."""
        check_other(me, other)
        if not await self._db.run(lambda c: store.delete_request(c, me, other)):
            raise NotFound("no pending contact request to this user")
        await self._changed([("cancelled", me, other)], me, other)

    async def remove(self, me: int, other: int) -> None:
        check_other(me, other)
        if not await self._db.run(lambda c: store.remove_contact(c, me, other)):
            raise NotFound("this user is not your contact")
        await self._changed([("removed", me, other)], me, other)

    async def contacts(self, me: int) -> list[ContactRow]:
        return await self._db.run(lambda c: store.contact_list(c, me))

    async def requests(self, me: int) -> Requests:
        received, sent = await self._db.run(lambda c: store.requests_of(c, me))
        return {"received": received, "sent": sent}

    # -- presence ------------------------------------------------------------------------------------

    async def presence(self, me: int) -> list[ContactPresence]:
        """The presence of my contacts, each as they allow it to be seen."""
        def load(conn: Connection) -> tuple[list[int], dict[int, tuple[bool, int | None]]]:
            mine = store.contacts_of(conn, [me]).get(me, [])
            return sorted(mine), store.presence_rows(conn, mine)

        ids, rows = await self._db.run(load)
        online = await self._online(ids)
        answer = []
        for user in ids:
            shown, last_seen = rows.get(user, (True, None))
            answer.append(visible_presence(user, shown, user in online, last_seen))
        return answer

    async def _online(self, users: list[int]) -> set[int]:
        if not users:
            return set()
        try:
            where = await self._backends.presence().lookup(users)
        except Exception as exc:
            log.warning("contacts: presence lookup failed: %r", exc)
            raise Unavailable("presence is unavailable, try again shortly") from None
        return {u for found in where.values() for u in found}

    async def privacy(self, me: int) -> bool:
        rows = await self._db.run(lambda c: store.presence_rows(c, [me]))
        return rows.get(me, (True, None))[0]

    async def set_privacy(self, me: int, show: bool) -> bool:
        """Hiding presence makes me read as offline, never seen, to my contacts at once; showing it
        again tells them my state."""
        def change(conn: Connection) -> tuple[bool, int | None, list[int]]:
            before, last_seen = store.presence_rows(conn, [me]).get(me, (True, None))
            store.set_show_presence(conn, me, show)
            return before, last_seen, store.contacts_of(conn, [me]).get(me, [])

        before, last_seen, mine = await self._db.run(change)
        if before != show and mine:
            try:
                online = bool(await self._online([me])) if show else False
                await self.push.push(mine, presence_frame(me, online, last_seen if show else None))
            except Exception as exc:  # the choice is stored: the query already follows it
                log.warning("contacts: pushing a privacy change failed: %r", exc)
        return show
