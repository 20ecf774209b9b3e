"""Settings that change without a restart: Nacos's `imray.yaml` overlays them as it changes.

Only a few settings are live (the ones an operator turns during an incident); everything else in
`imray.yaml` applies at `imray up`. A bad value is logged and ignored: the last good one stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import yaml

from imray.settings import Settings, parse_settings

log = logging.getLogger("imray.config")
LIVE_KEYS = ("rate_limit_per_minute", "max_text_length", "direct_messages")
DIRECT_MESSAGE_POLICIES = ("open", "existing", "off")
POLL_S = 10.0


def live_values(content: str, base: Settings) -> dict[str, object]:
    """The live settings `content` (imray.yaml) asks for; keys it leaves out fall back to `base`."""
    loaded = parse_settings(content, "nacos imray.yaml")
    values = {key: loaded.get(key, getattr(base, key)) for key in LIVE_KEYS}
    if values["direct_messages"] not in DIRECT_MESSAGE_POLICIES:
        raise ValueError(f"direct_messages must be one of {DIRECT_MESSAGE_POLICIES}")
    if values["max_text_length"] < 1 or values["rate_limit_per_minute"] < 1:
        raise ValueError("max_text_length and rate_limit_per_minute must be positive")
    return values


class LiveSettings:
    def __init__(self, base: Settings) -> None:
        self._base = base
        self.values: dict[str, object] = {key: getattr(base, key) for key in LIVE_KEYS}
        self._listeners: list[Callable[[dict[str, object]], None]] = []
        self._config = None

    @property
    def max_text_length(self) -> int:
        return int(self.values["max_text_length"])

    @property
    def rate_limit_per_minute(self) -> int:
        return int(self.values["rate_limit_per_minute"])

    @property
    def direct_messages(self) -> str:
        return str(self.values["direct_messages"])

    def on_change(self, listener: Callable[[dict[str, object]], None]) -> None:
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

    async def start(self, name: str) -> None:
        """Follow Nacos's imray.yaml if Nacos is configured; otherwise the settings stay as they are."""
        if not self._base.nacos_server:
            return
        from imray.adapters.nacos import NacosConfig

        self._config = NacosConfig(self._base, name)
        self.apply(await self._config.get())
        await self._config.watch(self.apply)
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        """Listeners miss some changes (a deleted data id is one): read it again now and then."""
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self.apply(await self._config.get())
            except Exception as exc:
                log.warning("reading imray.yaml from Nacos failed: %r", exc)
