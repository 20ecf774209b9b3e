"""The `imray` command: up, down, status, clients create, keys, doctor, ray-env, bench, db upgrade."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from imray.settings import Settings, load_settings
from imray.storage.private import private_dir


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, data_dir=args.data_dir,
                         socket_nodes=getattr(args, "socket_nodes", None),
                         ray_address=getattr(args, "address", None))


def _connect(settings: Settings, address: str) -> object:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from imray.logs import ray_logging

    context = ray.init(address=address, namespace=settings.namespace, log_to_driver=False,
                       logging_level=logging.WARNING, logging_config=ray_logging(settings))
    logging.getLogger().setLevel(logging.WARNING)  # INFO is for the job's actors; this command stays quiet
    return context


def _node_addresses() -> list[str]:
    """The addresses of the cluster's live Ray nodes (one per machine, or one for a laptop)."""
    import ray

    return [node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]]


def _metrics_urls() -> list[str]:
    """Where Prometheus scrapes each live Ray node's metrics (Ray's and imray's, issue 20)."""
    import ray

    return [f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics" for node in ray.nodes()
            if node["Alive"] and node.get("MetricsExportPort")]


def _disconnect() -> None:
    """Leave the cluster before stopping it, so its shutdown noise does not reach this terminal."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cmd_up(args: argparse.Namespace) -> int:
    from imray import localcluster, runtime
    from imray.scaleout import ScaleOutRefused, check_scale_out

    settings = _settings(args)
    started_here = not settings.ray_address
    if started_here and (taken := localcluster.ports_in_use(settings)):
        print(f"ports {', '.join(map(str, taken))} are in use: is imray (or what it left behind) still running? "
              "`imray down` stops it", file=sys.stderr)
        return 1
    address = settings.ray_address or localcluster.start_local_cluster(settings)
    try:
        context = _connect(settings, address)
        # Before the schema, the keys or any actor: on several machines the embedded backends split the data.
        check_scale_out(settings, _node_addresses())
        keys = runtime.prepare(settings)
        info = runtime.deploy(settings, keys, getattr(context, "dashboard_url", None))
    except BaseException as exc:
        _disconnect()
        if started_here:
            localcluster.stop_local_cluster(settings)
        if isinstance(exc, ScaleOutRefused):
            print(f"imray up refused: {exc}", file=sys.stderr)
            return 2
        raise
    print(f"imray is up ({len(info.nodes)} socket nodes)")
    print(f"  API:        {info.api_url}")
    print(f"  API docs:   {info.docs_url}")
    print(f"  web app:    {info.api_url}/app")
    print(f"  dashboard:  {info.dashboard_url or 'not running'}")
    for url in _metrics_urls():
        print(f"  metrics:    {url}  (Prometheus; Grafana dashboard: deploy/grafana/imray.json)")
    if info.dashboard_url and os.environ.get("RAY_AUTH_TOKEN_PATH"):
        print(f"  (the dashboard asks for the cluster's token: {os.environ['RAY_AUTH_TOKEN_PATH']})")
    for node in info.nodes:
        listens = f"listens on {node.endpoint.host}:{node.endpoint.port}, " if settings.socket_public_url else ""
        print(f"  socket {node.node_id}: {node.url}  ({listens}ray node {node.endpoint.ray_node_id[:12]})")
    sys.stdout.flush()
    if args.detach:
        print("detached: `imray status` to look, `imray down` to stop")
        return 0
    print("Ctrl-C stops imray")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    runtime.undeploy(settings)
    _disconnect()
    if started_here:
        localcluster.stop_local_cluster(settings)
    print("imray is down")
    return 0


def _undeploy(settings: Settings, address: str) -> None:
    """The graceful part of `imray down`, in a child process that can be abandoned if it hangs."""
    from imray import runtime

    try:
        _connect(settings, address)
        runtime.undeploy(settings)
    except ConnectionError as exc:
        print(f"cluster unreachable ({exc}); stopping what is left")
    _disconnect()


def cmd_down(args: argparse.Namespace) -> int:
    import multiprocessing

    from imray import localcluster

    settings = _settings(args)
    address = localcluster.cluster_address(settings)
    if address is None:
        print("imray is not running (no cluster recorded in the data dir)")
        return 0
    # A half-dead cluster can block ray.init or serve.delete for many minutes: give the graceful
    # part a deadline, then stop the local cluster by force.
    graceful = multiprocessing.get_context("spawn").Process(target=_undeploy, args=(settings, address))
    graceful.start()
    graceful.join(args.timeout)
    forced = graceful.is_alive()
    if forced:
        graceful.kill()
        graceful.join()
        print(f"the cluster did not undeploy within {args.timeout:g} s; stopping it by force")
    localcluster.stop_local_cluster(settings, force=forced)
    print("imray is down")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from imray import localcluster, runtime
    from imray.adapters.named_actors import ActorMissing

    settings = _settings(args)
    address = localcluster.cluster_address(settings)
    if address is None:
        print("imray is not running")
        return 1
    _connect(settings, address)
    try:
        nodes = runtime.status(settings)
    except ActorMissing:
        print(f"a Ray cluster runs at {address}, but imray is not deployed on it")
        return 1
    print(f"imray on {address}: API {settings.base_url}")
    print(f"{'node':8} {'state':6} {'connections':>11} {'logins':>6} {'RSS MB':>7}  endpoint  ray node")
    for node in nodes:  # logins: pinned here in the last 10 s, counted as load until their sockets show
        state = "up" if node.alive else "down"
        print(f"{node.node_id:8} {state:6} {node.connections:>11} {node.pending_logins:>6} "
              f"{node.rss_bytes / 2**20:>7.0f}  {node.url}  {node.endpoint.ray_node_id[:12]}")
    return 0


def _supervisor(settings: Settings) -> object | None:
    """The running imray's supervisor (this process connected to its cluster), or None with why printed."""
    from imray import localcluster
    from imray.adapters.named_actors import ActorMissing, RayNamedActors

    address = localcluster.cluster_address(settings)
    if address is None:
        print("imray is not running", file=sys.stderr)
        return None
    _connect(settings, address)
    try:
        return RayNamedActors(settings.namespace, settings.shard_count).supervisor()
    except ActorMissing:
        print(f"a Ray cluster runs at {address}, but imray is not deployed on it", file=sys.stderr)
        return None


