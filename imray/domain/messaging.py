"""The owner of a set of conversations: membership, idempotency, seq assignment, batch planning.

Plain Python: the ConversationShard actor feeds it batches in arrival order and does the I/O
through a `MessageStore`. Per-conversation order comes from there being one owner; durability
from the actor committing a batch before anyone is told about it.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NotRequired, Protocol, TypedDict

import orjson

from imray.domain.content import check_send
from imray.domain.conversations import ConvId, parse_conv
from imray.domain.errors import DomainError, Forbidden, NotFound
from imray.domain.files import Upload
from imray.domain.message_changes import ChangeItem, Rules, Target, decide

__all__ = ["ChangeItem", "check_send"]  # also imported from here by the edges


# Items and deliveries are made for every message, on the socket node and again on the shard: not
# frozen, since a frozen init sets each field through object.__setattr__ (3.1 µs against 0.5 µs for
# SendItem, measured). Nothing changes one once made.
@dataclass(slots=True)
class SendItem:
    sender: int
    session: str
    client_id: str
    conv: str
    kind: str
    body: str
    file_id: str | None = None
    reply_to: int = 0  # the seq of the message this one answers (issue 18); 0: none
    mentions: tuple[int, ...] = ()  # users named (issue 18): members among them see "mentioned"


@dataclass(slots=True)  # not frozen: see SendItem
class ReadItem:
    user: int
    session: str
    conv: str
    seq: int


@dataclass(slots=True)  # not frozen: see SendItem
class TypingItem:
    user: int
    session: str
    conv: str


@dataclass(frozen=True, slots=True)
class EventItem:
    """Commit the group changes waiting in the outbox for `conv` (issue 18): each becomes a seq'd
    `event` message, and the members are read again first (the change is already in the database)."""

    conv: str


Item = SendItem | ReadItem | TypingItem | EventItem | ChangeItem


# A message as the wire's `msg` frame (PROTOCOL §2.4), the form every path hands on: deliveries,
# history pages, the conversation list. "from" is a keyword, hence the functional form.
MsgFrame = TypedDict("MsgFrame", {
    "type": Literal["msg"], "conv": str, "seq": int, "msg_id": str, "from": int, "kind": str, "body": str,
    "ts": int, "file_id": NotRequired[str], "hidden": NotRequired[bool],
    # Issue 18, from the row's `meta` (absent on a plain message): see docs/protocol.md §9.
    "reply_to": NotRequired[int], "mentions": NotRequired[list[int]], "edited": NotRequired[int],
    "recalled": NotRequired[bool], "reactions": NotRequired[dict[str, int]], "event": NotRequired[dict[str, Any]],
    "deleted": NotRequired[bool]})


class MessageRow(TypedDict):
    """A message as the messages table stores it."""

    msg_id: str
    conv: str
    seq: int
    sender_id: int
    client_id: str
    kind: str
    body: str
    file_id: str | None
    ts: int
    meta: str | None


# The frame's fields in the order `msg_frame` takes them: a history page reads its columns in
# this order and hands the driver's tuples over as they are, with no object per row in between.
MSG_FIELDS = ("conv", "seq", "msg_id", "sender_id", "kind", "body", "ts", "file_id", "meta")
# The frame's keys that come from the row's `meta` JSON (issue 18), never from its columns.
META_KEYS = ("reply_to", "mentions", "edited", "recalled", "reactions", "event")
_META_SET = frozenset(META_KEYS)


def msg_frame(conv: str, seq: int, msg_id: str, sender: int, kind: str, body: str, ts: int,
              file_id: str | None = None, meta: str | None = None) -> MsgFrame:
    """The one builder of a message: its `msg` frame, with `file_id` only when it has one.

    Rows and acks are made from the frame (`message_row`, `ack_of`) rather than from an object of
    their own: the commit path builds one frame per message anyway, and a Message object next to
    it cost about 1 µs a message (10 % of planning a batch).
    """
    frame: MsgFrame = {"type": "msg", "conv": conv, "seq": seq, "msg_id": msg_id, "from": sender, "kind": kind,
                       "body": body, "ts": ts}
    if file_id is not None:
        frame["file_id"] = file_id
    if meta:  # a plain message has none: one test of a None on the hot path
        frame.update(orjson.loads(meta))
    return frame


def meta_of(msg: MsgFrame) -> str | None:
    """The `meta` column's JSON of a frame: its issue-18 keys, or None when it has none."""
    if _META_SET.isdisjoint(msg):  # a plain message (most): one C-level test instead of six lookups
        return None
    found = {key: msg[key] for key in META_KEYS if key in msg}  # type: ignore[literal-required]
    return orjson.dumps(found).decode()


