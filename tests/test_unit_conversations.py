"""Conversation ids and shard routing: pure functions, no cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import pytest

from imray.domain.conversations import ConvId, direct_conv, parse_conv, shard_of
from imray.domain.errors import BadRequest


@pytest.mark.parametrize(("text", "expected"), [
    ("d:1:2", ConvId("d", 1, 2)),
    ("d:7:1000", ConvId("d", 7, 1000)),
    ("g:1", ConvId("g", 1)),
    ("g:42", ConvId("g", 42)),
    ("g:" + "9" * 18, ConvId("g", int("9" * 18))),
    ("d:" + "1" * 18 + ":" + "2" * 18, ConvId("d", int("1" * 18), int("2" * 18))),
])
def test_parse_conv_accepts_canonical_ids(text: str, expected: ConvId) -> None:
    conv = parse_conv(text)
    assert conv == expected
    assert str(conv) == text  # canonical: parsing and printing round-trip exactly


def test_parsed_conv_properties() -> None:
    g = parse_conv("g:9")
    assert g.is_group and g.group_id == 9
    d = parse_conv("d:3:8")
    assert not d.is_group and (d.a, d.b) == (3, 8)


@pytest.mark.parametrize("text", [
    "d:2:1",  # not ordered
    "d:1:1",  # same user twice
    "d:0:1",  # user ids start at 1
    "d:01:2", "d:1:02", "g:07",  # leading zeros: not canonical
    "g:0", "g:-1", "d:-1:2", "d:+1:2", "g:+1",
    "", "d", "g", "g:", "d:1", "d:1:", "d::2", "d:1:2:3", "g:1:2", "x:1:2", "D:1:2", "G:1",
    " g:1", "g:1 ", "g:1\n", "d:1:2\x00", "g:1.0", "g:1e3", "g:0x1",
    "g:\u0661",  # ARABIC-INDIC DIGIT ONE: only ASCII digits count
    "g:" + "1" * 19,  # ids beyond 18 digits
    "d:1:" + "2" * 19,
    "g:1" + " " * 40,  # overlong
    "d:1:2" + "0" * 40,
])
def test_parse_conv_refuses_non_canonical(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_conv(text)
    assert info.value.code == "bad_request"
    assert info.value.status == 400
    assert info.value.message  # a message the client can act on
    assert "d:" in info.value.message or "conv" in info.value.message


@pytest.mark.parametrize("value", [None, 5, 1.5, b"d:1:2", ["d:1:2"], {"conv": "g:1"}, ConvId("g", 1)])
def test_parse_conv_refuses_non_strings(value: object) -> None:
    with pytest.raises(BadRequest):
        parse_conv(value)


def test_direct_conv_orders_the_pair() -> None:
    assert direct_conv(2, 1) == ConvId("d", 1, 2)
    assert direct_conv(1, 2) == direct_conv(2, 1)
    assert str(direct_conv(10, 9)) == "d:9:10"
    for x, y in [(1, 2), (5, 3), (100, 99), (7, 123456789)]:
        assert parse_conv(str(direct_conv(x, y))) == direct_conv(x, y)


def test_direct_conv_refuses_one_user() -> None:
    with pytest.raises(BadRequest):
        direct_conv(4, 4)


def test_shard_of_in_range_and_deterministic() -> None:
    convs = [f"d:{i}:{i + 1 + i % 7}" for i in range(1, 400)] + [f"g:{i}" for i in range(1, 400)]
    for shards in (1, 2, 3, 4, 7, 16):
        got = [shard_of(c, shards) for c in convs]
        assert all(0 <= s < shards for s in got)
        assert got == [shard_of(c, shards) for c in convs]
        assert set(got) == set(range(shards))  # every shard gets some conversations
    assert all(shard_of(c, 1) == 0 for c in convs)


def test_shard_of_is_the_same_in_every_process() -> None:
    """Independent of PYTHONHASHSEED: every process must route a conversation to the same shard."""
    convs = ["d:1:2", "d:3:40", "g:1", "g:77", "g:123456"]
    code = ("import sys; from imray.domain.conversations import shard_of; "
            "print(','.join(str(shard_of(c, 5)) for c in sys.argv[1:]))")
    outputs = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code, *convs], env=env, capture_output=True, text=True,
                             check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        outputs.add(out.stdout.strip())
    assert outputs == {",".join(str(shard_of(c, 5)) for c in convs)}
    # and pinned to CRC-32, so a rolling upgrade keeps every conversation on its shard
    assert [shard_of(c, 5) for c in convs] == [zlib.crc32(c.encode()) % 5 for c in convs]
