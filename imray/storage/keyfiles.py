"""The signing keyring on disk: a directory every imray process reads its keys from (never a Ray argument).

Layout of the keys directory (`keys_dir`, default `<data_dir>/keys`; it may be a secret mount):
  <kid>.pem   one private key each (PKCS#8 PEM, 0600), the file name is informative only
  active      the kid new tokens are signed with
The directory is 0700 when imray makes it. The old layout, a lone `jwt-signing-key.pem`, is read as a
ring of that one key, and moved into the new layout by the first `ensure` (`imray up`, `imray keys`).

Changes are written so that a reader never sees an active kid without its key: a new key file first,
then `active` (each replaced by a rename), then retired key files removed. `KeyFiles` is the
`KeySource` each process holds: it looks for changes every CHECK_S seconds, and at once (at most
every UNKNOWN_KID_S) when a token names a kid it does not know.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from imray.domain.keyring import Keyring
from imray.domain.tokens import SigningKey
from imray.storage.private import FILE_MODE, private_dir, private_parent

log = logging.getLogger("imray.keys")
LEGACY = "jwt-signing-key.pem"
ACTIVE = "active"
SUFFIX = ".pem"
LOCK = ".lock"
CHECK_S = 2.0  # how often a process looks for a rotated or retired key
UNKNOWN_KID_S = 1.0  # at most this often a token with an unknown kid makes it look at once
READ_ATTEMPTS = 3  # a ring changed while being read is read again

Stamp = tuple[tuple[str, int, int, int], ...]


def read_ring(directory: Path) -> Keyring:
    """The ring as the directory holds it now; FileNotFoundError when it holds none, ValueError when
    it is inconsistent (after READ_ATTEMPTS reads)."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return _read_once(directory)
        except ValueError:
            if attempt == READ_ATTEMPTS - 1:
                raise
            time.sleep(0.05)  # a writer between its steps
    raise AssertionError("unreachable")


def _read_once(directory: Path) -> Keyring:
    try:
        active = (directory / ACTIVE).read_text().strip()
    except FileNotFoundError:
        legacy = directory / LEGACY
        try:
            key = SigningKey.from_private_pem(legacy.read_text())  # the old layout
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no signing keys here (keys_dir: every host that runs imray "
                                    "needs this directory; `imray up` or `imray keys rotate` makes it)",
                                    str(legacy)) from None
        return Keyring((key,), key.kid)
    found: list[tuple[int, str, SigningKey]] = []
    for path in directory.glob(f"*{SUFFIX}"):
        if path.name == LEGACY:
            continue
        try:
            found.append((path.stat().st_mtime_ns, path.name, SigningKey.from_private_pem(path.read_text())))
        except FileNotFoundError:  # retired meanwhile
            continue
    keys = {key.kid: key for _, _, key in sorted(found, key=lambda f: (f[0], f[1]))}  # oldest first
    return Keyring(tuple(keys.values()), active)  # ValueError if the active key is missing


