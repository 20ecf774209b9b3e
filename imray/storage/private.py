"""Owner-only modes for the embedded stack's data (the data dir 0700, SQLite files 0600), whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
# SQLite's companions of a database file; it creates them with the database file's mode.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """`path` exists and only its owner may enter it (parents it creates keep the umask's mode)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def private_parent(path: Path) -> None:
    """The directory `path` goes in: created owner-only if missing; an existing one (a place the
    operator chose, perhaps shared) is left as it is."""
    if not path.parent.exists():
        private_dir(path.parent)


def private_sqlite_file(path: Path) -> None:
    """The SQLite database at `path` exists (an empty file is an empty database) and only its owner
    may read it, nor its journal files: called before each connection opens it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # O_CREAT's mode passes through the umask, and an old file keeps its own
    finally:
        os.close(fd)
    for suffix in SQLITE_SIDECARS:
        try:
            os.chmod(path.with_name(path.name + suffix), FILE_MODE)
        except FileNotFoundError:
            pass
