"""The `imray` command: up, down, status, clients create, doctor, ray-env, bench, db upgrade."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading

from imray.settings import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, data_dir=args.data_dir,
                         socket_nodes=getattr(args, "socket_nodes", None),
                         ray_address=getattr(args, "address", None))


def _connect(settings: Settings, address: str) -> object:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return ray.init(address=address, namespace=settings.namespace, log_to_driver=False,
                    logging_level=logging.WARNING)


def _node_addresses() -> list[str]:
    """The addresses of the cluster's live Ray nodes (one per machine, or one for a laptop)."""
    import ray

    return [node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]]


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
        key = runtime.prepare(settings)
        info = runtime.deploy(settings, key, getattr(context, "dashboard_url", None))
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
    print(f"  dashboard:  {info.dashboard_url or 'not running'}")
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


def cmd_clients_create(args: argparse.Namespace) -> int:
    from imray.domain.errors import Conflict
    from imray.domain.oauth import PUBLIC_CLIENT
    from imray.domain.tokens import digest
    from imray.storage import accounts, migrate
    from imray.storage.db import Database

    settings = _settings(args)
    client_id = args.client_id or f"{args.name.lower().replace(' ', '-')[:40]}-{secrets.token_hex(4)}"
    if client_id == PUBLIC_CLIENT:
        print(f"{PUBLIC_CLIENT} is the built-in public client", file=sys.stderr)
        return 2
    secret = secrets.token_urlsafe(32)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    try:
        db.transaction(lambda c: accounts.create_client(c, client_id, args.name, digest(secret), args.scope))
    except Conflict as exc:
        print(exc.message, file=sys.stderr)
        return 1
    finally:
        db.close()
    print(f"client_id:     {client_id}")
    print(f"client_secret: {secret}")
    print("the secret is shown once; imray keeps only its hash")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from imray.storage import migrate

    settings = _settings(args)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url, args.revision)
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
        storm_window=args.storm_window, sources=args.sources,
        results=Path(args.results) if args.results else None)
    results = bench(options)
    print(markdown(results))
    return 0 if results["audit"]["ok"] else 1


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
    clients = sub.add_parser("clients", help="OAuth2 clients").add_subparsers(dest="clients_command", required=True)
    create = clients.add_parser("create", help="create a confidential client (client-credentials grant)")
    create.add_argument("name")
    create.add_argument("--client-id")
    create.add_argument("--scope", default="chat")
    create.set_defaults(func=cmd_clients_create)
    sub.add_parser("doctor", help="check every configured backend").set_defaults(func=cmd_doctor)
    sub.add_parser("ray-env", help="the environment `ray start` needs for imray's ingress (eval it first)"
                   ).set_defaults(func=cmd_ray_env)
    b = sub.add_parser("bench", help="throughput and latency against a bare relay, with an audit")
    b.add_argument("--scenario", default="one2one,fanout,connections,storm,http",
                   help="comma-separated: one2one, fanout, connections, storm (implies connections), http")
    b.add_argument("--group-size", type=int, default=500, help="online members of the fan-out group")
    b.add_argument("--sessions", type=int, default=20000, help="concurrent authenticated sessions")
    b.add_argument("--session-users", type=int, default=1000,
                   help="users the sessions belong to (each has sessions/users devices)")
    b.add_argument("--storm-window", type=float, default=10.0, help="seconds in which every session comes back")
    b.add_argument("--sources", type=int, default=8, help="127.0.0.x source addresses the sessions use")
    b.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    b.add_argument("--pairs", type=int, default=16, help="sender/receiver pairs, across socket nodes")
    b.add_argument("--window", type=int, default=32, help="messages in flight per sender (closed loop)")
    b.add_argument("--processes", type=int, default=2, help="load-generator processes")
    b.add_argument("--http-concurrency", type=int, default=32)
    b.add_argument("--target", help="an imray gateway URL; default: start a local 3-node cluster (adapters "
                   "from the IMRAY_* settings, as always)")
    b.add_argument("--results", default="benchmarks/results", help="folder for JSON, Markdown and PNG ('' for none)")
    b.set_defaults(func=cmd_bench)
    db = sub.add_parser("db", help="the database schema").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="apply schema migrations (imray up does this too)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func in (cmd_up, cmd_down, cmd_status):
        settings = _settings(args)
        if not settings.ray_address:  # the cluster imray starts here: its token lives in the data dir
            from imray.cluster_auth import token_environment

            os.environ.update(token_environment(settings))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
