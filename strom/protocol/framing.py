"""Reading size-prefixed Kafka frames (int32 size, then that many bytes) from a socket
with as few copies as Python allows.

`FrameReader` is an asyncio BufferedProtocol: the transport reads into buffers it hands
out. Small frames (up to SCRATCH_BYTES) arrive in a scratch buffer, several per read, and
are copied out as bytes; a larger frame (a Produce request, a follower's Fetch response)
gets a bytearray of its own size, and the kernel copies the rest of it straight there, so
its record bytes are not copied again before they are checked and written to a segment.
Subclasses say what a frame is for (`frame_received`) and what a size outside
4..max_frame_bytes means (`bad_frame_size`). The protocol also keeps the transport's write
flow control: `wait_writable` waits while the transport's write buffer is above its limit;
`wake_writers` ends such waits (with an error when the connection is gone).
"""

from __future__ import annotations

import asyncio
import struct

_INT32 = struct.Struct(">i")
SCRATCH_BYTES = 64 * 1024


class FrameReader(asyncio.BufferedProtocol):
    def __init__(self, max_frame_bytes: int, min_frame_bytes: int = 0) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.min_frame_bytes = min_frame_bytes
        self.transport: asyncio.Transport | None = None
        self._scratch = bytearray(SCRATCH_BYTES)
        self._scratch_view = memoryview(self._scratch)
        self._have = 0  # bytes held in the scratch buffer
        self._frame: bytearray | None = None  # a large frame being read in place
        self._frame_view: memoryview | None = None
        self._filled = 0
        self.stopped = False  # after a bad size: the rest of the stream is ignored
        self._writing_paused = False
        self._write_waiters: list[asyncio.Future] = []

    # --- for subclasses -----------------------------------------------------------------
    def frame_received(self, frame: bytes | bytearray) -> None:
        """One whole frame, without its size prefix."""
        raise NotImplementedError

    def bad_frame_size(self, size: int) -> None:
        """A size prefix outside min_frame_bytes..max_frame_bytes: the stream is broken
        (or hostile); nothing after it is read."""
        raise NotImplementedError

    @property
    def partial_bytes(self) -> int:
        """Bytes of an unfinished frame (its size prefix included while in scratch)."""
        return self._filled if self._frame is not None else self._have

    def feed(self, data: bytes | bytearray) -> None:
        """Bytes read by someone else before this protocol took over the transport."""
        view = memoryview(data)
        while len(view) and not self.stopped:
            buf = self.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    # --- write flow control ----------------------------------------------------------------
    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.wake_writers(None)

    def wake_writers(self, error: Exception | None) -> None:
        """End every `wait_writable`, raising `error` in them if given."""
        waiters, self._write_waiters = self._write_waiters, []
        for w in waiters:
            if not w.done():
                if error is None:
                    w.set_result(None)
                else:
                    w.set_exception(error)
                    w.exception()  # retrieved: a cancelled writer must not warn

    async def wait_writable(self) -> None:
        """Return once the transport takes more writes (at once unless it is paused)."""
        if not self._writing_paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._write_waiters.append(waiter)
        await waiter

    # --- asyncio.BufferedProtocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._frame_view is not None:
            return self._frame_view[self._filled:]
        return self._scratch_view[self._have:]  # never empty: see _cut_scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self.stopped:
            return
        if self._frame is not None:
            self._filled += nbytes
            if self._filled == len(self._frame):
                frame = self._frame
                self._frame = self._frame_view = None
                self.frame_received(frame)
            return
        self._have += nbytes
        self._cut_scratch()

    def _cut_scratch(self) -> None:
        buf, view, have, pos = self._scratch, self._scratch_view, self._have, 0
        while have - pos >= 4 and not self.stopped:
            (size,) = _INT32.unpack_from(buf, pos)
            if not self.min_frame_bytes <= size <= self.max_frame_bytes:
                self.stopped = True
                self._have = 0
                self.bad_frame_size(size)
                return
            start = pos + 4
            if have - start >= size:
                pos = start + size
                self.frame_received(bytes(view[start:pos]))
                continue
            if size > len(buf) - 4:
                # a large frame: the rest of it is read in place
                frame = bytearray(size)
                frame[:have - start] = view[start:have]
                self._frame, self._frame_view = frame, memoryview(frame)
                self._filled = have - start
                pos = have
            break
        rest = have - pos
        if pos and rest:
            buf[:rest] = buf[pos:have]  # same length: views handed out stay valid
        self._have = rest
