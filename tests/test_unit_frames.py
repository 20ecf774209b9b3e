"""Client frames of the socket protocol: strict parsing, meaningful errors, the error frame shape."""

from __future__ import annotations

import json

import orjson
import pytest

from imray.domain.errors import BadRequest, TooLarge
from imray.protocol.frames import (
    ERROR_CODES,
    Auth,
    Ping,
    Read,
    Send,
    Typing,
    client_id_of,
    dumps,
    error_frame,
    parse_frame,
)

MAX = 65536


def parse(frame: object, max_bytes: int = MAX):
    return parse_frame(json.dumps(frame), max_bytes)


def refused(raw: str | bytes, max_bytes: int = MAX, kind: type = BadRequest) -> str:
    with pytest.raises(kind) as info:
        parse_frame(raw, max_bytes)
    return info.value.message


# --- each frame type -------------------------------------------------------------------------

def test_auth() -> None:
    frame = parse({"type": "auth", "token": "abc.def.ghi"})
    assert isinstance(frame, Auth) and frame.token == "abc.def.ghi"


def test_send_text() -> None:
    frame = parse({"type": "send", "id": "c-1", "conv": "d:1:2", "kind": "text", "body": "hello"})
    assert isinstance(frame, Send)
    assert (frame.id, frame.conv, frame.kind, frame.body, frame.file_id) == ("c-1", "d:1:2", "text", "hello", None)


def test_send_defaults_and_file() -> None:
    frame = parse({"type": "send", "id": "x", "conv": "g:3", "body": "hi"})
    assert frame.kind == "text"
    frame = parse({"type": "send", "id": "y", "conv": "g:3", "kind": "image", "file_id": "f123"})
    assert (frame.kind, frame.file_id, frame.body) == ("image", "f123", "")
    assert parse({"type": "send", "id": "z", "conv": "g:3", "kind": "file", "file_id": "f9"}).kind == "file"


def test_send_id_of_exactly_64_chars() -> None:
    assert parse({"type": "send", "id": "i" * 64, "conv": "g:1", "body": "b"}).id == "i" * 64


def test_read_typing_ping() -> None:
    read = parse({"type": "read", "conv": "g:1", "seq": 12})
    assert isinstance(read, Read) and (read.conv, read.seq) == ("g:1", 12)
    assert parse({"type": "read", "conv": "g:1", "seq": 0}).seq == 0
    typing = parse({"type": "typing", "conv": "d:1:2"})
    assert isinstance(typing, Typing) and typing.conv == "d:1:2"
    assert isinstance(parse({"type": "ping"}), Ping)


def test_extra_fields_are_ignored() -> None:
    assert isinstance(parse({"type": "ping", "ts": 5, "nested": {"a": [1]}}), Ping)


def test_frames_are_immutable() -> None:
    frame = parse({"type": "ping"})
    with pytest.raises(Exception):  # noqa: B017  (pydantic's frozen-instance error)
        frame.type = "auth"


# --- malformed ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["", "nope", "{", '{"type":"ping"', "{'type': 'ping'}", '{"type":"ping"}x', "NaN"])
def test_malformed_json(raw: str) -> None:
    assert "not valid JSON" in refused(raw)


@pytest.mark.parametrize("raw", ["[1,2]", '"ping"', "5", "null", "true", '[{"type":"ping"}]'])
def test_non_object(raw: str) -> None:
    assert "JSON object" in refused(raw)


def test_missing_type() -> None:
    assert "no type" in refused('{"id":"x","conv":"g:1"}')
    assert "no type" in refused('{"type":null}')


@pytest.mark.parametrize("kind", ["hello", "PING", "Send", "", 5, ["send"], {"x": 1}, True])
def test_unknown_type(kind: object) -> None:
    message = refused(json.dumps({"type": kind}))
    assert "unknown frame type" in message
    assert repr(kind) in message


@pytest.mark.parametrize(("frame", "field"), [
    ({"type": "auth"}, "token"),
    ({"type": "send", "conv": "g:1", "body": "x"}, "id"),
    ({"type": "send", "id": "a", "body": "x"}, "conv"),
    ({"type": "read", "conv": "g:1"}, "seq"),
    ({"type": "read", "seq": 1}, "conv"),
    ({"type": "typing"}, "conv"),
])
def test_missing_fields(frame: dict, field: str) -> None:
    message = refused(json.dumps(frame))
    assert message.startswith(f"{field}:")
    assert "required" in message.lower()


