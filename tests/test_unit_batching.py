"""Batcher (no Ray): one call in flight per destination, and what waits meanwhile leaves together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from imray.actors.batching import Batcher


class Destinations:
    """A `send` whose calls the test answers one by one: each call waits for `answer(key)`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self._answers: dict[str, asyncio.Queue[Exception | None]] = {}

    def _queue(self, key: str) -> asyncio.Queue[Exception | None]:
        return self._answers.setdefault(key, asyncio.Queue())

    async def send(self, key: str, items: list[int]) -> Sequence[str]:
        self.calls.append((key, list(items)))
        failure = await self._queue(key).get()
        if failure is not None:
            raise failure
        return [f"{key}:{item}" for item in items]

    def answer(self, key: str, failure: Exception | None = None) -> None:
        """Let the oldest unanswered call to `key` return (or raise `failure`)."""
        self._queue(key).put_nowait(failure)


async def settle() -> None:
    """Let every ready callback and task run (the batcher flushes on the next turn of the loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def dest() -> Destinations:
    return Destinations()


async def test_items_submitted_in_one_turn_of_the_loop_go_out_in_one_call_in_order(dest: Destinations) -> None:
    batcher: Batcher[str, int, str] = Batcher(dest.send)
    futures = [batcher.submit("a", i) for i in range(4)]
    await settle()
    assert dest.calls == [("a", [0, 1, 2, 3])]
    dest.answer("a")
    assert await asyncio.gather(*futures) == ["a:0", "a:1", "a:2", "a:3"]


async def test_a_destination_has_one_call_in_flight_and_what_queued_meanwhile_leaves_together(
        dest: Destinations) -> None:
    batcher: Batcher[str, int, str] = Batcher(dest.send)
    first = batcher.submit("a", 1)
    await settle()
    queued = [batcher.submit("a", i) for i in (2, 3, 4)]
    await settle()
    assert dest.calls == [("a", [1])]  # the second call waits for the first to return
    dest.answer("a")
    assert await first == "a:1"
    await settle()
    assert dest.calls == [("a", [1]), ("a", [2, 3, 4])]  # in submission order, in one call
    dest.answer("a")
    assert await asyncio.gather(*queued) == ["a:2", "a:3", "a:4"]


async def test_destinations_are_independent(dest: Destinations) -> None:
    batcher: Batcher[str, int, str] = Batcher(dest.send)
    slow = batcher.submit("a", 1)
    await settle()
    fast = [batcher.submit("b", 2), batcher.submit("b", 3)]
    await settle()
    assert dest.calls == [("a", [1]), ("b", [2, 3])]  # b's call does not wait for a's
    dest.answer("b")
    assert await asyncio.gather(*fast) == ["b:2", "b:3"]
    assert not slow.done()
    dest.answer("a")
    assert await slow == "a:1"


async def test_each_item_gets_its_own_result() -> None:
    async def send(key: str, items: list[int]) -> list[int]:
        return [item * 10 for item in items]

    batcher: Batcher[str, int, int] = Batcher(send)
    futures = [batcher.submit("a", i) for i in (3, 1, 2)]
    assert await asyncio.gather(*futures) == [30, 10, 20]


async def test_a_failed_call_fails_every_item_of_its_batch_and_the_next_batch_still_goes_out(
        dest: Destinations) -> None:
    batcher: Batcher[str, int, str] = Batcher(dest.send)
    doomed = [batcher.submit("a", 1), batcher.submit("a", 2)]
    await settle()
    after = batcher.submit("a", 3)  # queued while the failing call is out
    await settle()
    dest.answer("a", ConnectionError("shard away"))
    for future in doomed:
        with pytest.raises(ConnectionError, match="shard away"):
            await future
    await settle()
    assert dest.calls[-1] == ("a", [3])
    dest.answer("a")
    assert await after == "a:3"


async def test_a_posted_item_has_no_future_and_its_failure_is_only_logged(
        dest: Destinations, caplog: pytest.LogCaptureFixture) -> None:
    batcher: Batcher[str, int, str] = Batcher(dest.send)
    assert batcher.post("a", 1) is None
    await settle()
    with caplog.at_level(logging.WARNING, logger="imray.batching"):
        dest.answer("a", ConnectionError("node away"))
        await settle()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "node away" in caplog.records[0].getMessage()
    batcher.post("a", 2)  # the destination is free again
    await settle()
    assert dest.calls == [("a", [1]), ("a", [2])]


async def test_with_linger_a_first_item_waits_for_company() -> None:
    calls: list[list[int]] = []

    async def send(key: str, items: list[int]) -> list[int]:
        calls.append(list(items))
        return items

    batcher: Batcher[str, int, int] = Batcher(send, linger_s=0.2)
    first = batcher.submit("a", 1)
    await settle()
    assert calls == []  # still waiting for company
    second = batcher.submit("a", 2)
    assert await asyncio.gather(first, second) == [1, 2]
    assert calls == [[1, 2]]


async def test_without_linger_a_first_item_goes_out_on_the_next_turn_of_the_loop(dest: Destinations) -> None:
    batcher: Batcher[str, int, str] = Batcher(dest.send)
    batcher.submit("a", 1)
    assert dest.calls == []  # not inside submit...
    await settle()
    assert dest.calls == [("a", [1])]  # ...but without waiting for a timer
    dest.answer("a")
    await settle()
