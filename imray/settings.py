"""One settings object for every process: defaults < YAML file < IMRAY_* environment variables.

The same object is pickled into every deployment and actor, so all of them agree on ports,
limits and adapters without reading the environment again on another Ray node.
"""

from __future__ import annotations

import os
import string
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from imray.redact import redact, redact_url, redacted_repr

DIRECT_SOCKET_URL = "ws://{host}:{port}/ws"
SOCKET_URL_FIELDS = frozenset({"node", "host", "port"})
SHARD_CPUS = 4  # cluster CPUs per conversation shard, when the count is automatic
MAX_AUTO_SHARDS = 8


@dataclass(frozen=True)
class Settings:
    data_dir: str = "~/.imray"
    # HTTP gateway (Ray Serve proxy).
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    public_url: str = ""  # issuer and link base; defaults to http://{http_host}:{http_port}
    # Socket nodes.
    socket_nodes: int = 2
    socket_base_port: int = 9101
    socket_host: str = ""  # empty: the Ray node's own IP address
    # What clients are told to connect to, for a proxy or TLS in front of the nodes: a template with
    # {node} (sn-1...), {host} and {port} (where the node listens), e.g. wss://chat.example/ws/{node}.
    # Empty: ws://{host}:{port}/ws. A node takes its sessions on /ws and on /ws/{node}.
    socket_public_url: str = ""
    socket_auth_timeout_s: float = 10.0
    # Every connection is pinged once per interval; no pong within the timeout and it is closed (1011).
    socket_ping_interval_s: float = 20.0
    socket_ping_timeout_s: float = 20.0
    # The longest a catch-up over the socket may take (issue 21): then live frames flow and the session
    # is told to read history. With `seen` in the auth frame, auth_ok waits for the catch-up, and the
    # SDKs give up on an auth_ok that takes 15-20 s: a database that stalls must not hold it longer.
    socket_catch_up_timeout_s: float = 10.0
    socket_max_frame_bytes: int = 65536  # over this: a too_large error frame, session kept
    socket_hard_frame_bytes: int = 1048576  # over this: the websockets library closes with 1009
    socket_send_queue: int = 10000  # per-session outbound queue; a client this far behind is dropped
    # Hostile socket clients (issue 16, area "sockets and logged-out-means-out"; docs/protocol.md §2).
    socket_auth_frame_bytes: int = 4096  # frames before auth_ok: over this, the library closes with 1009
    socket_max_pending_per_address: int = 256  # connections not yet authenticated, per client address (0: no cap)
    socket_max_connections_per_address: int = 4096  # every connection, per client address (0: no cap)
    socket_max_sessions_per_user: int = 32  # per user on one node; the next is refused (close 4009)
    socket_sends_per_s: float = 2000.0  # per session: send frames (the benchmarks send up to ~500/s per session)
    socket_signals_per_s: float = 20.0  # per session: read and typing frames
    socket_controls_per_s: float = 20.0  # per session: ping, refresh and frames that do not parse
    socket_rate_burst_s: float = 2.0  # each rate's burst: this many seconds of it; as much again over it closes (4029)
    # Up to this many socket nodes, fan-out sends each batch to all of them instead of asking presence.
    fanout_broadcast_nodes: int = 4
    # Conversation shards; 0 (auto): one for SQLite (a single writer anyway); for a database server,
    # one per SHARD_CPUS CPUs of the cluster (see with_shards_for), fixed when imray deploys.
    shards: int = 0
    # Issue 16, area "no poison input, bounded everywhere": what a shard holds and how long waits last
    # (README "Configuration" says what each overflow does).
    shard_queue_items: int = 50000  # items waiting for a shard's commit; beyond: rate_limited at once
    fanout_queue_deliveries: int = 200000  # committed, waiting for the shard's fan-out; beyond: re-sent
    fanout_node_pending: int = 20000  # waiting for one socket node; beyond: its stream is reset
    delivery_ack_timeout_s: float = 10.0  # a socket node's ack of a delivery; then its stream is reset
    shard_submit_timeout_s: float = 30.0  # a socket node's wait for a shard's outcomes; then internal
    database_timeout_s: float = 30.0  # pymysql's read and write timeouts (a database server only)
    # Limits.
    max_text_length: int = 4000
    max_group_members: int = 2000
    max_pinned_conversations: int = 10  # per user (issue 18): the conversation list's first page holds them
    # Issue 18, message lifecycle: a sender recalls within this many seconds (group admins any time);
    # distinct emoji on one message.
    recall_window_s: int = 120
    max_reactions: int = 20
    max_body_bytes: int = 1048576  # HTTP request bodies (JSON and forms)
    rate_limit_per_minute: int = 6000  # HTTP requests per user (or per client address before login)
    max_upload_bytes: int = 20 * 1024 * 1024  # chat files
    max_avatar_bytes: int = 2 * 1024 * 1024
    file_url_ttl_s: int = 300  # presigned download URLs
    # Issue 16, area "files and secrets": the bytes one user's uploads (files and avatars) may take in
    # all; over it an upload gets 413 saying so. 0: no quota.
    user_storage_quota_bytes: int = 1024 * 1024 * 1024
    # Tokens.
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    # Issue 17, area "PKCE": an authorization code must be redeemed within this (RFC 6749 §4.1.2
    # asks for at most 10 minutes; the app exchanges it at once).
    authorization_code_ttl_s: int = 60
    # Issue 17, area "server API": how long a gateway believes what it read of a confidential client
    # (revoked or not, its bot enabled or not): `imray clients revoke` takes effect within this.
    server_client_check_s: float = 5.0
    # Password hashing (argon2id; OWASP's minimum parameters keep logins fast on small boxes).
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    # Adapters: empty means the embedded default.
    database_url: str = ""  # default: sqlite under data_dir
    redis_url: str = ""  # default: presence in an actor, caches and rate limits in process
    s3_endpoint: str = ""  # host:port of an S3 API; default: files under data_dir/objects
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "imray"
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    nacos_server: str = ""  # host:port; default: the supervisor's registry and no live config
    nacos_namespace: str = ""
    nacos_group: str = "DEFAULT_GROUP"
    nacos_username: str = ""
    nacos_password: str = ""
    # Who may start a direct conversation: "open" (anyone), "existing" (only conversations that
    # already have messages go on), "contacts" (only contacts may start one; one that has messages
    # goes on), "off" (no direct messages). Live with Nacos config.
    direct_messages: str = "open"
    # Ray.
    ray_address: str = ""  # empty: start a local cluster (imray up) / "auto": join a running one
    ray_port: int = 6380  # never 6379: that is Redis's port
    dashboard_port: int = 8265
    metrics_export_port: int = 8090  # Ray's metrics agent on a local `imray up` (Prometheus scrapes /metrics)
    serve_max_ongoing_requests: int = 1000
    # Serve's HAProxy ingress (Ray ships the binary): twice the requests/s of the Python proxy here.
    # It is read from the environment when Ray starts: imray sets it for the clusters it starts.
    serve_haproxy: bool = True
    gateway_replicas: int = 2  # Serve replicas of the ingress (HTTP is parsed and history read there)
    auth_replicas: int = 1  # Serve replicas of AuthService (password hashing is its CPU)
    # Issue 16, password guessing, CPU floods and idle HTTP connections. Failed logins are counted
    # per account (whatever the address) and per client address in fixed windows shared by every
    # AuthService replica (Redis, or one in-cluster actor); at the limit, logins are refused with 429
    # until the window ends, a correct password included. 0 turns a limit off.
    login_failures_per_account: int = 10
    login_failures_per_address: int = 50
    login_failure_window_s: int = 300
    # Password checks (argon2, one CPU each) per AuthService replica: this many at once (0: one per
    # CPU of its host) and this many more waiting; a login beyond that gets 503 at once.
    password_checks_at_once: int = 0
    password_checks_waiting: int = 32
    # The HTTP ingress (Serve's HAProxy or its Python proxy): a client has this long to send a whole
    # request head, an idle client connection is closed after this long, and one client address may
    # hold this many connections at once.
    http_request_timeout_s: int = 10
    http_idle_timeout_s: int = 60
    http_connections_per_address: int = 256
    # Connections the HTTP ingress holds in all; 0: as many as its fd limit allows (Serve's HAProxy
    # otherwise caps them at 4096: 16 addresses at the cap above).
    http_max_connections: int = 0
    # Issue 17, area "keys": the signing keyring every process reads (storage/keyfiles.py); empty:
    # data_dir/keys. On several machines it must be the same files on each (a secret mount).
    keys_dir: str = ""
    # Issue 18, area "accounts": the username search (GET /api/users?prefix=) takes prefixes of at
    # least this many characters (shorter ones would list everyone) and allows each user this many
    # searches a minute, a budget of its own within rate_limit_per_minute (counted like it: in Redis,
    # or per gateway replica).
    user_search_min_prefix: int = 3
    user_searches_per_minute: int = 30
    # Issue 18, area "contacts": a contact request's message (characters), pending requests a user
    # may have sent and received, contacts a user may have, and contact requests a user may send a
    # minute (a repeat counts too).
    contact_message_chars: int = 200
    contact_pending_sent_max: int = 100
    contact_pending_received_max: int = 500
    contacts_max: int = 2000
    contact_requests_per_minute: int = 20
    # Issue 18, area "offline notifications" (docs/protocol.md §8): a message to a member with no live
    # session is POSTed to this http(s) URL, signed with the secret (HMAC-SHA256). Empty: off, no cost.
    notify_webhook_url: str = ""
    notify_webhook_secret: str = ""  # required with a URL; never logged
    notify_window_s: float = 30.0  # at most one call per user and conversation within this
    notify_preview_chars: int = 0  # the body's first characters in the call; 0: no preview
    notify_attempts: int = 5  # per notice, the first included; then it is given up
    notify_retry_base_s: float = 1.0  # the wait after the first failure, doubling (with jitter)...
    notify_retry_max_s: float = 60.0  # ...up to this
    notify_timeout_s: float = 5.0  # per attempt
    notify_concurrency: int = 4  # calls at once, per shard
    notify_queue_max: int = 10000  # notices waiting, per shard; when full the oldest is dropped
    # Issue 18, area "lifecycle" (docs/protocol.md §9): recalls, edits, reactions and deletes-for-me
    # a user may make a minute over HTTP, a budget of its own within rate_limit_per_minute (counted
    # like it: in Redis, or per gateway replica).
    message_changes_per_minute: int = 120
    # Issue 20: "json" (one object a line, Ray's structured logging: job, worker, node and actor ids,
    # the logger's name, and imray's own fields: node, shard, user_id, conv) or "text".
    log_format: str = "json"
    namespace: str = "imray"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_socket_public_url(self.socket_public_url, self.socket_nodes)
        check_notify_webhook(self.notify_webhook_url, self.notify_webhook_secret)
        if not (self.socket_ping_interval_s > 0 and self.socket_ping_timeout_s > 0):
            raise ValueError("socket_ping_interval_s and socket_ping_timeout_s must be above 0")
        if self.log_format not in ("json", "text"):
            raise ValueError(f"log_format must be json or text, not {self.log_format!r}")

    def __repr__(self) -> str:  # settings get printed and logged: never with their passwords and keys
        return redacted_repr(self)

    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(self.data_dir))

    @property
    def keys_path(self) -> Path:
        return Path(os.path.expanduser(self.keys_dir)) if self.keys_dir else self.data_path / "keys"

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.http_host}:{self.http_port}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'imray.db'}"

    @property
    def shard_count(self) -> int:
        if self.shards > 0:
            return self.shards
        return 1 if self.db_url.startswith("sqlite") else 4  # not fixed by deploy(): a plain default

    def socket_url(self, node: str, host: str, port: int) -> str:
        """The URL clients are given for socket node `node`, which listens on host:port."""
        template = self.socket_public_url or DIRECT_SOCKET_URL
        return template.format(node=node, host=host, port=port)

    def with_shards_for(self, cluster_cpus: float) -> Settings:
        """These settings with the shard count fixed, before anything starts: every process must agree.

        A shard is one Python process doing about a third of a message's work, and each socket node
        sends each shard its own batches: more shards than the CPUs can feed only make the batches
        smaller. Measured on 2 CPUs with MariaDB: 4 shards 1,962 msgs/s, 1 shard 7,262.
        """
        if self.shards > 0:
            return self
        if self.db_url.startswith("sqlite"):
            return self.replace(shards=1)
        return self.replace(shards=max(1, min(MAX_AUTO_SHARDS, int(cluster_cpus) // SHARD_CPUS)))

    def replace(self, **changes: Any) -> Settings:
        return Settings(**{**asdict(self), **changes})


def check_socket_public_url(template: str, socket_nodes: int) -> None:
    """A ValueError unless `template` is empty or a ws(s):// URL whose placeholders are all known."""
    if not template:
        return
    name = "socket_public_url"
    if not template.startswith(("ws://", "wss://")):
        raise ValueError(f"{name} must start with ws:// or wss://, not {template!r}")
    try:
        used = {field_name for _, field_name, _, _ in string.Formatter().parse(template) if field_name is not None}
    except ValueError as exc:  # a lone { or }
        raise ValueError(f"{name} {template!r}: {exc}") from None
    unknown = used - SOCKET_URL_FIELDS
    if unknown:
        raise ValueError(f"{name} {template!r}: unknown placeholders {sorted(unknown)}; "
                         f"known: {{node}}, {{host}}, {{port}}")
    try:  # a format spec or conversion that does not fit a node id, an address or a port
        template.format(node="sn-1", host="127.0.0.1", port=9101)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} {template!r}: {exc}") from None
    if not used and socket_nodes > 1:  # a proxy cannot route a pinned session to its node
        raise ValueError(f"{name} {template!r} gives every one of the {socket_nodes} socket nodes the same "
                         "URL: put {node} (or {host} and {port}) in it")


def check_notify_webhook(url: str, secret: str) -> None:
    """A ValueError unless the webhook is off (no URL) or an http(s) URL with a host, and a secret."""
    if not url:
        return
    scheme, sep, rest = url.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.split("/", 1)[0]:
        raise ValueError(f"notify_webhook_url must be an http:// or https:// URL, not {redact_url(url)!r}")
    if not secret:
        raise ValueError("notify_webhook_url needs notify_webhook_secret: receivers verify the signature")


def _coerce(value: str, kind: type) -> Any:
    if kind is bool:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if kind is int:
        return int(value)
    if kind is float:
        return float(value)
    return value


def checked(loaded: object, source: str) -> dict[str, Any]:
    """Settings from a YAML mapping (a file, or Nacos's imray.yaml), names and types checked."""
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{source}: expected a mapping of settings")
    defaults = Settings()
    known = {f.name for f in fields(Settings)} - {"extra"}
    unknown = set(loaded) - known
    if unknown:
        raise ValueError(f"{source}: unknown settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, value in loaded.items():
        kind = type(getattr(defaults, name))
        if isinstance(value, str) and kind is not str:
            value = _coerce(value, kind)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{source}: {name} must be a {kind.__name__}, not {redact(name, value)!r}")
        values[name] = value
    return values


def parse_settings(content: str, source: str) -> dict[str, Any]:
    """Settings from YAML text (Nacos's imray.yaml); empty text is no settings."""
    return checked(yaml.safe_load(content) if content.strip() else {}, source)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Defaults, then the YAML file (IMRAY_CONFIG or `path`), then IMRAY_* variables, then overrides."""
    values: dict[str, Any] = {}
    known = {f.name: f for f in fields(Settings)}
    config_file = path or os.environ.get("IMRAY_CONFIG")
    if config_file:
        values.update(checked(yaml.safe_load(Path(config_file).read_text()), str(config_file)))
    for name in known:
        env = os.environ.get(f"IMRAY_{name.upper()}")
        if env is not None and name != "extra":
            kind = type(getattr(Settings(), name))
            values[name] = _coerce(env, kind)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
