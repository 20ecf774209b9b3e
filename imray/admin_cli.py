"""`imray clients list|revoke`, bot clients, and `imray users ...`: the operators' commands of the server API.

Clients live in the database, so the `clients` commands work on it directly (as `clients create`
always did). The `users` commands are HTTP calls to the server API, authenticated as a
confidential client (client-credentials grant) given by IMRAY_ADMIN_CLIENT_ID / _SECRET or flags.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imray.settings import Settings
from imray.storage.private import private_dir

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

SettingsOf = Callable[[argparse.Namespace], Settings]


def _database(settings: Settings) -> Any:
    from imray.storage import migrate
    from imray.storage.db import Database

    private_dir(settings.data_path)  # 0700 whatever the umask, as `imray up` makes it
    migrate.upgrade(settings.db_url)
    return Database(settings.db_url)


def create_bot_client(settings: Settings, bot: str, client_id: str, scope: str) -> int:
    """A bot account and its confidential client, in one transaction; prints the secret once."""
    from imray.domain.errors import DomainError
    from imray.domain.scopes import check_bot_name
    from imray.domain.tokens import digest
    from imray.storage import admin

    secret = secrets.token_urlsafe(32)
    db = _database(settings)
    try:
        bot_id = db.transaction(lambda c: admin.create_bot_client(c, check_bot_name(bot), client_id, digest(secret),
                                                                  scope))
    except DomainError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    finally:
        db.close()
    print(f"client_id:     {client_id}")
    print(f"client_secret: {secret}")
    print(f"bot_user_id:   {bot_id}")
    print("the secret is shown once; imray keeps only its hash")
    return 0


def cmd_clients_list(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from imray.storage import admin

    db = _database(settings_of(args))
    try:
        rows = db.transaction(admin.list_clients)
    finally:
        db.close()
    print(f"{'client_id':40} {'name':20} {'bot':>8} {'created (UTC)':19} {'state':8} scope")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["created_at"] / 1000))
        state = "revoked" if row["revoked_at"] else ("active" if row["confidential"] else "public")
        bot = str(row["bot_user_id"]) if row["bot_user_id"] else "-"
        print(f"{row['client_id']:40} {row['name'][:20]:20} {bot:>8} {created:19} {state:8} {row['scope']}")
    return 0


def cmd_clients_revoke(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from imray.storage import admin

    settings = settings_of(args)
    db = _database(settings)
    try:
        def revoke(conn: Connection) -> list[str] | None:
            if not admin.revoke_client(conn, args.client_id):
                return None
            return admin.end_client_logins(conn, args.client_id, settings.access_token_ttl_s)

        ended = db.transaction(revoke)
    finally:
        db.close()
    if ended is None:
        print(f"no client {args.client_id}", file=sys.stderr)
        return 1
    # Every process follows the revoked logins in the database (adapters.revocations): within a second
    # or two their tokens are refused and their sockets closed (4001).
    print(f"client {args.client_id} revoked: no new tokens; {len(ended)} logins made through it ended (their "
          f"sockets close within seconds); its own tokens are refused by the server API within "
          f"{settings.server_client_check_s:g} s and expire within {settings.access_token_ttl_s} s")
    return 0


# -- users: over the server API -------------------------------------------------------------------

class _Failed(Exception):
    pass


def _admin_session(args: argparse.Namespace, settings: Settings) -> Any:
    import httpx

    client_id = args.client_id or os.environ.get("IMRAY_ADMIN_CLIENT_ID", "")
    secret = args.client_secret or os.environ.get("IMRAY_ADMIN_CLIENT_SECRET", "")
    if not client_id or not secret:
        raise _Failed("give a confidential client: --client-id/--client-secret or "
                      "IMRAY_ADMIN_CLIENT_ID/IMRAY_ADMIN_CLIENT_SECRET (imray clients create admin "
                      "--scope 'users:read users:admin')")
    http = httpx.Client(base_url=args.url or settings.base_url, timeout=30)
    r = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    if r.status_code != 200:
        http.close()
        raise _Failed(f"the client's token was refused: {r.status_code} {r.text}")
    http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return http


def _answer(r: Any, expected: int = 200) -> Any:
    if r.status_code != expected:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise _Failed(f"{r.request.method} {r.request.url.path}: {r.status_code} {detail}")
    return r.json()


def _user_id(http: Any, who: str) -> int:
    """USER is a username, or id:N for an id (usernames may be all digits)."""
    if who.startswith("id:") and who[3:].isdigit():
        return int(who[3:])
    return int(_answer(http.get("/api/server/users", params={"username": who}))["id"])


def cmd_users(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    try:
        http = _admin_session(args, settings_of(args))
        try:
            return _users(args, http)
        finally:
            http.close()
    except _Failed as exc:
        print(exc, file=sys.stderr)
        return 1


def _users(args: argparse.Namespace, http: Any) -> int:
    action = args.users_command
    generated = None
    if action in ("create", "reset-password") and not args.password:
        generated = secrets.token_urlsafe(12)
    password = args.password if action in ("create", "reset-password") and args.password else generated
    if action == "create":
        body = {"username": args.user, "password": password, "nickname": args.nickname}
        out = _answer(http.post("/api/server/users", json=body), 201)
    elif action == "reset-password":
        out = _answer(http.put(f"/api/server/users/{_user_id(http, args.user)}/password", json={"password": password}))
    else:
        out = _answer(http.post(f"/api/server/users/{_user_id(http, args.user)}/{action}"))
    print(json.dumps(out, indent=2))
    if generated:
        print(f"password: {generated}")
        print("the password is shown once")
    return 0


def add_parsers(sub: Any, clients: Any, settings_of: SettingsOf) -> None:
    """`clients list|revoke` under `clients`, and the `users` group under the top-level `sub`."""
    listing = clients.add_parser("list", help="every client: id, name, bot, created, state, scopes (never secrets)")
    listing.set_defaults(func=lambda a: cmd_clients_list(a, settings_of))
    revoke = clients.add_parser("revoke", help="revoke a client: no new tokens, its tokens refused within seconds")
    revoke.add_argument("client_id")
    revoke.set_defaults(func=lambda a: cmd_clients_revoke(a, settings_of))
    users = sub.add_parser("users", help="act on accounts through the server API (as a confidential client)")
    users.add_argument("--url", help="the gateway (default: the settings' public URL)")
    users.add_argument("--client-id", help="the admin client (or IMRAY_ADMIN_CLIENT_ID)")
    users.add_argument("--client-secret", help="its secret (or IMRAY_ADMIN_CLIENT_SECRET)")
    actions = users.add_subparsers(dest="users_command", required=True)
    helps = {"create": "create an account (the password given, or generated and printed once)",
             "disable": "disable an account: every login ended, sockets closed, grants refused until enabled",
             "enable": "enable a disabled account", "kick": "end every login of the user (sockets closed)",
             "reset-password": "set a new password (given, or generated and printed once) and end every login"}
    for action, text in helps.items():
        p = actions.add_parser(action, help=text)
        p.add_argument("user", help="a username, or id:N" if action != "create" else "the new username")
        if action in ("create", "reset-password"):
            p.add_argument("--password", help="default: a generated one, printed once")
        if action == "create":
            p.add_argument("--nickname")
        p.set_defaults(func=lambda a: cmd_users(a, settings_of))