def hidden(msg: MsgFrame) -> MsgFrame:
    """What a reader who blocks the sender gets of a group message: its place in the conversation
    (seq, id, sender, time) without what it says, so the reader's seqs stay gap-free."""
    out: MsgFrame = {"type": "msg", "conv": msg["conv"], "seq": msg["seq"], "msg_id": msg["msg_id"],
                     "from": msg["from"], "kind": msg["kind"], "body": "", "ts": msg["ts"], "hidden": True}
    if "event" in msg:  # a group's state must converge for every reader: the event stays, an edit's text goes
        out["event"] = {k: v for k, v in msg["event"].items() if k != "body"}
    return out


def hidden_stream(conv: str) -> str:
    """The key under which socket nodes track the hidden copies of `conv`'s messages: a node drops a
    message whose seq it has delivered for its key, and the full and the hidden copy of one message
    share a seq (to different readers)."""
    return f"{conv}/hidden"


def hide_blocked(page: list[MsgFrame], blocked: Collection[int]) -> list[MsgFrame]:
    """A group's page as a reader who blocks `blocked` sees it."""
    if not blocked:
        return page
    return [hidden(m) if m["from"] in blocked else m for m in page]


def message_row(msg: MsgFrame, client_id: str) -> MessageRow:
    """The row that stores `msg`, sent by its sender with `client_id`."""
    return {"msg_id": msg["msg_id"], "conv": msg["conv"], "seq": msg["seq"], "sender_id": msg["from"],
            "client_id": client_id, "kind": msg["kind"], "body": msg["body"], "file_id": msg.get("file_id"),
            "ts": msg["ts"], "meta": meta_of(msg)}


# Client ids that begin with this are the server's (an event's key): clients may not use them, or a
# client could take the key of a group event before it is committed and hold the event back.
SERVER_KEY_PREFIX = "~"

# A batch that failed before its outcome was known (a shard away, a broken stream): nothing is
# acknowledged, and a resend with the same client id is safe.
NOT_STORED = ("internal", "message not stored, send it again")
# The store refused this one item even after everything was read again and it was tried alone: not
# worth resending as it is (the other items of its batch were stored).
REFUSED = ("internal", "the database refused this message; it was not stored")
# The shard holds too many items waiting for a commit: nothing was stored, resending later is safe.
SHARD_BUSY = ("rate_limited", "this conversation's shard is overloaded: send it again later")


@dataclass(slots=True)
class Outcome:
    """What one item came to: an ack for a send, or an error; reads and typing just succeed."""

    ack: str | None = None  # the ack frame, encoded once here, sent as it is by the socket node
    error: tuple[str, str] | None = None  # (code, message)


@dataclass(slots=True)  # not frozen: see SendItem
class Delivery:
    """One frame (already JSON) for every session of `users`, except the session `skip`. A message
    also carries its conversation, seq and ts, which socket nodes use to drop what they have
    already delivered (a shard re-delivers after a restart); receipts and typing have seq 0."""

    frame: str
    users: tuple[int, ...]
    skip: str | None = None
    conv: str = ""
    seq: int = 0
    ts: int = 0


