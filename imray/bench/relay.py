"""The baseline: a bare WebSocket relay in one process (no auth check, no storage, no Ray).

It speaks the same frames as imray, so the same load generators drive it: the auth frame's
token is taken as the user id, a send is acked at once with a per-conversation seq and relayed
to every other session of the conversation's two users (conversation ids d:<a>:<b>), or, for a
group (g:<id>), to every other session connected: the fan-out baseline connects only the group.

It writes as imray's socket nodes do, so that the ratio measures what auth, storage and Ray cost
and not a cheaper way to write: a frame is encoded once however many peers get it, and what a
connection is sent in one turn of the event loop leaves in one write. A sender waits while a
peer's transport is full (the backpressure `await ws.send` gave).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from imray.bench.loadgen import run


def _frame(text: bytes) -> bytes:
    return Frame(Opcode.TEXT, text).serialize(mask=False, extensions=[])


class Relay:
    def __init__(self) -> None:
        self.sessions: dict[int, set[ServerConnection]] = {}
        self.seqs: dict[str, int] = {}
        self.ids = itertools.count(1)
        self.pending: dict[ServerConnection, list[bytes]] = {}

    def push(self, ws: ServerConnection, frame: bytes) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.setdefault(ws, []).append(frame)

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for ws, frames in pending.items():
            if ws.protocol.state is State.OPEN:
                ws.transport.write(b"".join(frames))

    async def handle(self, ws: ServerConnection) -> None:
        first = orjson.loads(await ws.recv())
        user = int(first.get("token", 0))
        self.sessions.setdefault(user, set()).add(ws)
        await ws.send(orjson.dumps({"type": "auth_ok", "user_id": user, "node": "relay", "session": "r"}).decode())
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("type") != "send":
                    if frame.get("type") == "ping":
                        self.push(ws, _frame(b'{"type":"pong"}'))
                    continue
                conv = frame["conv"]
                seq = self.seqs[conv] = self.seqs.get(conv, 0) + 1
                ts = int(time.time() * 1000)
                msg_id = f"r{next(self.ids)}"
                self.push(ws, _frame(orjson.dumps({"type": "ack", "id": frame["id"], "msg_id": msg_id,
                                                   "conv": conv, "seq": seq, "ts": ts})))
                out = _frame(orjson.dumps({"type": "msg", "conv": conv, "seq": seq, "msg_id": msg_id, "from": user,
                                           "kind": "text", "body": frame["body"], "ts": ts}))
                if conv.startswith("g:"):
                    peers = [p for group in self.sessions.values() for p in group]
                else:
                    _, a, b = conv.split(":")
                    peers = [p for member in (int(a), int(b)) for p in self.sessions.get(member, ())]
                for peer in peers:
                    if peer is not ws:
                        self.push(peer, out)
                for peer in peers:
                    if peer.paused:
                        await peer.drain()
        finally:
            self.sessions[user].discard(ws)


async def main(host: str, port: int) -> None:
    relay = Relay()
    async with serve(relay.handle, host, port, compression=None, max_size=2**20):
        print(f"relay on ws://{host}:{port}/ws", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    args = parser.parse_args()
    run(main(args.host, args.port))