def _report(report: object) -> None:
    from imray.domain.nodes import DrainReport

    assert isinstance(report, DrainReport)
    print(f"{report.node_id}: {report.told} sessions told to move, {report.closed} closed at the deadline, "
          f"{report.took_s:g} s" + (", replaced" if report.restarted else ""))


def cmd_drain(args: argparse.Namespace) -> int:
    """Stop new logins to one socket node and move its sessions to the others (issue 20)."""
    import ray

    supervisor = _supervisor(_settings(args))
    if supervisor is None:
        return 1
    try:
        _report(ray.get(supervisor.drain.remote(args.node, args.timeout)))  # type: ignore[attr-defined]
    except ray.exceptions.RayTaskError as exc:
        print(f"imray drain: {exc.cause if exc.cause is not None else exc}", file=sys.stderr)
        return 1
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    """Replace the socket nodes one by one, each drained first (issue 20): sessions move, none is cut."""
    import time

    import ray

    if not args.rolling:
        print("imray restart: only --rolling is supported (a full stop is `imray down` and `imray up`)",
              file=sys.stderr)
        return 2
    supervisor = _supervisor(_settings(args))
    if supervisor is None:
        return 1
    started = time.monotonic()
    nodes = ray.get(supervisor.nodes.remote(), timeout=30)  # type: ignore[attr-defined]
    for node in nodes:
        try:
            _report(ray.get(supervisor.restart_node.remote(node.node_id, args.timeout)))  # type: ignore[attr-defined]
        except ray.exceptions.RayTaskError as exc:
            print(f"imray restart: {node.node_id}: {exc.cause if exc.cause is not None else exc}", file=sys.stderr)
            return 1
    print(f"rolling restart of {len(nodes)} socket nodes done in {time.monotonic() - started:.1f} s")
    return 0