@pytest.mark.parametrize(("frame", "field"), [
    ({"type": "read", "conv": "g:1", "seq": "3"}, "seq"),  # strict: no string to int coercion
    ({"type": "read", "conv": "g:1", "seq": 3.0}, "seq"),
    ({"type": "read", "conv": "g:1", "seq": 3.5}, "seq"),
    ({"type": "read", "conv": "g:1", "seq": True}, "seq"),
    ({"type": "read", "conv": "g:1", "seq": None}, "seq"),
    ({"type": "read", "conv": "g:1", "seq": -1}, "seq"),
    ({"type": "read", "conv": "g:1", "seq": 2**63}, "seq"),
    ({"type": "read", "conv": 1, "seq": 1}, "conv"),
    ({"type": "send", "id": "a", "conv": "g:1", "body": 5}, "body"),  # strict: no number to string
    ({"type": "send", "id": "a", "conv": "g:1", "body": None}, "body"),
    ({"type": "send", "id": "a", "conv": "g:1", "body": ["x"]}, "body"),
    ({"type": "send", "id": 7, "conv": "g:1", "body": "x"}, "id"),
    ({"type": "send", "id": "", "conv": "g:1", "body": "x"}, "id"),
    ({"type": "send", "id": "a", "conv": ["g:1"], "body": "x"}, "conv"),
    ({"type": "send", "id": "a", "conv": "g:1", "kind": "video", "body": "x"}, "kind"),
    ({"type": "send", "id": "a", "conv": "g:1", "kind": "image", "file_id": 5}, "file_id"),
    ({"type": "auth", "token": None}, "token"),
    ({"type": "auth", "token": 123}, "token"),
    ({"type": "typing", "conv": {"id": 1}}, "conv"),
])
def test_wrong_types_are_refused(frame: dict, field: str) -> None:
    message = refused(json.dumps(frame))
    assert message.startswith(f"{field}:")
    assert len(message) > len(field) + 5


def test_id_over_64_chars() -> None:
    message = refused(json.dumps({"type": "send", "id": "i" * 65, "conv": "g:1", "body": "b"}))
    assert message.startswith("id:") and "64" in message


def test_too_large() -> None:
    frame = json.dumps({"type": "send", "id": "a", "conv": "g:1", "body": "x" * 200})
    message = refused(frame, max_bytes=100, kind=TooLarge)
    assert "100" in message
    with pytest.raises(TooLarge) as info:
        parse_frame(frame, 100)
    assert info.value.code == "too_large"
    assert parse_frame(frame, len(frame)).body == "x" * 200  # exactly at the limit is fine


def test_too_large_counts_utf8_bytes() -> None:
    frame = json.dumps({"type": "send", "id": "a", "conv": "g:1", "body": "é" * 60}, ensure_ascii=False)
    assert len(frame) < 130 < len(frame.encode())
    refused(frame, max_bytes=130, kind=TooLarge)


def test_binary_frame() -> None:
    message = refused(b'{"type":"ping"}')
    assert "binary" in message


def test_large_binary_frame_is_too_large() -> None:
    refused(b"x" * 200, max_bytes=100, kind=TooLarge)


def test_errors_carry_socket_codes() -> None:
    with pytest.raises(BadRequest) as info:
        parse_frame("nope", MAX)
    assert info.value.code == "bad_request"
    assert info.value.code in ERROR_CODES


# --- client_id_of ----------------------------------------------------------------------------

def test_client_id_of() -> None:
    assert client_id_of('{"type":"send","id":"abc","body":5}') == "abc"
    assert client_id_of(b'{"type":"send","id":"abc"}') == "abc"
    assert client_id_of(json.dumps({"id": "i" * 64})) == "i" * 64
    assert client_id_of(json.dumps({"id": "i" * 65})) is None
    assert client_id_of('{"id": 5}') is None
    assert client_id_of('{"id": null}') is None
    assert client_id_of('{"type":"ping"}') is None
    assert client_id_of('[{"id":"a"}]') is None
    assert client_id_of("not json") is None
    assert client_id_of("") is None


# --- error frame -----------------------------------------------------------------------------

def test_error_codes_match_the_contract() -> None:
    assert set(ERROR_CODES) == {"bad_request", "forbidden", "not_found", "too_large", "rate_limited", "internal"}


def test_error_frame_shape() -> None:
    frame = json.loads(error_frame("bad_request", "frame is not valid JSON"))
    assert frame == {"type": "error", "code": "bad_request", "message": "frame is not valid JSON"}
    frame = json.loads(error_frame("forbidden", "you are not a member of g:1", "c-9"))
    assert frame == {"type": "error", "code": "forbidden", "message": "you are not a member of g:1", "id": "c-9"}


def test_error_frame_extra_fields() -> None:
    frame = json.loads(error_frame("wrong_node", "pinned elsewhere", socket_url="ws://127.0.0.1:9102/ws"))
    assert frame == {"type": "error", "code": "wrong_node", "message": "pinned elsewhere",
                     "socket_url": "ws://127.0.0.1:9102/ws"}


def test_error_frame_of_a_refused_frame() -> None:
    raw = json.dumps({"type": "send", "id": "c-1", "conv": "g:1", "body": 5})
    with pytest.raises(BadRequest) as info:
        parse_frame(raw, MAX)
    frame = orjson.loads(error_frame(info.value.code, info.value.message, client_id_of(raw)))
    assert frame["type"] == "error" and frame["code"] == "bad_request" and frame["id"] == "c-1"
    assert frame["message"].startswith("body:")


def test_dumps() -> None:
    assert json.loads(dumps({"type": "pong"})) == {"type": "pong"}
    assert dumps({"b": "é"}) == '{"b":"é"}'
