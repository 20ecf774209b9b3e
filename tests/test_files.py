"""Avatars and chat files: stored as sent, typed by their bytes, readable only by who may."""

from __future__ import annotations

import struct
import zlib

from conftest import STACK
from support import Api, Socket, bearer, direct, one_per_node


def png(width: int = 2, height: int = 2, seed: int = 0) -> bytes:
    """A real (tiny) PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes((seed + x + y) % 256 for x in range(width * 3)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


async def fetch(api: Api, url: str, token: str):
    """GET a file as a client would: follow the redirect to the object store if there is one."""
    r = await api.http.get(url, headers=bearer(token))
    if STACK == "real":  # the real stack hands out object-store URLs; the embedded one serves bytes
        assert r.status_code == 307, r.text
    if r.status_code == 307:
        assert "X-Amz-Signature" in r.headers["location"]  # a short-lived presigned URL
        r = await api.http.get(r.headers["location"])  # no bearer: the URL itself is the key
    return r


async def test_chat_file_round_trip_and_access(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    outsider = await api.user()
    image = png(seed=7)
    r = await api.http.post("/api/files", files={"file": ("pic.png", image, "application/octet-stream")},
                            headers=bearer(a.access_token))
    assert r.status_code == 201, r.text
    up = r.json()
    assert set(up) == {"file_id", "url", "content_type", "size"}
    assert up["content_type"] == "image/png" and up["size"] == len(image)  # sniffed, not taken on trust
    got = await fetch(api, f"/api/files/{up['file_id']}", a.access_token)
    assert got.status_code == 200 and got.content == image

    # Not shared yet: B and the outsider may not read it.
    assert (await api.http.get(f"/api/files/{up['file_id']}", headers=bearer(b.access_token))).status_code == 403
    sa = await Socket.open(a.socket_url, a.access_token)
    sb = await Socket.open(b.socket_url, b.access_token)
    conv = direct(a.user_id, b.user_id)
    await sa.send_json({"type": "send", "id": "img-1", "conv": conv, "kind": "image", "file_id": up["file_id"],
                        "body": "look"})
    ack = await sa.wait(lambda fs: any(f.get("id") == "img-1" for f in fs))
    assert next(f for f in ack if f.get("id") == "img-1")["type"] == "ack"
    msg = next(f for f in await sb.wait(lambda fs: any(f["type"] == "msg" for f in fs)) if f["type"] == "msg")
    assert msg["kind"] == "image" and msg["file_id"] == up["file_id"] and msg["body"] == "look"
    got = await fetch(api, f"/api/files/{up['file_id']}", b.access_token)  # shared with B now
    assert got.status_code == 200 and got.content == image
    r = await api.http.get(f"/api/files/{up['file_id']}", headers=bearer(outsider.access_token))
    assert r.status_code == 403
    assert (await api.http.get("/api/files/nope", headers=bearer(b.access_token))).status_code == 404

    # Someone else's upload cannot be sent, and an image message needs an image.
    err = await sb.send_text(conv, "x")  # B's socket still fine
    assert err["type"] == "ack"
    await sb.send_json({"type": "send", "id": "steal", "conv": conv, "kind": "file", "file_id": up["file_id"]})
    frames = await sb.wait(lambda fs: any(f.get("id") == "steal" for f in fs))
    assert next(f for f in frames if f.get("id") == "steal")["code"] == "not_found"
    text = (await api.http.post("/api/files", files={"file": ("a.txt", b"plain words\n", "text/plain")},
                                headers=bearer(a.access_token))).json()
    assert text["content_type"] == "text/plain"
    await sa.send_json({"type": "send", "id": "img-2", "conv": conv, "kind": "image", "file_id": text["file_id"]})
    frames = await sa.wait(lambda fs: any(f.get("id") == "img-2" for f in fs))
    assert next(f for f in frames if f.get("id") == "img-2")["code"] == "bad_request"
    await sa.close()
    await sb.close()
    await api.close()


async def test_upload_limits_and_types(stack):
    api = Api(stack.base_url)
    a = await api.user()
    auth = bearer(a.access_token)
    big = png() + b"\x00" * (stack.settings.max_upload_bytes + 1)
    r = await api.http.post("/api/files", files={"file": ("big.png", big, "image/png")}, headers=auth)
    assert r.status_code == 413
    elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 200  # an executable, whatever it claims to be
    r = await api.http.post("/api/files", files={"file": ("cat.png", elf, "image/png")}, headers=auth)
    assert r.status_code == 415 and r.json()["detail"].startswith("application/x-executable is not accepted")
    blob = bytes(range(256)) * 4  # no known signature, not text
    r = await api.http.post("/api/files", files={"file": ("a.txt", blob, "text/plain")}, headers=auth)
    assert r.status_code == 415 and r.json()["detail"].startswith("application/octet-stream")
    r = await api.http.post("/api/files", files={"other": ("a.png", png(), "image/png")}, headers=auth)
    assert r.status_code == 422
    r = await api.http.post("/api/files", content=png(), headers={**auth, "Content-Type": "image/png"})
    assert r.status_code == 422
    r = await api.http.post("/api/files", files={"file": ("empty", b"", "text/plain")}, headers=auth)
    assert r.status_code == 422
    r = await api.http.post("/api/files", files={"file": ("a.png", png(), "image/png")})
    assert r.status_code == 401
    await api.close()


async def test_avatar_raw_and_multipart(stack):
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    image = png(seed=3)
    r = await api.http.put("/api/users/me/avatar", content=image,
                           headers={**bearer(a.access_token), "Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    user = r.json()
    assert user["id"] == a.user_id and user["avatar_url"]
    assert (await api.get("/api/users/me", a.access_token)).json()["avatar_url"] == user["avatar_url"]
    got = await fetch(api, user["avatar_url"], b.access_token)  # any signed-in user sees avatars
    assert got.status_code == 200 and got.content == image
    second = png(seed=9)
    r = await api.http.put("/api/users/me/avatar", files={"file": ("me.png", second, "image/png")},
                           headers=bearer(a.access_token))
    assert r.status_code == 200 and r.json()["avatar_url"] != user["avatar_url"]
    assert (await fetch(api, r.json()["avatar_url"], b.access_token)).content == second
    r = await api.http.put("/api/users/me/avatar", content=b"%PDF-1.4\n" + b"x" * 100,
                           headers={**bearer(a.access_token), "Content-Type": "image/png"})
    assert r.status_code == 415
    r = await api.http.put("/api/users/me/avatar", content=png() + b"\x00" * stack.settings.max_avatar_bytes,
                           headers={**bearer(a.access_token), "Content-Type": "image/png"})
    assert r.status_code == 413
    assert (await api.http.get(f"/api/users/{b.user_id}/avatar", headers=bearer(a.access_token))
            ).status_code == 404
    await api.close()
