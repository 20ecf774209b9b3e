"""The bench's load generators run on the event loop Ray gives imray's actors."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from imray.bench.loadgen import run


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_load_generators_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_USE_UVLOOP", raising=False)
    assert run(_loop_type()) is uvloop.Loop


@pytest.mark.parametrize("value", ["0", "false", "False"])
def test_ray_use_uvloop_off_gives_the_stock_loop(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RAY_USE_UVLOOP", value)
    loop_type = run(_loop_type())
    assert loop_type is not uvloop.Loop
    assert issubclass(loop_type, asyncio.BaseEventLoop)