def stamp(directory: Path) -> Stamp:
    """What changes when the ring's files do (names, times, sizes, inodes), following symlinks as a
    Kubernetes secret mount's are: cheaper than reading and parsing the keys."""
    entries = []
    with os.scandir(directory) as listing:
        for entry in listing:
            if entry.name.endswith(".tmp") or entry.name == LOCK:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            entries.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(sorted(entries))


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One writer at a time (two `imray keys` at once)."""
    fd = os.open(directory / LOCK, os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, text: str) -> None:
    """`path` holds `text`, owner-only, replaced whole (a reader sees the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # O_CREAT's mode passes through the umask
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _save(directory: Path, old: Keyring | None, new: Keyring) -> None:
    before = {k.kid for k in old.keys} if old else set()
    for key in new.keys:
        if key.kid not in before:
            _write(directory / f"{key.kid}{SUFFIX}", key.private_pem)
    if old is None or old.active_kid != new.active_kid or not (directory / ACTIVE).exists():
        _write(directory / ACTIVE, new.active_kid + "\n")
    for kid in before - {k.kid for k in new.keys}:
        (directory / f"{kid}{SUFFIX}").unlink(missing_ok=True)


def ensure(directory: Path) -> Keyring:
    """The ring, made if there is none (one new key) and moved out of the old layout if it is in it.
    A ring already there is only read: the directory may be a read-only secret mount."""
    if (directory / ACTIVE).exists():
        return read_ring(directory)
    private_parent(directory)  # a data dir made here is owner-only too
    private_dir(directory)
    with _locked(directory):
        if (directory / ACTIVE).exists():  # another process made it meanwhile
            return read_ring(directory)
        legacy = directory / LEGACY
        key = SigningKey.from_private_pem(legacy.read_text()) if legacy.exists() else SigningKey.generate()
        ring = Keyring((key,), key.kid)
        _save(directory, None, ring)
        if legacy.exists():
            legacy.unlink()
            log.info("signing key %s moved into the keyring in %s", key.kid, directory)
        return ring


def _change(directory: Path, change: Callable[[Keyring], Keyring], create: bool = False) -> Keyring:
    """`change` applied to the ring on disk (FileNotFoundError if there is none, unless `create`)."""
    if not create:
        read_ring(directory)  # FileNotFoundError when there is none (the old layout is one)
    ensure(directory)  # makes one, or moves the old layout in
    with _locked(directory):
        old = read_ring(directory)
        new = change(old)  # a domain error leaves the files as they were
        _save(directory, old, new)
        return new


def rotate(directory: Path, activate: bool = True) -> tuple[Keyring, SigningKey]:
    """A new key in the ring, active for new tokens unless `activate` is False (then only published)."""
    key = SigningKey.generate()
    return _change(directory, lambda ring: ring.added(key, activate), create=True), key


def activate(directory: Path, kid: str) -> Keyring:
    return _change(directory, lambda ring: ring.activated(kid))


def retire(directory: Path, kid: str) -> Keyring:
    return _change(directory, lambda ring: ring.retired(kid))


def created_at(directory: Path, kid: str) -> float | None:
    """When the key's file was written (unix s), for `imray keys list`."""
    try:
        return (directory / f"{kid}{SUFFIX}").stat().st_mtime
    except FileNotFoundError:
        return None


class KeyFiles:
    """`domain.keyring.KeySource` over a keys directory. The first read must succeed (a process
    without keys cannot work); later failed reads keep the ring it had, and are tried again."""

    def __init__(self, directory: Path, check_s: float = CHECK_S, unknown_kid_s: float = UNKNOWN_KID_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._dir, self._check_s, self._unknown_kid_s, self._clock = directory, check_s, unknown_kid_s, clock
        try:
            self._stamp = stamp(directory)  # before reading: a change meanwhile is read at the next check
        except FileNotFoundError:
            read_ring(directory)  # says what is missing, and where
            raise
        self._ring = read_ring(directory)
        self._checked, self._forced = clock(), -math.inf  # the first unknown kid looks at once

    def current(self) -> Keyring:
        if self._clock() - self._checked >= self._check_s:
            self._reload()
        return self._ring

    def unknown_kid(self, kid: str) -> Keyring:
        now = self._clock()
        if now - self._forced >= self._unknown_kid_s:
            self._forced = now
            self._reload()
        return self._ring

    def _reload(self) -> None:
        self._checked = self._clock()
        try:
            now = stamp(self._dir)
            if now == self._stamp:
                return
            ring = read_ring(self._dir)
        except (OSError, ValueError) as exc:
            log.warning("reading the keys in %s failed, keeping the %d known: %r", self._dir,
                        len(self._ring.keys), exc)
            return
        self._stamp = now
        if ([k.kid for k in ring.keys], ring.active_kid) != ([k.kid for k in self._ring.keys], self._ring.active_kid):
            log.info("keyring changed: active %s, keys %s", ring.active_kid, [k.kid for k in ring.keys])
            self._ring = ring
