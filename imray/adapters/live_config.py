"""Settings that change without a restart: Nacos's `imray.yaml` overlays them as it changes.

Only a few settings are live (the ones an operator turns during an incident); everything else in
`imray.yaml` applies at `imray up`. A bad value is logged and ignored: the last good one stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypedDict

import yaml

from imray.settings import Settings, parse_settings

log = logging.getLogger("imray.config")
DIRECT_MESSAGE_POLICIES = ("open", "existing", "contacts", "off")
POLL_S = 10.0


class LiveValues(TypedDict):
    """The settings that are live, checked."""

    rate_limit_per_minute: int
    max_text_length: int
    direct_messages: str


def live_values(content: str, base: Settings) -> LiveValues:
    """The live settings `content` (imray.yaml) asks for; keys it leaves out fall back to `base`."""
    loaded = parse_settings(content, "nacos imray.yaml")
    values: LiveValues = {
        "rate_limit_per_minute": loaded.get("rate_limit_per_minute", base.rate_limit_per_minute),
        "max_text_length": loaded.get("max_text_length", base.max_text_length),
        "direct_messages": loaded.get("direct_messages", base.direct_messages)}
    if values["direct_messages"] not in DIRECT_MESSAGE_POLICIES:
        raise ValueError(f"direct_messages must be one of {DIRECT_MESSAGE_POLICIES}")
    if values["max_text_length"] < 1 or values["rate_limit_per_minute"] < 1:
        raise ValueError("max_text_length and rate_limit_per_minute must be positive")
    return values


class ConfigSource(Protocol):
    """Where `imray.yaml` lives (Nacos config): read it, and be told when it changes."""

    async def get(self) -> str: ...
    async def watch(self, on_change: Callable[[str], Awaitable[None] | None]) -> None: ...


class LiveSettings:
    """The live settings, following `source` from `start()` to `stop()`; with no source they stay
    as the base settings say."""

    def __init__(self, base: Settings, source: ConfigSource | None = None) -> None:
        self._base = base
        self.values: LiveValues = {"rate_limit_per_minute": base.rate_limit_per_minute,
                                   "max_text_length": base.max_text_length, "direct_messages": base.direct_messages}
        self._listeners: list[Callable[[LiveValues], None]] = []
        self._source = source
        self._poller: asyncio.Task[None] | None = None

    @property
    def max_text_length(self) -> int:
        return self.values["max_text_length"]

    @property
    def rate_limit_per_minute(self) -> int:
        return self.values["rate_limit_per_minute"]

    @property
    def direct_messages(self) -> str:
        return self.values["direct_messages"]

    def on_change(self, listener: Callable[[LiveValues], None]) -> None:
        self._listeners.append(listener)
        listener(self.values)

    def apply(self, content: str) -> None:
        try:
            values = live_values(content, self._base)
        except (ValueError, yaml.YAMLError) as exc:
            log.warning("ignoring imray.yaml from Nacos: %s", exc)
            return
        if values != self.values:
            log.info("live settings now %s", values)
            self.values = values
            for listener in self._listeners:
                listener(values)

    async def start(self) -> None:
        """Read the source once and follow it; without a source, nothing to do."""
        if self._source is None:
            return
        self.apply(await self._source.get())
        await self._source.watch(self.apply)
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(self._source))

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None

    async def _poll(self, source: ConfigSource) -> None:
        """Listeners miss some changes (a deleted data id is one): read it again now and then."""
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self.apply(await source.get())
            except Exception as exc:
                log.warning("reading imray.yaml from Nacos failed: %r", exc)
