"""`imray db backup` / `imray db restore` (issue 20): a backup taken while messages flow restores whole,
and the restored database's conversations go on from their last seq. Both stacks: SQLite's online
backup on the embedded one, mysqldump on MariaDB."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url
from support import Api, Socket, direct

from imray.domain.messaging import ConversationLog, SendItem
from imray.storage import messages
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imray.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False)


async def test_a_backup_taken_during_traffic_restores_whole_and_seqs_continue(stack, tmp_path: Path) -> None:
    api = Api(stack.base_url)
    alice, bob = await api.user(), await api.user()
    conv = direct(alice.user_id, bob.user_id)
    sock = await Socket.open(alice.socket_url, alice.access_token)
    acked: list[tuple[float, int]] = []  # (when the ack came, seq)
    for i in range(20):
        acked.append((time.monotonic(), (await sock.send_text(conv, f"before {i}"))["seq"]))
    stop = asyncio.Event()

    async def traffic() -> None:  # bounded: stops at the event or after 2000 messages
        for i in range(2000):
            if stop.is_set():
                return
            ack = await sock.send_text(conv, f"during {i}")
            assert ack["type"] == "ack", ack
            acked.append((time.monotonic(), ack["seq"]))

    sender = asyncio.create_task(traffic())
    await asyncio.sleep(0.3)
    source_env = {"IMRAY_DATA_DIR": stack.data_dir}
    backup_file = tmp_path / "imray.backup"
    started = time.monotonic()
    made = await asyncio.to_thread(_cli, source_env, "db", "backup", str(backup_file))
    finished = time.monotonic()
    await asyncio.sleep(0.3)
    stop.set()
    await sender
    await sock.close()
    await api.close()
    assert made.returncode == 0, made.stderr
    assert backup_file.stat().st_mode & 0o077 == 0  # the owner's only: it holds every message
    assert _cli(source_env, "db", "backup", str(backup_file)).returncode == 1  # never over an existing file
    sent_during = [seq for at, seq in acked if at > started]
    assert sent_during, "no message was sent while the backup ran"

    # Restore somewhere new: a fresh data dir, or a new database on the same server.
    url = stack.settings.db_url
    if url.startswith("sqlite"):
        target_env = {"IMRAY_DATA_DIR": str(tmp_path / "restored")}
        target_url = f"sqlite:///{tmp_path / 'restored' / 'imray.db'}"
        force: tuple[str, ...] = ()
    else:
        target_url = make_url(url).set(database=f"imray_restore_{uuid.uuid4().hex[:8]}").render_as_string(
            hide_password=False)
        target_env = {"IMRAY_DATABASE_URL": target_url}
        force = ("--force",)
        assert _cli(target_env, "db", "restore", str(backup_file)).returncode == 1  # a server: only with --force
    done = _cli(target_env, "db", "restore", str(backup_file), *force)
    assert done.returncode == 0, done.stderr
    restored = Database(target_url)
    try:
        history = restored.transaction(lambda c: messages.history(c, conv, None, None, 200))
        while len(history) % 200 == 0 and history:
            after = history[-1]["seq"]
            more = restored.transaction(lambda c, after=after: messages.history(c, conv, after, None, 200))
            if not more:
                break
            history += more
        seqs = [m["seq"] for m in history]
        assert seqs == list(range(1, len(seqs) + 1)), "the restored conversation has gaps"
        # Whole as of one instant: everything acked before the backup began, nothing half-written.
        assert max(seq for at, seq in acked if at < started) <= len(seqs)
        assert len(seqs) <= max(seq for at, seq in acked if at < finished + 1)
        assert restored.transaction(lambda c: messages.last_seq(c, conv)) == len(seqs)
        assert all(m["body"].startswith(("before ", "during ")) for m in history)

        # Seqs go on from the restored head: the next message is the one after it, no gap, no reuse.
        log = ConversationLog(SqlMessageStore(restored))
        batch = await log.plan([SendItem(alice.user_id, "s", "after-restore", conv, "text", "after")])
        await SqlMessageStore(restored).commit(batch)
        assert batch.outcomes[0].ack is not None, batch.outcomes[0].error
        assert orjson.loads(batch.outcomes[0].ack)["seq"] == len(seqs) + 1
    finally:
        if not url.startswith("sqlite"):
            restored.transaction(lambda c: c.execute(text(f"DROP DATABASE `{make_url(target_url).database}`")))
        restored.close()
