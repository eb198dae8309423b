"""strom.protocol.framing.FrameReader: size-prefixed frames cut from a byte stream however
the reads split it (several frames per read, a size prefix split across reads, large
frames read in place), and a bad size stopping the stream. With a MemoryPool
(queued.max.request.bytes): every frame is counted until released, and a large frame waits,
its socket not read, until the pool has memory for it."""

from __future__ import annotations

import random
import struct

import pytest

from strom.protocol.framing import SCRATCH_BYTES, FrameReader, MemoryPool


class Collect(FrameReader):
    def __init__(self, max_frame_bytes: int = 1 << 30, min_frame_bytes: int = 0,
                 pool: MemoryPool | None = None) -> None:
        super().__init__(max_frame_bytes, min_frame_bytes, pool)
        self.frames: list[bytes] = []
        self.bad: list[int] = []

    def frame_received(self, frame):
        self.frames.append(bytes(frame))

    def bad_frame_size(self, size):
        self.bad.append(size)


def framed(bodies) -> bytes:
    return b"".join(struct.pack(">i", len(b)) + b for b in bodies)


def read_like_a_transport(reader: FrameReader, stream: bytes, rng: random.Random,
                          max_read: int) -> None:
    """What a transport does: get_buffer, copy at most what it offers, buffer_updated."""
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer(-1)
        assert len(buf) > 0
        n = min(len(buf), len(stream) - pos, rng.randint(1, max_read))
        buf[:n] = stream[pos:pos + n]
        pos += n
        reader.buffer_updated(n)


SIZES = [0, 1, 3, 4, 100, SCRATCH_BYTES - 5, SCRATCH_BYTES - 4, SCRATCH_BYTES - 3,
         SCRATCH_BYTES, SCRATCH_BYTES + 1, 3 * SCRATCH_BYTES + 17]


@pytest.mark.parametrize("max_read", [13, 4096, SCRATCH_BYTES, 1 << 22])
def test_frames_survive_any_split(max_read):
    rng = random.Random(max_read)
    bodies = [rng.randbytes(s) for s in SIZES] + \
             [rng.randbytes(rng.choice([5, 50, 5000, 70000])) for _ in range(60)]
    rng.shuffle(bodies)
    reader = Collect()
    read_like_a_transport(reader, framed(bodies), rng, max_read)
    assert reader.frames == bodies
    assert reader.partial_bytes == 0 and not reader.bad


def test_large_frame_is_read_in_place():
    reader = Collect()
    body = bytes(range(256)) * 1000
    stream = framed([body])
    buf = reader.get_buffer(-1)
    buf[:100] = stream[:100]
    reader.buffer_updated(100)
    rest = reader.get_buffer(-1)
    assert len(rest) == len(body) - 96  # exactly the rest of the frame, nothing beyond
    assert reader.partial_bytes == 96
    rest[:] = stream[100:]
    reader.buffer_updated(len(rest))
    assert reader.frames == [body]


def test_feed_then_read():
    reader = Collect()
    stream = framed([b"a" * 10, b"b" * 100_000, b"c"])
    reader.feed(stream[:50_000])
    read_like_a_transport(reader, stream[50_000:], random.Random(1), 30_000)
    assert reader.frames == [b"a" * 10, b"b" * 100_000, b"c"]


@pytest.mark.parametrize("size", [-1, 3, 1001])
def test_bad_size_stops_the_stream(size):
    reader = Collect(max_frame_bytes=1000, min_frame_bytes=4)
    stream = framed([b"ok!!"]) + struct.pack(">i", size) + b"x" * 2000 + framed([b"late"])
    read_like_a_transport(reader, stream, random.Random(2), 9)
    assert reader.frames == [b"ok!!"]
    assert reader.bad == [size] and reader.stopped


class FakeTransport:
    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def is_reading(self) -> bool:
        return self.reading


def pooled_reader(pool: MemoryPool) -> Collect:
    reader = Collect(pool=pool)
    reader.connection_made(FakeTransport())
    return reader


def send(reader: FrameReader, data: bytes) -> bytes:
    """Like a transport, but only while reading is not paused; returns what is left."""
    while data and reader.transport.reading:
        buf = reader.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        data = data[n:]
        reader.buffer_updated(n)
    return data


def test_memory_pool_is_kafkas_non_strict_pool():
    pool = MemoryPool(100)
    assert pool.try_allocate(150)  # any memory available: taken, even beyond the size
    assert pool.available == -50 and pool.used == 150
    assert not pool.try_allocate(1)
    called = []
    pool.wait(lambda: called.append(1))
    pool.wait(lambda: called.append(2))
    pool.release(50)  # still none available
    assert called == []
    pool.release(100)
    assert called == [1, 2]  # both: neither took any memory
    with pytest.raises(ValueError):
        MemoryPool(0)


def test_a_large_frame_waits_for_memory_and_small_frames_do_not():
    size = 3 * SCRATCH_BYTES
    pool = MemoryPool(size)
    first, second, third = (pooled_reader(pool) for _ in range(3))
    big1, big2 = b"1" * size, b"2" * size
    stream1, stream2 = framed([big1]), framed([big2])
    send(first, stream1[:1000])  # gets its buffer: the pool is now exhausted
    assert pool.available == 0 and first.pooled == size
    rest2 = send(second, stream2)  # waits: its first bytes stay in scratch, reading pauses
    assert rest2 and not second.transport.reading and second.waiting_for_memory == size
    assert second.pooled == 0 and pool.available == 0
    send(third, framed([b"small"]))  # already read: counted, never waits
    assert third.frames == [b"small"] and pool.available == -5
    send(first, stream1[1000:])
    assert first.frames == [big1]
    first.release(size)  # handled: the waiting one takes its memory at once
    assert second.transport.reading and second.pooled == size and pool.available == -5
    assert send(second, rest2) == b""
    assert second.frames == [big2]
    second.release(size)
    third.release(5)
    assert pool.available == size


def test_a_waiting_frame_completes_with_the_bytes_read_before():
    size = 2 * SCRATCH_BYTES
    pool = MemoryPool(size)
    holder, waiter = pooled_reader(pool), pooled_reader(pool)
    send(holder, framed([b"h" * size])[:10])
    body = bytes(range(256)) * (size // 256)
    stream = framed([body, b"next"])
    assert send(waiter, stream[:5000]) == b""
    assert not waiter.transport.reading
    holder.release_all()  # the holder's connection is gone
    assert waiter.transport.reading and waiter.partial_bytes == 4996
    send(waiter, stream[5000:])
    assert waiter.frames == [body, b"next"]
    assert waiter.pooled == size + 4
    waiter.release_all()
    assert pool.available == size


def test_a_closed_reader_stops_waiting():
    pool = MemoryPool(SCRATCH_BYTES * 2)
    holder, gone, next_one = (pooled_reader(pool) for _ in range(3))
    send(holder, framed([b"h" * SCRATCH_BYTES * 2])[:10])
    send(gone, framed([b"g" * SCRATCH_BYTES * 2])[:10])
    send(next_one, framed([b"n" * SCRATCH_BYTES * 2])[:10])
    gone.release_all()
    holder.release_all()
    assert next_one.transport.reading and next_one.pooled == SCRATCH_BYTES * 2
    assert not gone.transport.reading and gone.pooled == 0
