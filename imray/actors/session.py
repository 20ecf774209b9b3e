"""One client's WebSocket session as the socket node writes to it: coalesced writes, bounded backlog."""

from __future__ import annotations

import asyncio
import secrets
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from imray.domain.frame_rates import FrameBudget
from imray.domain.tokens import Principal

CLOSE_TOO_SLOW = 4008
CUT_GRACE_S = 2.0
_ENDING: set[asyncio.Task[None]] = set()  # sessions being closed by `end`, referenced until closed


BATCH_BYTES = 64 * 1024  # one batched message's payload at most (a client's limit is often 1 MiB)


def batch_frames(frames: list[bytes]) -> list[bytes]:
    """Frames as few WebSocket messages, their JSON texts one per line (a session that announced
    `batch`, issue 21): the client reads ~N frames in one message instead of N. Each frame is
    imray's own (`encode_frame`: unmasked, no extension), so its payload follows a 2, 4 or 10
    byte header; a frame over BATCH_BYTES goes alone, as it came."""
    out: list[bytes] = []
    lines: list[bytes] = []
    size = 0
    for frame in frames:
        length = frame[1] & 0x7F
        payload = frame[2 if length < 126 else 4 if length == 126 else 10:]
        if lines and size + len(payload) + 1 > BATCH_BYTES:
            out.append(_joined(lines))
            lines, size = [], 0
        lines.append(payload)
        size += len(payload) + 1
    if lines:
        out.append(_joined(lines))
    return out


def _joined(lines: list[bytes]) -> bytes:
    return Frame(Opcode.TEXT, b"\n".join(lines)).serialize(mask=False, extensions=[])


def encode_frame(text: str | bytes) -> bytes:
    """A server-to-client WebSocket text frame (from JSON text, or its UTF-8 bytes). Server frames
    are not masked and imray negotiates no extensions, so one encoding serves every session a
    message goes to."""
    return Frame(Opcode.TEXT, text.encode() if isinstance(text, str) else text).serialize(mask=False, extensions=[])


