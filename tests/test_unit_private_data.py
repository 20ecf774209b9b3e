"""The embedded stack's data is its owner's alone: data dir 0700, SQLite files 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from imray.runtime import prepare
from imray.settings import Settings
from imray.storage import migrate
from imray.storage.db import Database


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The most permissive umask a careless service manager might give."""
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def test_imray_up_makes_the_data_dir_and_database_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    prepare(settings)  # what `imray up` does before it deploys: data dir, schema, signing key
    assert mode(settings.data_path) == 0o700
    assert mode(settings.data_path / "imray.db") == 0o600


def test_a_data_dir_made_earlier_with_open_modes_is_closed_by_imray_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    db_file = data / "imray.db"
    db_file.touch(mode=0o666)
    assert mode(data) == 0o777 and mode(db_file) == 0o666
    prepare(Settings(data_dir=str(data)))
    assert mode(data) == 0o700 and mode(db_file) == 0o600


def test_sqlite_journal_files_are_owner_only_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'imray.db'}"
    migrate.upgrade(url)
    assert mode(tmp_path / "new") == 0o700  # a directory imray creates for its database
    db = Database(url)
    try:
        db.transaction(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x INTEGER)"))
        for name in ("imray.db", "imray.db-wal", "imray.db-shm"):  # WAL mode, the connection still open
            assert mode(tmp_path / "new" / name) == 0o600, name
    finally:
        db.close()


def test_a_database_in_a_place_the_operator_chose_leaves_that_directory_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    migrate.upgrade(f"sqlite:///{shared / 'imray.db'}")
    assert mode(shared) == 0o755 and mode(shared / "imray.db") == 0o600


@pytest.mark.parametrize("argv", [["db", "upgrade"], ["clients", "create", "ops", "--scope", "users:read"]])
def test_cli_commands_that_make_the_data_dir_make_it_owner_only(tmp_path: Path, argv: list[str]) -> None:
    from imray.cli import main

    data = tmp_path / "fresh"
    assert main(["--data-dir", str(data), *argv]) == 0
    assert mode(data) == 0o700
    assert mode(data / "imray.db") == 0o600
