"""Reading size-prefixed Kafka frames (int32 size, then that many bytes) from a socket
with as few copies as Python allows.

`FrameReader` is an asyncio BufferedProtocol: the transport reads into buffers it hands
out. Small frames (up to SCRATCH_BYTES) arrive in a scratch buffer, several per read, and
are copied out as bytes; a larger frame (a Produce request, a follower's Fetch response)
gets a bytearray of its own size, and the kernel copies the rest of it straight there, so
its record bytes are not copied again before they are checked and written to a segment.
Subclasses say what a frame is for (`frame_received`) and what a size outside
4..max_frame_bytes means (`bad_frame_size`).

With a `MemoryPool` (the broker's queued.max.request.bytes), every frame's bytes are taken
from the pool once its size is known and given back by `release` when its owner is done
with them. A frame that needs a buffer of its own waits for the pool: while the pool is
exhausted, its size prefix and first bytes stay in the scratch buffer and the socket is no
longer read (as Kafka's MemoryPool mutes a channel); it is read again, in the order the
connections started waiting, once memory is given back. Frames that fit the scratch buffer
are taken from the pool too (they are already read) but never wait: a connection's scratch
buffer and its read-ahead bound them, and small requests (heartbeats, metadata) keep being
served while large ones wait. The protocol also keeps the transport's write
flow control: `wait_writable` waits while the transport's write buffer is above its limit;
`wake_writers` ends such waits (with an error when the connection is gone).
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Callable

_INT32 = struct.Struct(">i")
SCRATCH_BYTES = 64 * 1024


class MemoryPool:
    """The bytes of requests read and not yet handled, across every connection of a broker
    (queued.max.request.bytes), as Kafka's SimpleMemoryPool in its non-strict mode: an
    allocation succeeds while any memory is available, so at most `size` plus one frame
    is in use. `take` never waits (for bytes already read); `try_allocate` refuses while
    the pool is exhausted, and `wait` queues a callback that is called, in order, once
    memory is given back. Owned by the event loop (no locking)."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("a memory pool needs a positive size")
        self.size = size
        self.available = size
        self._waiters: collections.deque[Callable[[], None]] = collections.deque()

    @property
    def used(self) -> int:
        return self.size - self.available

    def try_allocate(self, nbytes: int) -> bool:
        if self.available <= 0 or self._waiters:  # first come, first served
            return False
        self.available -= nbytes
        return True

    def take(self, nbytes: int) -> None:
        self.available -= nbytes

    def release(self, nbytes: int) -> None:
        self.available += nbytes
        while self._waiters and self.available > 0:
            self._waiters.popleft()()  # allocates (or gives up) before the next one

    def wait(self, callback: Callable[[], None]) -> None:
        self._waiters.append(callback)

    def cancel(self, callback: Callable[[], None]) -> None:
        try:
            self._waiters.remove(callback)
        except ValueError:
            pass


class FrameReader(asyncio.BufferedProtocol):
    def __init__(self, max_frame_bytes: int, min_frame_bytes: int = 0,
                 pool: MemoryPool | None = None) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.min_frame_bytes = min_frame_bytes
        self.pool = pool
        self.pooled = 0  # bytes this reader holds in the pool (see `release`)
        self.waiting_for_memory = 0  # size of the frame waiting for the pool, or 0
        self._pause_reasons: set[str] = set()
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

    def release(self, nbytes: int) -> None:
        """Give a handled frame's bytes back to the pool (nothing without a pool)."""
        nbytes = min(nbytes, self.pooled)
        if nbytes > 0:
            self.pooled -= nbytes
            self.pool.release(nbytes)

    def abandon_partial(self) -> None:
        """The stream ended: stop waiting for memory and give back the buffer of an
        unfinished frame (whole frames are released by their owner)."""
        if self.waiting_for_memory:
            self.waiting_for_memory = 0
            self.pool.cancel(self._memory_available)
        if self._frame is not None:
            self.release(len(self._frame))
            self._frame = self._frame_view = None

    def release_all(self) -> None:
        """The owner is done with every frame: give back everything this reader holds."""
        self.abandon_partial()
        self.release(self.pooled)

    # --- reading pauses: each reason pauses the transport until it is lifted ---------------
    def pause_reading(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if self._pause_reasons:
            return
        if self._have and self._frame is None and not self.stopped:
            self._cut_scratch()  # bytes read while paused (which may pause again)
        if not self._pause_reasons and self.transport is not None and \
                not self.transport.is_closing():
            self.transport.resume_reading()

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

    @property
    def writing_paused(self) -> bool:
        """The transport's write buffer is above its high-water mark."""
        return self._writing_paused

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
        if self._pause_reasons and self.transport.is_reading():
            # paused before the transport started reading (uvloop starts reading after
            # connection_made): this read is taken, the next ones wait
            self.transport.pause_reading()
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
        if self._pause_reasons:
            return  # kept in scratch, cut (and any buffer allocated) once reading resumes
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
                if self.pool is not None:
                    self.pool.take(size)  # already read: counted, never waits
                    self.pooled += size
                self.frame_received(bytes(view[start:pos]))
                continue
            if size > len(buf) - 4:
                # a large frame: the rest of it is read in place, in a buffer of its own
                # once the pool has memory for it
                if self.pool is not None and not self.pool.try_allocate(size):
                    self.waiting_for_memory = size
                    self.pause_reading("memory")
                    self.pool.wait(self._memory_available)
                    break
                self._start_large_frame(size, view[start:have])
                pos = have
            break
        rest = have - pos
        if pos and rest:
            buf[:rest] = buf[pos:have]  # same length: views handed out stay valid
        self._have = rest

    def _start_large_frame(self, size: int, first: memoryview) -> None:
        self.pooled += size if self.pool is not None else 0
        frame = bytearray(size)
        frame[:len(first)] = first
        self._frame, self._frame_view = frame, memoryview(frame)
        self._filled = len(first)

    def _memory_available(self) -> None:
        """The pool's turn for the frame waiting in the scratch buffer (its size prefix at
        the start): take the memory, move the bytes read so far, read on."""
        size, self.waiting_for_memory = self.waiting_for_memory, 0
        if not size or self.stopped:
            return
        self.pool.take(size)
        self._start_large_frame(size, self._scratch_view[4:self._have])
        self._have = 0
        self.resume_reading("memory")