def cmd_clients_create(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import Connection

    from imray.admin_cli import create_bot_client
    from imray.domain.authorization_code import redirect_uri_problem
    from imray.domain.errors import Conflict, DomainError
    from imray.domain.oauth import PUBLIC_CLIENT
    from imray.domain.scopes import check_scopes
    from imray.domain.tokens import digest
    from imray.storage import accounts, authorization_codes, migrate
    from imray.storage.db import Database

    settings = _settings(args)
    if not (args.name or args.bot):
        print("give the client a NAME, or --bot NAME", file=sys.stderr)
        return 2
    args.name = args.name or args.bot
    try:
        args.scope = check_scopes(args.scope)  # known names only (imray.domain.scopes)
    except DomainError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    client_id = args.client_id or f"{args.name.lower().replace(' ', '-')[:40]}-{secrets.token_hex(4)}"
    if client_id == PUBLIC_CLIENT:
        print(f"{PUBLIC_CLIENT} is the built-in public client", file=sys.stderr)
        return 2
    # The authorization code flow (PKCE area): exact redirect URIs; --public: no secret, PKCE alone.
    problems = [f"--redirect-uri {u!r}: {p}" for u in args.redirect_uri if (p := redirect_uri_problem(u))]
    if args.bot and (args.redirect_uri or args.public):
        problems.append("a bot client has no redirect URI and is not public")
    if args.public and not args.redirect_uri:
        problems.append("a public client needs --redirect-uri (it exists only for the authorization code flow)")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if args.bot:  # a bot account bound to the client: what it sends shows the bot as the sender
        return create_bot_client(settings, args.bot, client_id, args.scope)
    secret = None if args.public else secrets.token_urlsafe(32)
    private_dir(settings.data_path)  # 0700 whatever the umask, as `imray up` makes it
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)

    def create(conn: Connection) -> None:
        accounts.create_client(conn, client_id, args.name, digest(secret) if secret else None, args.scope)
        authorization_codes.set_redirect_uris(conn, client_id, args.redirect_uri)

    try:
        db.transaction(create)
    except Conflict as exc:
        print(exc.message, file=sys.stderr)
        return 1
    finally:
        db.close()
    print(f"client_id:     {client_id}")
    for uri in args.redirect_uri:
        print(f"redirect_uri:  {uri}")
    if secret is None:
        print("a public client: no secret; it signs users in with the authorization code flow and PKCE (S256) only")
        return 0
    print(f"client_secret: {secret}")
    print("the secret is shown once; imray keeps only its hash")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from imray.storage import migrate

    settings = _settings(args)
    private_dir(settings.data_path)  # 0700 whatever the umask, as `imray up` makes it
    migrate.upgrade(settings.db_url, args.revision)
    print(f"database at revision {migrate.current(settings.db_url)}")
    return 0


