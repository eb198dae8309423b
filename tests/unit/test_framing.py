"""strom.protocol.framing.FrameReader: size-prefixed frames cut from a byte stream however
the reads split it (several frames per read, a size prefix split across reads, large
frames read in place), and a bad size stopping the stream."""

from __future__ import annotations

import random
import struct

import pytest

from strom.protocol.framing import SCRATCH_BYTES, FrameReader


class Collect(FrameReader):
    def __init__(self, max_frame_bytes: int = 1 << 30, min_frame_bytes: int = 0) -> None:
        super().__init__(max_frame_bytes, min_frame_bytes)
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