class Session:
    """One authenticated connection. Frames go straight into its transport while the client keeps
    up (no task, no queue per session: less memory and a cheaper fan-out than `ws.send`); behind
    that, a backlog of at most `backlog_limit` frames drains as the transport does, and a client
    further behind is cut loose (close 4008; aborted if its close handshake does not finish within
    `cut_grace_s`). Nothing is written to a session once it is cut.

    Frames pushed to a session during one turn of the event loop (a deliver batch, the acks of a
    shard's answer) leave in one write: one syscall, not one per frame, and the client reads them
    in one wakeup.

    Sessions are the node's per-connection memory (measured per session), hence `__slots__` and no
    task of their own: a task exists only while a backlog drains or a cut is under way, and `task`
    keeps it referenced until it is done.
    """

    __slots__ = ("backlog", "batch", "budget", "caught", "closing", "cut", "expiry", "grace", "held", "id",
                 "in_flight", "limit", "pending", "principal", "resume_wait", "task", "user", "ws")

    def __init__(self, user: int, ws: ServerConnection, backlog_limit: int, cut_grace_s: float = CUT_GRACE_S,
                 principal: Principal | None = None, budget: FrameBudget | None = None, batch: bool = False) -> None:
        self.id = secrets.token_hex(8)
        self.batch = batch  # several frames per WebSocket message, one per line (the client asked)
        self.user = user
        self.principal = principal  # the token it runs on: its login (family), node and expiry
        self.budget = budget  # its frame rates (the socket server's to check)
        self.expiry: asyncio.TimerHandle | None = None  # closes the session when its token expires
        self.ws = ws
        self.limit = backlog_limit
        self.grace = cut_grace_s
        self.in_flight = 0  # sends awaiting their outcome (the socket server caps them)
        self.backlog: deque[bytes] | None = None
        self.pending: list[bytes] | None = None
        # While a resume's catch-up is read (issue 21): live frames, with the conv and seq of each message.
        self.held: list[tuple[bytes, str, int]] | None = None
        self.resume_wait: asyncio.TimerHandle | None = None  # until the resume frame is due
        # After a catch-up: conv -> the last seq it sent. A delivery of a message it had (committed
        # before the read, delivered after the release) is not sent twice.
        self.caught: dict[str, int] | None = None
        self.cut = False
        self.closing = False  # `end` was called: its frames are no longer acted on
        self.task: asyncio.Task[None] | None = None

    def push(self, text: str) -> None:
        self.push_frame(encode_frame(text))

    def push_frame(self, frame: bytes, conv: str = "", seq: int = 0) -> None:
        """`frame` out in this loop turn's write; `conv` and `seq` name a message's (for `release`)."""
        if self.held is not None:
            self._hold(frame, conv, seq)
            return
        if self.caught is not None and seq and seq <= self.caught.get(conv, 0):
            return
        if self.pending is None:
            self.pending = [frame]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self.pending.append(frame)

    def hold(self) -> None:
        """Keep live frames back until `release` (a resume's catch-up goes first)."""
        self.held = []

    def release(self, first: list[bytes], caught: dict[str, int]) -> None:
        """Send `first` (the catch-up), then the live frames held meanwhile but for messages the
        catch-up already had (`caught`: conv -> the last seq it sent), in the order they came."""
        held, self.held = self.held, None
        for frame in first:
            self.push_frame(frame)
        self.caught = caught or None
        for frame, conv, seq in held or ():
            self.push_frame(frame, conv, seq)

    def _hold(self, frame: bytes, conv: str, seq: int) -> None:
        assert self.held is not None
        if len(self.held) >= self.limit:  # as a backlog this long would: the client catches up from history
            self.held = None
            self.cut = True
            self.task = asyncio.get_running_loop().create_task(self._cut(self.task))
            return
        self.held.append((frame, conv, seq))

    def _flush(self) -> None:
        frames, self.pending = self.pending, None
        if frames is None or self.cut or self.ws.protocol.state is not State.OPEN:
            return
        if self.batch and len(frames) > 1:
            frames = batch_frames(frames)
        if self.backlog is None:
            if not self.ws.paused:  # the transport is below its high-water mark
                self.ws.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
                return
            self.backlog = deque()
            self.task = asyncio.get_running_loop().create_task(self._drain())
        if len(self.backlog) + len(frames) > self.limit:  # the client does not read: cut it loose (history)
            self.cut = True
            self.backlog.clear()
            self.task = asyncio.get_running_loop().create_task(self._cut(self.task))
            return
        self.backlog.extend(frames)

    def end(self, last_words: str, code: int, reason: str) -> None:
        """An error frame, then a close with `code` (the connection is dropped if the close
        handshake does not finish within the grace). The frame leaves first: this loop turn's
        frames are flushed before the closing task starts."""
        if self.closing or self.cut or self.ws.protocol.state is not State.OPEN:
            return
        self.closing = True
        self.held = None  # a catch-up under way is moot: the last words go now
        self.push(last_words)
        task = asyncio.get_running_loop().create_task(self._close(code, reason))
        _ENDING.add(task)
        task.add_done_callback(_ENDING.discard)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code, reason), self.grace)
        except TimeoutError:
            self.ws.transport.abort()

    async def _cut(self, draining: asyncio.Task[None] | None) -> None:
        # A close handshake waits for the socket to drain, which a client that does not read never
        # lets happen: offer it briefly, then drop the connection. `draining` (the drain this cut
        # interrupts) is held here until the connection is closed, which ends it.
        try:
            await asyncio.wait_for(self.ws.close(CLOSE_TOO_SLOW, "client too slow"), self.grace)
        except TimeoutError:
            self.ws.transport.abort()

    async def _drain(self) -> None:
        try:
            while self.backlog and not self.cut:
                await self.ws.drain()  # until the transport is below its low-water mark
                if self.ws.protocol.state is not State.OPEN:
                    break
                while self.backlog and not self.ws.paused:
                    self.ws.transport.write(self.backlog.popleft())
        except ConnectionClosed:
            pass
        finally:
            self.backlog = None
            if not self.cut:
                self.task = None  # done: a session that keeps up holds no task