@dataclass(slots=True)
class ConvState:
    members: frozenset[int]
    last_seq: int
    muted: frozenset[int] = frozenset()  # members who may not write here (blocked by the other side)
    # In a group: sender -> the members who block them, who get that sender's messages `hidden` and
    # none of their typing or receipts (a block made after both joined; none can join across one).
    blockers: dict[int, frozenset[int]] = field(default_factory=dict)
    # A direct conversation's two users are contacts (issue 18): read only under the `contacts`
    # policy, for a conversation with no message yet; None until then.
    contacts: bool | None = None
    # A group's administration (issue 18): its owner and admins; members who may read but not write
    # (muted one by one, or everyone but admins when the group is muted); dissolved: nobody writes.
    admins: frozenset[int] = frozenset()
    silenced: frozenset[int] = frozenset()
    closed: bool = False

    def audience(self, user: int) -> tuple[tuple[int, ...], frozenset[int]]:
        """Who hears everything `user` says here (`user` excluded), and who gets it hidden."""
        hiding = self.blockers.get(user, frozenset())
        return tuple(m for m in self.members if m != user and m not in hiding), hiding


@dataclass(frozen=True, slots=True)
class GroupRules:
    """A group's administration as a shard needs it (issue 18)."""

    admins: frozenset[int]  # the owner and the admins
    muted: frozenset[int]  # members muted one by one
    muted_all: bool
    dissolved: bool


@dataclass(frozen=True, slots=True)
class TargetUpdate:
    """A stored message's new state after a change (issue 18)."""

    conv: str
    seq: int
    body: str
    file_id: str | None
    meta: str | None


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A group change's event waiting in the outbox (issue 18)."""

    id: int
    conv: str
    actor: int
    key: str
    event: dict[str, Any]
    notify: tuple[int, ...]


@dataclass
class Batch:
    """A planned batch: rows to commit and what to deliver once they are durable."""

    outcomes: list[Outcome]
    rows: list[MessageRow] = field(default_factory=list)
    acks: dict[tuple[int, str], str] = field(default_factory=dict)  # (sender, client id) -> its ack
    heads: dict[str, int] = field(default_factory=dict)
    new_directs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    cursor_moves: list[tuple[int, str, int]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    previous_heads: dict[str, int] = field(default_factory=dict)
    # Issue 18: targets of message changes, reaction rows, mentions, outbox events committed.
    updates: dict[tuple[str, int], TargetUpdate] = field(default_factory=dict)
    reactions: dict[tuple[str, int, int, str], bool] = field(default_factory=dict)  # (conv, seq, user, emoji): on
    mentions: list[tuple[int, str, int]] = field(default_factory=list)  # user, conv, seq
    outbox_done: list[int] = field(default_factory=list)


class MessageStore(Protocol):
    """What a ConversationLog reads and writes: each call one transaction, `commit` a whole batch."""

    async def members(self, convs: Sequence[ConvId]) -> dict[str, frozenset[int] | None]: ...
    async def last_seqs(self, convs: Sequence[str]) -> dict[str, int]: ...
    async def muted(self, convs: Sequence[ConvId]) -> dict[str, frozenset[int]]: ...
    async def blockers(self, groups: Mapping[str, frozenset[int]]) -> dict[str, dict[int, frozenset[int]]]: ...
    async def contacts(self, convs: Sequence[ConvId]) -> set[str]: ...  # direct convs whose users are contacts
    async def group_rules(self, group_ids: Sequence[int]) -> dict[str, GroupRules]: ...
    async def targets(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Target]: ...
    async def reacted(self, keys: Sequence[tuple[str, int, int, str]]) -> set[tuple[str, int, int, str]]: ...
    async def pending_events(self, convs: Sequence[str]) -> list[PendingEvent]: ...
    async def find_by_client_ids(self, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], MsgFrame]: ...
    async def files(self, file_ids: Sequence[str]) -> dict[str, Upload]: ...
    async def commit(self, batch: Batch) -> None: ...


