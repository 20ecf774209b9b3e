"""The signing keyring: several RS256 keys, one of them active for new tokens (rotation without downtime).

Tokens name their key by `kid`; a verifier accepts every key of the ring, so tokens signed before a
rotation verify until they expire, and stop verifying once their key is retired. Where the ring is
kept (a directory of files) is `storage.keyfiles`' business; this module only decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from imray.domain.errors import Conflict, NotFound
from imray.domain.tokens import PublicKey, SigningKey


@dataclass(frozen=True)
class Keyring:
    """The keys, oldest first, and the kid new tokens are signed with."""

    keys: tuple[SigningKey, ...]
    active_kid: str

    def __post_init__(self) -> None:
        if self.active_kid not in {k.kid for k in self.keys}:
            raise ValueError(f"the active key {self.active_kid!r} is not in the ring")

    @property
    def active(self) -> SigningKey:
        return next(k for k in self.keys if k.kid == self.active_kid)

    def get(self, kid: str) -> SigningKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def public(self) -> list[PublicKey]:
        """What the JWKS publishes: every key still in the ring (retired ones are gone from it)."""
        return [k.public() for k in self.keys]

    def added(self, key: SigningKey, activate: bool = True) -> Keyring:
        if self.get(key.kid) is not None:
            raise Conflict(f"key {key.kid} is already in the ring")
        return Keyring((*self.keys, key), key.kid if activate else self.active_kid)

    def activated(self, kid: str) -> Keyring:
        if self.get(kid) is None:
            raise NotFound(f"no key {kid!r} in the ring")
        return Keyring(self.keys, kid)

    def retired(self, kid: str) -> Keyring:
        """Without `kid`: tokens it signed stop verifying. The active key cannot go (rotate first)."""
        if self.get(kid) is None:
            raise NotFound(f"no key {kid!r} in the ring")
        if kid == self.active_kid:
            raise Conflict(f"key {kid} is the active one: rotate first, then retire it")
        return Keyring(tuple(k for k in self.keys if k.kid != kid), self.active_kid)


class KeySource(Protocol):
    """The ring as a process sees it now: `current()` is cheap (it may look for a newer ring at most
    every few seconds); `unknown_kid()` is called for a token whose kid is not in the ring, and may
    look again at once, rate-limited, so forged kids cannot make every request read the disk."""

    def current(self) -> Keyring: ...
    def unknown_kid(self, kid: str) -> Keyring: ...


class FixedKeys:
    """A ring that never changes (tests, tools)."""

    def __init__(self, ring: Keyring) -> None:
        self._ring = ring

    def current(self) -> Keyring:
        return self._ring

    def unknown_kid(self, kid: str) -> Keyring:
        return self._ring
