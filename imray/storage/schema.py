"""Tables. Portable SQL: SQLite (embedded) and MySQL/MariaDB (production) run the same schema."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine


class ExactString(TypeDecorator[str]):
    """A string the database compares byte for byte, as Python does: VARBINARY on MySQL/MariaDB,
    whose collations call "p" and "p " equal (PAD SPACE) and, when case-insensitive, "A" and "a";
    SQLite's TEXT compares bytes already. Values go in and come out as str (UTF-8)."""

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.chars = length

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.VARBINARY(self.chars * 4))  # up to 4 UTF-8 bytes a character
        return dialect.type_descriptor(String(self.chars))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return value.encode() if isinstance(value, str) and dialect.name in ("mysql", "mariadb") else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return value.decode() if isinstance(value, bytes) else value


metadata = MetaData()
# SQLite only autoincrements INTEGER PRIMARY KEY; MySQL gets BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("nickname", String(64), nullable=False),
    Column("avatar_url", String(512)),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger),  # set: an operator disabled the account (migration 0005)
    Column("is_bot", Boolean, nullable=False, default=False, server_default=false()),  # a client's bot
    Column("deleted_at", BigInteger),  # set: the user deleted the account (migration 0007, issue 18)
)

clients = Table(
    "oauth_clients", metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("secret_hash", String(128)),  # null: a public client
    Column("scope", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("redirect_uris", Text),  # JSON list of exact redirect URIs (migration 0004); null: none
    Column("bot_user_id", BigInteger),  # the bot account this client sends as (migration 0005)
    Column("revoked_at", BigInteger),  # set: `imray clients revoke` (grants and server API refused)
)

refresh_tokens = Table(
    "refresh_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family", String(32), nullable=False, index=True),
    Column("user_id", BigInteger, nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("scope", String(255), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

# Logins revoked (RFC 7009, or a reused refresh token): their access tokens die before they expire.
# With Redis every process reads the denylist there; on the embedded stack each process follows
# this table (see adapters.revocations).
revoked_logins = Table(
    "revoked_logins", metadata,
    Column("family", String(32), primary_key=True),
    Column("revoked_at", BigInteger, nullable=False, index=True),  # ms since the epoch
)

# Authorization codes (RFC 6749 §4.1 + PKCE, migration 0004), kept by hash: single use (used_at),
# bound to client, redirect URI and S256 challenge; family is the login the redemption started,
# revoked when the code is replayed.
authorization_codes = Table(
    "authorization_codes", metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("scope", String(255), nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("used_at", BigInteger),
    Column("family", String(32)),
)

groups = Table(
    "chat_groups", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("owner_id", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Issue 18, group administration (migration 0009).
    Column("description", String(512), nullable=False, default="", server_default=""),
    Column("add_policy", String(8), nullable=False, default="everyone", server_default="everyone"),  # or "admins"
    Column("muted_all", Boolean, nullable=False, default=False, server_default=false()),  # only admins write
    Column("dissolved_at", BigInteger),  # set: the owner dissolved it (read-only from then on)
)

group_members = Table(
    "group_members", metadata,
    Column("group_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("joined_at", BigInteger, nullable=False),
    # Issue 18 (migration 0009): "owner", "admin" or "member"; muted: may read, not write.
    Column("role", String(8), nullable=False, default="member", server_default="member"),
    Column("muted", Boolean, nullable=False, default=False, server_default=false()),
    PrimaryKeyConstraint("group_id", "user_id"),
    Index("ix_group_members_user", "user_id"),
)

conversations = Table(
    "conversations", metadata,
    Column("conv", String(40), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

messages = Table(
    "messages", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("msg_id", String(32), nullable=False, unique=True),
    Column("conv", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sender_id", BigInteger, nullable=False),
    # Idempotency compares client ids exactly, in the shard and here (migration 0003).
    Column("client_id", ExactString(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("body", Text, nullable=False),
    Column("file_id", String(64)),
    Column("ts", BigInteger, nullable=False),
    # Issue 18 (migration 0009): a JSON object merged into the message's frame, null for a plain
    # message: reply_to, mentions, edited, recalled, reactions, and an event's `event`.
    Column("meta", Text),
    UniqueConstraint("conv", "seq", name="uq_messages_conv_seq"),
    UniqueConstraint("sender_id", "client_id", name="uq_messages_sender_client"),
    Index("ix_messages_file", "file_id"),
)

read_cursors = Table(
    "read_cursors", metadata,
    Column("user_id", BigInteger, nullable=False),
    Column("conv", String(40), nullable=False),
    Column("read_seq", BigInteger, nullable=False, default=0),
    # The user's own settings of the conversation (migration 0008, issue 18): pinned since (ms; 0 not).
    Column("pinned_at", BigInteger, nullable=False, default=0, server_default="0"),
    Column("muted", Boolean, nullable=False, default=False, server_default=false()),
    PrimaryKeyConstraint("user_id", "conv"),
)

blocks = Table(
    "blocks", metadata,
    Column("user_id", BigInteger, nullable=False),  # who blocks
    Column("blocked_id", BigInteger, nullable=False),  # who may no longer write to them
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "blocked_id"),
)

files = Table(
    "files", metadata,
    Column("file_id", String(64), primary_key=True),
    Column("owner_id", BigInteger, nullable=False, index=True),
    Column("purpose", String(16), nullable=False),  # "file" (chat upload) or "avatar"
    Column("object_key", String(255), nullable=False),
    Column("content_type", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("filename", String(255)),
    Column("created_at", BigInteger, nullable=False),
)

# Issue 18, contacts and presence (migration 0006). A pending friend request, one per ordered pair
# (a repeat changes nothing); an accepted pair is stored in both directions, so a user's contacts
# are one primary-key range; a user's presence privacy and last-seen time, a row once either is known.
contact_requests = Table(
    "contact_requests", metadata,
    Column("from_id", BigInteger, nullable=False),
    Column("to_id", BigInteger, nullable=False),
    Column("message", Text, nullable=False),  # "" when none; its length is checked at the edge
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("from_id", "to_id"),
    Index("ix_contact_requests_to", "to_id"),
)

contacts = Table(
    "contacts", metadata,
    Column("user_id", BigInteger, nullable=False),
    Column("contact_id", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "contact_id"),
)

user_presence = Table(
    "user_presence", metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("show_presence", Boolean, nullable=False, default=True, server_default=true()),
    Column("last_seen_at", BigInteger),  # ms: when the user's last live session closed
)

# Issue 18, accounts (migration 0007): a user's logins (one per refresh-token family made by a
# password or authorization-code grant), listed with their device and last use, ended one by one.
logins = Table(
    "logins", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),  # what the user names a login by
    Column("family", String(32), nullable=False),  # the refresh-token family (the `fam` claim)
    Column("user_id", BigInteger, nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("device_name", String(64), nullable=False),  # the `device_name` field, or the User-Agent
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),  # its last grant, refresh or open socket
    UniqueConstraint("family", name="uq_logins_family"),
    Index("ix_logins_user", "user_id"),
)

# Issue 18, group administration and message lifecycle (migration 0009).
# A group change waiting for its event: the change and this row are written in one transaction, and
# the owning shard commits the event and deletes the row in another, so no change lacks its event.
group_outbox = Table(
    "group_outbox", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("conv", String(40), nullable=False, index=True),
    Column("actor_id", BigInteger, nullable=False),
    # The event's key (random: SQLite hands out the ids of deleted rows again), unique per actor like
    # a message's client id, so the event is stored at most once whoever commits it.
    Column("event_key", String(32), nullable=False),
    Column("event", Text, nullable=False),  # the event's JSON object
    Column("notify", Text, nullable=False),  # JSON list of users told besides the members (a removed one)
    Column("created_at", BigInteger, nullable=False, index=True),
)

# Who reacted to a message with what; the message's meta holds the counts that history shows.
# Emoji compare byte for byte: MariaDB's collations call many different emoji equal.
message_reactions = Table(
    "message_reactions", metadata,
    Column("conv", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("emoji", ExactString(16), nullable=False),
    PrimaryKeyConstraint("conv", "seq", "user_id", "emoji"),
)

# Messages a user deleted for themselves: their history shows each as a placeholder (seqs stay gap-free).
hidden_messages = Table(
    "hidden_messages", metadata,
    Column("user_id", BigInteger, nullable=False),
    Column("conv", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "conv", "seq"),
)

# A user named in a message's `mentions`: the conversation list shows "mentioned" while one is unread.
mentions = Table(
    "mentions", metadata,
    Column("user_id", BigInteger, nullable=False),
    Column("conv", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "conv", "seq"),
)