class MessageIds:
    """Server message ids that sort by time: ms since epoch, this log's random tag, a counter.

    Random ids put each new row on a random leaf page of the msg_id index, so a commit of N
    messages wrote about N index pages; ids that grow land on the index's last page or two.
    The random tag keeps ids from different shards (and restarts) apart.
    """

    def __init__(self) -> None:
        self._tag = os.urandom(5).hex()
        self._counter = 0

    def next(self, now_ms: int) -> str:
        self._counter = (self._counter + 1) & 0xFFFFFF
        return f"{now_ms:012x}{self._tag}{self._counter:06x}"


def ack_of(msg: MsgFrame, client_id: str) -> str:
    """The ack frame (PROTOCOL §2.3) of a stored message, as JSON text."""
    return orjson.dumps({"type": "ack", "id": client_id, "msg_id": msg["msg_id"], "conv": msg["conv"],
                         "seq": msg["seq"], "ts": msg["ts"]}).decode()


class ConversationLog:
    def __init__(self, store: MessageStore, dedupe_capacity: int = 100_000) -> None:
        self._store = store
        self._convs: dict[str, ConvState] = {}
        # (sender, client id) -> the ack of the message stored for it: a resend gets the same ack, and an
        # ack holds no body, so remembering many costs little.
        self._recent: OrderedDict[tuple[int, str], str] = OrderedDict()
        self._dedupe_capacity = dedupe_capacity
        self._cursors: OrderedDict[tuple[int, str], int] = OrderedDict()  # read cursors seen lately
        self.direct_messages = "open"  # the live policy: "open", "existing", "contacts" or "off"
        self.rules = Rules(recall_window_ms=120_000, max_reactions=20, max_text=4000)  # the shard sets them
        self._ids = MessageIds()

    def forget(self, conv: str) -> None:
        """Membership changed: reload it (and the head, which is cheap) on next use."""
        self._convs.pop(conv, None)

    async def _load(self, convs: dict[str, ConvId]) -> None:
        missing = [cid for key, cid in convs.items() if key not in self._convs]
        if not missing:
            return
        members = await self._store.members(missing)
        heads = await self._store.last_seqs([str(c) for c in missing])
        muted = await self._store.muted([c for c in missing if not c.is_group])
        blockers = await self._store.blockers({str(c): found for c in missing if c.is_group
                                               and (found := members.get(str(c))) is not None})
        groups = [c.group_id for c in missing if c.is_group and members.get(str(c)) is not None]
        rules = await self._store.group_rules(groups) if groups else {}
        for cid in missing:
            key = str(cid)
            found = members.get(key)
            if found is not None:
                state = ConvState(found, heads.get(key, 0), muted.get(key, frozenset()), blockers.get(key, {}))
                group = rules.get(key)
                if group is not None:
                    state.admins = group.admins
                    state.silenced = group.muted | (found - group.admins if group.muted_all else frozenset())
                    state.closed = group.dissolved
                self._convs[key] = state

    async def _load_contacts(self, items: Sequence[Item]) -> None:
        """Under the `contacts` policy: whether the users of each new direct conversation sent to are contacts."""
        wanted: dict[str, ConvId] = {}
        for item in items:
            state = self._convs.get(item.conv)
            if (isinstance(item, SendItem) and state is not None and state.contacts is None and state.last_seq == 0
                    and item.conv.startswith("d:")):
                wanted[item.conv] = parse_conv(item.conv)
        if wanted:
            found = await self._store.contacts(list(wanted.values()))
            for conv in wanted:
                self._convs[conv].contacts = conv in found

    async def plan(self, items: Sequence[Item], check_store: bool = True) -> Batch:
        """Plan a batch. `check_store=False` skips the idempotency query for client ids this owner has
        not seen: the database's unique key still refuses a duplicate, and the caller then plans again
        with the check (one query saved per batch on the hot path)."""
        batch = Batch(outcomes=[Outcome() for _ in items])
        parsed: dict[str, ConvId] = {}
        for i, item in enumerate(items):
            try:
                parsed[item.conv] = parse_conv(item.conv)
            except DomainError as exc:
                batch.outcomes[i].error = (exc.code, exc.message)
        await self._load(parsed)
        if self.direct_messages == "contacts":
            await self._load_contacts(items)

        sends: list[tuple[int, SendItem]] = []
        changes: list[tuple[int, ChangeItem]] = []
        events: list[EventItem] = []
        for i, item in enumerate(items):
            if batch.outcomes[i].error:
                continue
            if isinstance(item, EventItem):  # the server's own: the web service checked who may
                events.append(item)
                continue
            try:
                state = self._member_state(item)
            except DomainError as exc:
                batch.outcomes[i].error = (exc.code, exc.message)
                continue
            if isinstance(item, SendItem):
                sends.append((i, item))
            elif isinstance(item, ChangeItem):
                changes.append((i, item))
            elif isinstance(item, ReadItem):
                seq = min(item.seq, state.last_seq)
                if self._cursors.get((item.user, item.conv), -1) >= seq:
                    continue  # the cursor would not move: nothing to store, nobody to tell
                self._cursors[(item.user, item.conv)] = seq
                batch.cursor_moves.append((item.user, item.conv, seq))
                others, _ = state.audience(item.user)
                # Read sync (issue 18): the reader's own other sessions get the same receipt (their
                # own user_id in it), so every device's unread count follows; the reading one does not.
                batch.deliveries.append(Delivery(orjson.dumps(
                    {"type": "receipt", "conv": item.conv, "user_id": item.user, "seq": seq}).decode(),
                    (*others, item.user), item.session))
            else:
                others, _ = state.audience(item.user)
                batch.deliveries.append(Delivery(orjson.dumps(
                    {"type": "typing", "conv": item.conv, "user_id": item.user}).decode(), others))
        if sends:
            sends = await self._check_files(batch, sends)
            await self._plan_sends(batch, sends, check_store)
        if changes:
            await self._plan_changes(batch, changes)
        if events:
            await self._plan_events(batch, events)
        return batch

    async def _check_files(self, batch: Batch, sends: list[tuple[int, SendItem]]) -> list[tuple[int, SendItem]]:
        """An image or file message carries an upload of its sender's (and an image, an image)."""
        wanted = sorted({s.file_id for _, s in sends if s.file_id})
        if not wanted:
            return sends
        found = await self._store.files(wanted)
        kept: list[tuple[int, SendItem]] = []
        for i, item in sends:
            if item.file_id:
                upload = found.get(item.file_id)
                if upload is None or upload["owner_id"] != item.sender or upload["purpose"] != "file":
                    batch.outcomes[i].error = ("not_found", "no such file among your uploads")
                    continue
                if item.kind == "image" and not upload["content_type"].startswith("image/"):
                    batch.outcomes[i].error = ("bad_request", "an image message needs an image file")
                    continue
            kept.append((i, item))
        return kept

    def _member_state(self, item: Item) -> ConvState:
        state = self._convs.get(item.conv)
        if state is None:
            raise NotFound(f"conversation {item.conv} does not exist")
        user = item.sender if isinstance(item, SendItem) else item.user  # type: ignore[union-attr]
        if user not in state.members:
            raise Forbidden(f"you are not a member of {item.conv}")
        if isinstance(item, ReadItem):
            return state
        if user in state.muted:
            raise Forbidden("you cannot write to this user")
        if state.closed:
            raise Forbidden("this group was dissolved: it can be read, not written to")
        if user in state.silenced:
            raise Forbidden("you are muted in this group")
        if isinstance(item, SendItem) and item.conv.startswith("d:") and self.direct_messages != "open":
            if self.direct_messages == "off":
                raise Forbidden("direct messages are turned off")
            if state.last_seq == 0 and self.direct_messages == "existing":
                raise Forbidden("new direct conversations are turned off")
            if state.last_seq == 0 and self.direct_messages == "contacts" and not state.contacts:
                raise Forbidden("only contacts may start a direct conversation")
        return state

    async def _plan_sends(self, batch: Batch, sends: list[tuple[int, SendItem]], check_store: bool) -> None:
        unknown = [(s.sender, s.client_id) for _, s in sends
                   if check_store and (s.sender, s.client_id) not in self._recent]
        stored = await self._store.find_by_client_ids(list(dict.fromkeys(unknown))) if unknown else {}
        now = int(time.time() * 1000)
        for i, item in sends:
            key = (item.sender, item.client_id)
            earlier = self._earlier_ack(batch, key, stored)
            if earlier is not None:  # a resend: same ack, nothing stored
                batch.outcomes[i].ack = earlier
                continue
            state = self._convs[item.conv]
            if item.reply_to > state.last_seq:
                batch.outcomes[i].error = ("bad_request", "reply_to must be the seq of an earlier message")
                continue
            if state.last_seq == 0 and item.conv not in batch.previous_heads and not item.conv.startswith("g:"):
                batch.new_directs[item.conv] = tuple(sorted(state.members))
            seq = self._take_seq(batch, item.conv)
            msg = msg_frame(item.conv, seq, self._ids.next(now), item.sender, item.kind, item.body, now, item.file_id)
            if item.reply_to or item.mentions:
                self._annotate(batch, state, msg, item)
            batch.rows.append(message_row(msg, item.client_id))
            batch.outcomes[i].ack = batch.acks[key] = ack_of(msg, item.client_id)
            self._deliver(batch, state, msg, item.session)

    def _earlier_ack(self, batch: Batch, key: tuple[int, str],
                     stored: Mapping[tuple[int, str], MsgFrame]) -> str | None:
        """The ack already given for (user, client id) `key`: in this batch, lately, or in the store."""
        earlier = batch.acks.get(key) or self._recent.get(key)
        if earlier is None and key in stored:
            earlier = ack_of(stored[key], key[1])
        return earlier

    def _take_seq(self, batch: Batch, conv: str) -> int:
        """The next seq of `conv`, given back by `rollback` if the batch fails."""
        state = self._convs[conv]
        batch.previous_heads.setdefault(conv, state.last_seq)
        state.last_seq += 1
        batch.heads[conv] = state.last_seq
        return state.last_seq

    @staticmethod
    def _annotate(batch: Batch, state: ConvState, msg: MsgFrame, item: SendItem) -> None:
        """A reply's link, and the members it names (others are dropped: naming is not inviting)."""
        if item.reply_to:
            msg["reply_to"] = item.reply_to
        named = [u for u in item.mentions if u in state.members]
        if named:
            msg["mentions"] = named
            batch.mentions.extend((u, item.conv, msg["seq"]) for u in named if u != item.sender)

    @staticmethod
    def _deliver(batch: Batch, state: ConvState, msg: MsgFrame, skip: str | None, extra: Sequence[int] = ()) -> None:
        """`msg` to every member's sessions but `skip` (and to `extra` users: a removed member); readers
        who block its sender get it hidden, under the hidden stream."""
        conv, seq, now, sender = msg["conv"], msg["seq"], msg["ts"], msg["from"]
        outsiders = tuple(u for u in extra if u not in state.members)
        if not state.blockers:
            batch.deliveries.append(Delivery(orjson.dumps(msg).decode(), (*state.members, *outsiders), skip, conv,
                                             seq, now))
            return
        others, hiding = state.audience(sender)
        batch.deliveries.append(Delivery(orjson.dumps(msg).decode(), (sender, *others, *outsiders), skip, conv,
                                         seq, now))
        if hiding:
            batch.deliveries.append(Delivery(orjson.dumps(hidden(msg)).decode(), tuple(hiding), None,
                                             hidden_stream(conv), seq, now))

    async def _plan_changes(self, batch: Batch, changes: list[tuple[int, ChangeItem]]) -> None:
        """Recalls, edits and reactions: each a seq'd event, and its target's new state in the same commit."""
        unknown = list(dict.fromkeys((c.user, c.key) for _, c in changes if (c.user, c.key) not in self._recent))
        stored = await self._store.find_by_client_ids(unknown) if unknown else {}
        targets = await self._store.targets(list(dict.fromkeys((c.conv, c.target) for _, c in changes)))
        reacted = await self._store.reacted([(c.conv, c.target, c.user, c.emoji) for _, c in changes
                                             if c.action in ("react", "unreact")])
        now = int(time.time() * 1000)
        for i, change in changes:
            key = (change.user, change.key)
            earlier = self._earlier_ack(batch, key, stored)
            if earlier is not None:
                batch.outcomes[i].ack = earlier
                continue
            state = self._convs[change.conv]
            where = (change.conv, change.target)
            reaction = (change.conv, change.target, change.user, change.emoji)
            try:
                effect = decide(change, targets.get(where), admin=change.user in state.admins,
                                reacted=reaction in reacted, now_ms=now, rules=self.rules)
            except DomainError as exc:
                batch.outcomes[i].error = (exc.code, exc.message)
                continue
            if effect is None:  # nothing to change: no event
                batch.outcomes[i].ack = orjson.dumps({"type": "ack", "id": change.key, "msg_id": "",
                                                      "conv": change.conv, "seq": 0, "ts": now}).decode()
                continue
            msg = self._event(batch, state, change.conv, change.user, effect.event, now)
            batch.rows.append(message_row(msg, change.key))
            batch.outcomes[i].ack = batch.acks[key] = ack_of(msg, change.key)
            before = targets[where]
            targets[where] = replace(before, body=effect.body, file_id=effect.file_id, meta=effect.meta)
            batch.updates[where] = TargetUpdate(change.conv, change.target, effect.body, effect.file_id,
                                                orjson.dumps(effect.meta).decode() if effect.meta else None)
            if effect.reaction is not None:
                (reacted.add if effect.reaction else reacted.discard)(reaction)
                batch.reactions[reaction] = effect.reaction
            self._deliver(batch, state, msg, None)

    def _event(self, batch: Batch, state: ConvState, conv: str, actor: int, event: dict[str, Any],
               now: int) -> MsgFrame:
        """The next seq of `conv` as an event made by `actor`."""
        msg = msg_frame(conv, self._take_seq(batch, conv), self._ids.next(now), actor, "event", "", now)
        msg["event"] = event
        return msg

    async def _plan_events(self, batch: Batch, items: list[EventItem]) -> None:
        """Group changes from the outbox, oldest first, each a seq'd event; the members were read again
        (the committer forgot the conversation) so the event reaches who is in the group after it."""
        pending = await self._store.pending_events(list(dict.fromkeys(item.conv for item in items)))
        now = int(time.time() * 1000)
        for waiting in pending:
            batch.outbox_done.append(waiting.id)
            state = self._convs.get(waiting.conv)
            if state is None:  # not a group (never recorded so): drop it rather than retry forever
                continue
            msg = self._event(batch, state, waiting.conv, waiting.actor, waiting.event, now)
            batch.rows.append(message_row(msg, f"{SERVER_KEY_PREFIX}ev:{waiting.key}"))
            self._deliver(batch, state, msg, None, waiting.notify)

    def committed(self, batch: Batch) -> None:
        """The batch is durable: its client ids are now known here, for resends."""
        self._recent.update(batch.acks)
        while len(self._recent) > self._dedupe_capacity:
            self._recent.popitem(last=False)
        while len(self._cursors) > self._dedupe_capacity:
            self._cursors.popitem(last=False)

    def rollback(self, batch: Batch) -> None:
        """The commit failed: give the seqs back so the conversation keeps no gap."""
        for conv, head in batch.previous_heads.items():
            if conv in self._convs:
                self._convs[conv].last_seq = head
        for user, conv, _ in batch.cursor_moves:
            self._cursors.pop((user, conv), None)

    def refused(self, batch: Batch) -> None:
        """The store refused the batch (a seq or client id taken behind this log's back): roll it
        back, and read its conversations again on next use, whatever this log believed of them."""
        self.rollback(batch)
        for conv in {*batch.previous_heads, *(conv for _, conv, _ in batch.cursor_moves)}:
            self.forget(conv)
