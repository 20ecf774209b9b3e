"""The message lifecycle over HTTP, in the gateway's process (issue 18, docs/protocol.md §9).

Recall, edit, react and unreact change the conversation: each goes to the shard that owns it
(`common.submit_change`), which decides who may and commits the seq'd event every member gets.
Delete-for-me changes one user's view only: a row of hidden_messages written here, and a `deleted`
frame to that user's live sessions; nobody else sees anything.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Connection

from imray.adapters.named_actors import ActorMissing
from imray.adapters.rate_limits import RateLimit, RateLimiter, SharedRateLimiter
from imray.adapters.user_push import UserPush
from imray.backends import Backends
from imray.deployments.common import ChangeResult, submit_change
from imray.deployments.http import RateLimited
from imray.domain.content import check_send
from imray.domain.conversations import parse_conv
from imray.domain.errors import Forbidden, Unavailable
from imray.domain.groups import check_membership
from imray.domain.message_changes import ChangeItem
from imray.domain.message_lifecycle import check_deletable, deleted_frame, new_key
from imray.settings import Settings
from imray.storage import groups as group_store
from imray.storage import hidden_messages

log = logging.getLogger("imray.lifecycle")


class MessageLifecycle:
    def __init__(self, settings: Settings, backends: Backends) -> None:
        self._backends = backends
        self._db = backends.database()
        self._live = backends.live()  # max_text_length follows Nacos, as a send's does
        per_minute = settings.message_changes_per_minute
        self._rate: RateLimit = (SharedRateLimiter(settings.redis_url, per_minute) if settings.redis_url
                                 else RateLimiter(per_minute))
        self._push: UserPush | None = None

    async def _within_rate(self, user: int) -> None:
        if not await self._rate.check(f"change:{user}"):
            raise RateLimited("too many changes to messages, slow down")

    async def change(self, user: int, conv_text: str, seq: int, action: str, key: str | None, body: str = "",
                     emoji: str = "") -> ChangeResult:
        """Recall, edit, react or unreact message `seq` of a conversation, as the shard allows."""
        conv = str(parse_conv(conv_text))
        if action == "edit":
            check_send("text", body, None, self._live.max_text_length)
        await self._within_rate(user)
        try:
            return await submit_change(self._backends.actors(),
                                       ChangeItem(user, key or new_key(), conv, seq, action, body, emoji))
        except ActorMissing:  # the shard is not up (yet, or again)
            raise Unavailable("the conversation's shard is not running; send the change again") from None

    async def delete_for_me(self, user: int, conv_text: str, seq: int) -> None:
        """Hide message `seq` from `user`'s own history (a repeat changes nothing); their live
        sessions hear of it, so every device drops it."""
        conv = parse_conv(conv_text)
        await self._within_rate(user)

        def hide(conn: Connection) -> bool:
            if conv.is_group:
                check_membership(group_store.membership(conn, conv.group_id, user))
            elif user not in (conv.a, conv.b):
                raise Forbidden("you are not part of this conversation")
            check_deletable(hidden_messages.kind_of(conn, str(conv), seq))
            return hidden_messages.hide(conn, user, str(conv), seq)

        if not await self._db.run(hide):
            return
        try:
            if self._push is None:  # built on first use: the presence actor may not exist while the gateway starts
                self._push = UserPush(self._backends.presence(), self._backends.actors())
            await self._push.push([user], deleted_frame(str(conv), seq))
        except Exception as exc:  # stored: the user's history already shows it deleted
            log.warning("lifecycle: pushing a delete-for-me failed: %r", exc)