def cmd_db_backup(args: argparse.Namespace) -> int:
    from imray.storage.backup import BackupError, backup

    try:
        print(backup(_settings(args).db_url, Path(args.file)))
    except BackupError as exc:
        print(f"imray db backup: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_db_restore(args: argparse.Namespace) -> int:
    """Shards keep each conversation's head in memory: a database replaced under a running imray would
    get seqs past its own heads (gaps), so the embedded one is restored only while imray is down."""
    from imray import localcluster
    from imray.storage import migrate
    from imray.storage.backup import BackupError, restore, sqlite_path

    settings = _settings(args)
    embedded = sqlite_path(settings.db_url) is not None
    if embedded and localcluster.cluster_address(settings) is not None:
        print("imray db restore: imray is running on this data dir: `imray down` first", file=sys.stderr)
        return 1
    if not embedded and not args.force:
        print("imray db restore: stop every imray process that uses this database, then run again with --force",
              file=sys.stderr)
        return 1
    try:
        print(restore(settings.db_url, Path(args.file)))
    except BackupError as exc:
        print(f"imray db restore: {exc}", file=sys.stderr)
        return 1
    migrate.upgrade(settings.db_url, "head")  # a backup from an older imray catches up with this one
    print(f"database at revision {migrate.current(settings.db_url)}")
    return 0


def cmd_ray_env(args: argparse.Namespace) -> int:
    """For clusters imray does not start itself (`ray up`): eval "$(imray ray-env)" before `ray start`."""
    import shlex

    from imray.localcluster import ray_environment

    for name, value in ray_environment(_settings(args)).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from imray.doctor import run_checks

    checks = run_checks(_settings(args))
    for check in checks:
        print(check.line())
    return 0 if all(c.ok for c in checks) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from imray.bench.report import markdown
    from imray.bench.run import BenchOptions, bench

    options = BenchOptions(
        scenarios=tuple(args.scenario.split(",")), duration=args.duration, pairs=args.pairs, window=args.window,
        processes=args.processes, http_concurrency=args.http_concurrency, target=args.target,
        group_size=args.group_size, sessions=args.sessions, session_users=args.session_users,
        storm_window=args.storm_window, storm_over_socket=not args.storm_http, sources=args.sources,
        centrifugo=not args.no_centrifugo, profile=args.profile,
        shard_counts=tuple(int(n) for n in args.shard_counts.split(",")),
        results=Path(args.results) if args.results else None)
    results = bench(options)
    print(markdown(results))
    return 0 if results["audit"]["ok"] else 1


def _keys_dir(args: argparse.Namespace) -> Path:
    settings = _settings(args)
    return Path(args.keys_dir).expanduser() if args.keys_dir else settings.keys_path


def _key_error(exc: Exception) -> int:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        print(f"no keyring in {Path(exc.filename).parent} (`imray up` or `imray keys rotate` makes one)",
              file=sys.stderr)
    else:
        print(getattr(exc, "message", None) or str(exc), file=sys.stderr)
    return 1


def cmd_keys_list(args: argparse.Namespace) -> int:
    import time

    from imray.storage import keyfiles

    directory = _keys_dir(args)
    try:
        ring = keyfiles.read_ring(directory)
    except (OSError, ValueError) as exc:
        return _key_error(exc)
    print(f"keys in {directory} (JWKS publishes each; new tokens are signed with the active one)")
    for key in ring.keys:
        created = keyfiles.created_at(directory, key.kid)
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(created)) if created else "-"
        print(f"  {key.kid}  {'active' if key.kid == ring.active_kid else '      '}  {when}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from imray.storage import keyfiles

    directory = _keys_dir(args)
    try:
        before = keyfiles.ensure(directory).active_kid
        ring, key = keyfiles.rotate(directory, activate=not args.stage)
    except (OSError, ValueError) as exc:
        return _key_error(exc)
    if args.stage:
        print(f"key {key.kid} added and published; new tokens still use {ring.active_kid}. "
              f"Once every host has it: imray keys activate {key.kid}")
        return 0
    print(f"key {key.kid} is active: new tokens are signed with it (every process sees it within "
          f"{keyfiles.CHECK_S:g} s, at once when a token names it)")
    print(f"tokens signed with {before} verify until they expire; after that: imray keys retire {before}")
    return 0


def cmd_keys_activate(args: argparse.Namespace) -> int:
    from imray.domain.errors import DomainError
    from imray.storage import keyfiles

    try:
        keyfiles.activate(_keys_dir(args), args.kid)
    except (DomainError, OSError, ValueError) as exc:
        return _key_error(exc)
    print(f"key {args.kid} is active: new tokens are signed with it")
    return 0


def cmd_keys_retire(args: argparse.Namespace) -> int:
    from imray.domain.errors import DomainError
    from imray.storage import keyfiles

    try:
        keyfiles.retire(_keys_dir(args), args.kid)
    except (DomainError, OSError, ValueError) as exc:
        return _key_error(exc)
    print(f"key {args.kid} retired: tokens it signed no longer verify (every process within "
          f"{keyfiles.CHECK_S:g} s), and the JWKS no longer lists it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imray", description="Distributed instant messaging on Ray")
    parser.add_argument("--config", help="YAML settings file (or IMRAY_CONFIG)")
    parser.add_argument("--data-dir", help="where the embedded database and keys live (IMRAY_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a local Ray cluster (or join one) and deploy imray")
    up.add_argument("--detach", action="store_true", help="return once imray is up")
    up.add_argument("--socket-nodes", type=int, help="number of socket-node actors (default 2)")
    up.add_argument("--address", help="join this Ray cluster ('auto' on a cluster node) instead of starting one")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="undeploy imray and stop the local cluster")
    down.add_argument("--timeout", type=float, default=90.0,
                      help="seconds for a graceful undeploy before the local cluster is stopped by force")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="socket nodes, their endpoints and connections").set_defaults(func=cmd_status)
    drain = sub.add_parser("drain", help="stop new logins to a socket node and move its sessions to the others")
    drain.add_argument("node", help="the socket node's id, e.g. sn-1")
    drain.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to empty")
    drain.set_defaults(func=cmd_drain)
    restart = sub.add_parser("restart", help="replace the socket nodes one by one, sessions moved first")
    restart.add_argument("--rolling", action="store_true", help="one node at a time (the only mode)")
    restart.add_argument("--timeout", type=float, default=60.0, help="seconds each node may take to empty")
    restart.set_defaults(func=cmd_restart)
    clients = sub.add_parser("clients", help="OAuth2 clients").add_subparsers(dest="clients_command", required=True)
    create = clients.add_parser("create", help="create a confidential client (client-credentials grant)")
    create.add_argument("name", nargs="?", help="the client's name (default: the bot's)")
    create.add_argument("--client-id")
    create.add_argument("--scope", default="chat",
                        help="space-separated, from: chat messages:send users:read users:admin "
                             "conversations:admin presence:read introspect")
    create.add_argument("--bot", metavar="NAME", help="also create a bot account NAME that the client sends as")
    create.add_argument("--redirect-uri", action="append", default=[], metavar="URI",
                        help="an exact redirect URI for the authorization code flow (repeatable): https, "
                             "http on loopback, or a private-use scheme")
    create.add_argument("--public", action="store_true",
                        help="no secret: a third-party app that proves itself with PKCE alone (needs --redirect-uri)")
    create.set_defaults(func=cmd_clients_create)
    from imray.admin_cli import add_parsers

    add_parsers(sub, clients, _settings)  # clients list|revoke, users ...
    keys = sub.add_parser("keys", help="the token signing keyring (keys_dir): rotate, list, retire")
    keys.add_argument("--keys-dir", help="the keys directory (default: keys_dir, or data_dir/keys)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("list", help="the keys, which one is active, when each was made").set_defaults(
        func=cmd_keys_list)
    rotate = keys_sub.add_parser("rotate", help="add a new key and sign new tokens with it")
    rotate.add_argument("--stage", action="store_true",
                        help="add and publish it only; `imray keys activate KID` once every host has it")
    rotate.set_defaults(func=cmd_keys_rotate)
    activate = keys_sub.add_parser("activate", help="sign new tokens with this key (one of the ring's)")
    activate.add_argument("kid")
    activate.set_defaults(func=cmd_keys_activate)
    retire = keys_sub.add_parser("retire", help="remove a key: tokens it signed stop verifying")
    retire.add_argument("kid")
    retire.set_defaults(func=cmd_keys_retire)
    sub.add_parser("doctor", help="check every configured backend").set_defaults(func=cmd_doctor)
    sub.add_parser("ray-env", help="the environment `ray start` needs for imray's ingress (eval it first)"
                   ).set_defaults(func=cmd_ray_env)
    b = sub.add_parser("bench", help="throughput and latency against a bare relay, with an audit")
    b.add_argument("--scenario", default="one2one,fanout,connections,storm,http,rolling",
                   help="comma-separated: one2one, fanout, connections, storm (implies connections), http, "
                   "rolling (every socket node drained and replaced under 1:1 traffic; late, audited), "
                   "shards (1:1 with each of --shard-counts; last)")
    b.add_argument("--group-size", type=int, default=500, help="online members of the fan-out group")
    b.add_argument("--sessions", type=int, default=20000, help="concurrent authenticated sessions")
    b.add_argument("--session-users", type=int, default=1000,
                   help="users the sessions belong to (each has sessions/users devices)")
    b.add_argument("--storm-window", type=float, default=10.0, help="seconds in which every session comes back")
    b.add_argument("--storm-http", action="store_true",
                   help="storm sessions catch up through HTTP history, not with their last seq in the auth frame")
    b.add_argument("--sources", type=int, default=8, help="127.0.0.x source addresses the sessions use")
    b.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    b.add_argument("--pairs", type=int, default=16, help="sender/receiver pairs, across socket nodes")
    b.add_argument("--window", type=int, default=32, help="messages in flight per sender (closed loop)")
    b.add_argument("--processes", type=int, default=2, help="load-generator processes")
    b.add_argument("--http-concurrency", type=int, default=32)
    b.add_argument("--target", help="an imray gateway URL; default: start a local 3-node cluster (adapters "
                   "from the IMRAY_* settings, as always)")
    b.add_argument("--results", default="benchmarks/results", help="folder for JSON, Markdown and PNG ('' for none)")
    b.add_argument("--no-centrifugo", action="store_true",
                   help="leave out Centrifugo, the second baseline (used when built: `make bench` builds it)")
    b.add_argument("--shard-counts", default="1,2,4",
                   help="the shards scenario (not in the default list: it redeploys imray for each count; "
                        "on a database server)")
    b.add_argument("--profile", action="store_true",
                   help="repeat the 1:1 closed loop with py-spy sampling the socket nodes and shards")
    b.set_defaults(func=cmd_bench)
    db = sub.add_parser("db", help="the database: schema migrations, backup and restore").add_subparsers(
        dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="apply schema migrations (imray up does this too)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)
    backup = db.add_parser("backup", help="copy the database to a new file, safe while imray runs (SQLite's online "
                           "backup; mysqldump --single-transaction for MySQL/MariaDB)")
    backup.add_argument("file", help="the backup to write (must not exist)")
    backup.set_defaults(func=cmd_db_backup)
    restore = db.add_parser("restore", help="replace the database with a backup (imray stopped), then migrate it")
    restore.add_argument("file", help="a file written by `imray db backup`")
    restore.add_argument("--force", action="store_true", help="a database server: confirm no imray process uses it")
    restore.set_defaults(func=cmd_db_restore)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func in (cmd_up, cmd_down, cmd_status, cmd_drain, cmd_restart):
        settings = _settings(args)
        if not settings.ray_address:  # the cluster imray starts here: its token lives in the data dir
            from imray.cluster_auth import token_environment

            os.environ.update(token_environment(settings))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
