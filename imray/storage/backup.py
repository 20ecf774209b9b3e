"""Backups of the database (issue 20): SQLite's online backup, and mysqldump / mysql for a server.

The embedded database is copied with SQLite's backup API from one read transaction: in WAL mode the
writers (the shards) go on meanwhile, and the copy is the database as of one instant, every message
with its head. A MySQL/MariaDB database is dumped with `mysqldump --single-transaction` (InnoDB: one
consistent snapshot, no lock held on the tables) and restored with the `mysql` client; the password
reaches them in MYSQL_PWD, never on a command line that `ps` shows.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from imray.storage.private import private_sqlite_file


class BackupError(Exception):
    """The backup or restore could not be made; the message says why and what to do."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for a database server."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("an in-memory database has nothing to back up")
    return Path(parsed.database)


def backup(url: str, dest: Path) -> str:
    """Copy the database at `url` to `dest` (a new file, readable by its owner only); what was done."""
    if dest.exists():
        raise BackupError(f"{dest} exists: name a new file")
    path = sqlite_path(url)
    if path is None:
        _dump(url, dest)
        return f"mysqldump of {make_url(url).database} written to {dest}"
    if not path.exists():
        raise BackupError(f"no database at {path}")
    private_sqlite_file(dest)
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out = sqlite3.connect(dest)
    try:
        src.backup(out)  # all pages in one step: one read transaction, one instant
    finally:
        out.close()
        src.close()
    return f"SQLite backup of {path} written to {dest}"


def restore(url: str, src: Path) -> str:
    """Replace the database at `url` with the backup `src` (imray must not be running on it)."""
    if not src.is_file():
        raise BackupError(f"no backup at {src}")
    path = sqlite_path(url)
    if path is None:
        _load(url, src)
        return f"{src} loaded into {make_url(url).database}"
    _check_sqlite_backup(src)
    path.parent.mkdir(parents=True, exist_ok=True)
    private_sqlite_file(path)
    backup_db = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(path)
    try:
        backup_db.backup(target)
    finally:
        target.close()
        backup_db.close()
    return f"{path} restored from {src}"


def _check_sqlite_backup(src: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            [verdict] = conn.execute("PRAGMA integrity_check").fetchone()
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{src} is not a SQLite database: {exc}") from None
    if verdict != "ok":
        raise BackupError(f"{src} is damaged: {verdict}")
    if not {"messages", "alembic_version"} <= tables:
        raise BackupError(f"{src} is not an imray database (no messages or alembic_version table)")


def _client(names: tuple[str, ...]) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BackupError(f"none of {', '.join(names)} is installed (Debian: apt-get install mariadb-client)")


def _server_args(url: str) -> tuple[list[str], dict[str, str]]:
    parsed = make_url(url)
    if not parsed.drivername.startswith(("mysql", "mariadb")):
        raise BackupError(f"backups of {parsed.drivername} databases are not supported")
    args = [f"--host={parsed.host or '127.0.0.1'}", f"--port={parsed.port or 3306}", f"--user={parsed.username or ''}",
            "--default-character-set=utf8mb4"]
    env = {**os.environ, "MYSQL_PWD": parsed.password or ""}
    return args, env


def _dump(url: str, dest: Path) -> None:
    args, env = _server_args(url)
    database = make_url(url).database or ""
    private_sqlite_file(dest)  # 0600 before a byte is written
    with dest.open("wb") as out:
        done = subprocess.run([_client(("mariadb-dump", "mysqldump")), *args, "--single-transaction", "--quick",
                               "--hex-blob", "--no-tablespaces", database],
                              stdout=out, stderr=subprocess.PIPE, env=env, check=False)
    if done.returncode != 0:
        dest.unlink(missing_ok=True)
        raise BackupError(f"mysqldump failed: {done.stderr.decode(errors='replace').strip()[:500]}")


def _load(url: str, src: Path) -> None:
    args, env = _server_args(url)
    database = make_url(url).database or ""
    client = _client(("mariadb", "mysql"))
    create = subprocess.run([client, *args, "-e", f"CREATE DATABASE IF NOT EXISTS `{database}` "
                             "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"],
                            capture_output=True, env=env, check=False)
    if create.returncode != 0:
        raise BackupError(f"could not create {database}: {create.stderr.decode(errors='replace').strip()[:500]}")
    with src.open("rb") as dump:
        done = subprocess.run([client, *args, database], stdin=dump, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise BackupError(f"loading {src} failed: {done.stderr.decode(errors='replace').strip()[:500]}")
