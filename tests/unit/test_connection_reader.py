"""strom.server.connection: a listener of `ConnectionProtocol`s (loop.create_server), each
served by a `Connection`. Pipelined requests of every size are answered in order, also when
they pile up before serving starts (reading pauses above MAX_READ_AHEAD_BYTES) and when the
client reads its responses late (writing waits for the transport); a size outside
0..socket.request.max.bytes closes the connection, and a client that goes away ends its
connection. On asyncio's own loop and on uvloop, with a stand-in dispatcher that echoes
each frame."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from strom.api.fetch import RawResponse
from strom.log.segment import FileSlice
from strom.protocol.framing import MemoryPool
from strom.server.connection import MAX_WRITE_BUFFER_BYTES, Connection, ConnectionProtocol
from strom.server.dispatcher import CloseConnection

HOST = "127.0.0.1"


class Echo:
    """Answers each frame with its length and its bytes reversed, after a short pause."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    fast_path = None  # a Dispatcher without one (as with metrics on)

    async def dispatch(self, frame, client, client_host, listener, appended=None,
                       principal="User:ANONYMOUS", throttled=None):
        self.seen.append(len(frame))
        await asyncio.sleep(0)
        body = struct.pack(">i", len(frame)) + bytes(frame)[::-1]
        return struct.pack(">i", len(body)) + body


def loops():
    out = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop

        out.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    except ImportError:  # pragma: no cover
        pass
    return out


async def serve(dispatcher, max_request_size, delay_s, max_idle_ms=-1, pool=None,
                on_made=None, on_connected=None):
    """A listener like the broker's; serving a connection starts `delay_s` after it is made.
    Returns (server, port, the connection tasks); their protocols go to `serve.protocols`.
    `on_made(protocol)` is called in connection_made; `on_connected(protocol)`, an async
    function, is awaited before serving."""
    tasks: list[asyncio.Task] = []
    serve.protocols = []

    async def run(protocol):
        await asyncio.sleep(delay_s)  # let requests pile up in the protocol first
        if on_connected is not None:
            await on_connected(protocol)
        await Connection(protocol, dispatcher, "PLAINTEXT", max_idle_ms).serve()

    def connected(protocol):
        serve.protocols.append(protocol)
        if on_made is not None:
            on_made(protocol)
        tasks.append(asyncio.get_running_loop().create_task(run(protocol)))

    server = await asyncio.get_running_loop().create_server(
        lambda: ConnectionProtocol(max_request_size, connected, pool), HOST, 0)
    return server, server.sockets[0].getsockname()[1], tasks


def run(new_loop, coro, timeout: float):
    """Run `coro` on a new loop of `new_loop`, bounded by `timeout`."""
    loop = new_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


def frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


@pytest.mark.parametrize("new_loop", loops())
@pytest.mark.parametrize("delay_s", [0, 0.2])
def test_pipelined_requests_of_every_size_are_answered_in_order(new_loop, delay_s):
    bodies = [b"", b"a" * 8, bytes(range(256)) * 300, b"b" * 70_000, b"c" * 3_000_000,
              b"d" * 12] + [bytes([i]) * (i * 997) for i in range(40)]

    async def main():
        echo = Echo()
        server, port, _ = await serve(echo, 100 << 20, delay_s)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"".join(frame(b) for b in bodies))
            await writer.drain()
            got = []
            for _ in bodies:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                body = await reader.readexactly(size)
                n = struct.unpack_from(">i", body)[0]
                got.append((n, body[4:][::-1]))
            writer.close()
            return echo, got

    echo, got = run(new_loop, main(), 60)
    assert got == [(len(b), b) for b in bodies]
    assert echo.seen == [len(b) for b in bodies]


@pytest.mark.parametrize("new_loop", loops())
def test_a_size_above_the_limit_closes_the_connection(new_loop, caplog):
    async def main():
        echo = Echo()
        server, port, _ = await serve(echo, 1000, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(frame(b"ok") + struct.pack(">i", 1001) + b"x" * 10)
            await writer.drain()
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            await reader.readexactly(size)
            rest = await asyncio.wait_for(reader.read(), 10)  # closed by the broker
            writer.close()
            return echo, rest

    echo, rest = run(new_loop, main(), 30)
    assert echo.seen == [2] and rest == b""
    assert "request size 1001 is outside" in caplog.text


@pytest.mark.parametrize("new_loop", loops())
def test_responses_read_late_are_all_written_in_order(new_loop):
    """16 MiB of responses to a client that reads nothing for a while: serving waits for the
    transport (its write buffer stays bounded) and every response arrives, in order."""
    bodies = [bytes([i]) * (1 << 20) for i in range(16)]

    async def main():
        echo = Echo()
        server, port, tasks = await serve(echo, 100 << 20, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 16)
            # no drain(): the server stops reading once its responses back up, so the
            # client's requests wait in its own transport meanwhile
            writer.write(b"".join(frame(b) for b in bodies))
            await asyncio.sleep(0.5)  # the server fills its buffers meanwhile
            buffered = serve.protocols[0].transport.get_write_buffer_size()
            got = []
            for _ in bodies:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                body = await reader.readexactly(size)
                got.append(body[4:][::-1])
            writer.close()
            return echo, got, buffered

    echo, got, buffered = run(new_loop, main(), 60)
    assert got == bodies
    # at most the limit plus one response, however much is still to write
    assert buffered <= MAX_WRITE_BUFFER_BYTES + (1 << 20) + 8
    assert echo.seen == [len(b) for b in bodies]


@pytest.mark.parametrize("new_loop", loops())
def test_a_client_that_goes_away_ends_its_connection(new_loop):
    """A client sends requests and closes without reading: its connection task ends (no
    error, no hang), and the listener serves the next client."""

    async def main():
        echo = Echo()
        server, port, tasks = await serve(echo, 100 << 20, 0)
        async with server:
            _, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"".join(frame(b"x" * 500_000) for _ in range(12)))
            await writer.drain()
            writer.transport.abort()  # a reset, with responses still to write
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(frame(b"next"))
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            body = await reader.readexactly(size)
            writer.close()
            return body, tasks

    body, tasks = run(new_loop, main(), 30)
    assert body[4:] == b"txen"
    assert all(t.done() and t.exception() is None for t in tasks)


class Replicating:
    """A stand-in for acks=all Produce: a frame starting with API key 0 is "appended"
    (recorded, `appended()` called), then waits until the test releases it; any other frame
    is answered at once. Each answer is the frame's last 4 bytes (a request number)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.release: dict[int, asyncio.Event] = {}
        self.closing: set[int] = set()  # these close the connection, as a failed acks=0

    fast_path = None  # a Dispatcher without one (as with metrics on)

    async def dispatch(self, request, client, client_host, listener, appended=None,
                       principal="User:ANONYMOUS", throttled=None):
        n = struct.unpack(">i", bytes(request[-4:]))[0]
        if request[:2] == b"\x00\x00" and n in self.closing:
            self.events.append(f"close {n}")
            raise CloseConnection(f"request {n} failed")
        if request[:2] == b"\x00\x00":
            self.events.append(f"append {n}")
            appended()
            event = self.release.setdefault(n, asyncio.Event())
            await event.wait()
        else:
            released = sum(e.is_set() for e in self.release.values())
            self.events.append(f"handle {n} after {released} released")
        return frame(struct.pack(">i", n))


def produce_frame(n: int) -> bytes:
    return frame(b"\x00\x00" + struct.pack(">i", n))


def other_frame(n: int) -> bytes:
    return frame(b"\x00\x03" + struct.pack(">i", n))


@pytest.mark.parametrize("new_loop", loops())
def test_produce_requests_waiting_for_replication_are_pipelined(new_loop):
    """Up to MAX_PIPELINED_PRODUCES Produce requests are appended while earlier ones wait;
    responses come in request order even when later ones are released first; a request of
    another kind is handled only after every earlier response is written."""
    from strom.server.connection import MAX_PIPELINED_PRODUCES as limit

    async def main():
        d = Replicating()
        server, port, _ = await serve(d, 1 << 20, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port)
            n_produce = limit + 2
            writer.write(b"".join(produce_frame(i) for i in range(n_produce))
                         + other_frame(100))
            await asyncio.sleep(0.3)
            appended_first = list(d.events)
            for i in reversed(range(n_produce)):  # the last ones first
                d.release.setdefault(i, asyncio.Event()).set()
                await asyncio.sleep(0.01)
            got = []
            for _ in range(n_produce + 1):
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                got.append(struct.unpack(">i", await reader.readexactly(size))[0])
            writer.close()
            return appended_first, got, d.events

    appended_first, got, events = run(new_loop, main(), 30)
    assert appended_first == [f"append {i}" for i in range(limit)]
    assert got == list(range(limit + 2)) + [100]
    assert events == [f"append {i}" for i in range(limit + 2)] + \
        [f"handle 100 after {limit + 2} released"]


@pytest.mark.parametrize("new_loop", loops())
def test_a_pipelined_request_that_closes_the_connection_stops_it_in_order(new_loop):
    """Produce 0 waits for replication, Produce 1 closes the connection: the response to
    0 is still written, then the connection closes; Produce 2 is never handled."""

    async def main():
        d = Replicating()
        d.closing.add(1)
        server, port, tasks = await serve(d, 1 << 20, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(produce_frame(0) + produce_frame(1) + produce_frame(2))
            await asyncio.sleep(0.2)
            d.release.setdefault(0, asyncio.Event()).set()
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            first = struct.unpack(">i", await reader.readexactly(size))[0]
            rest = await asyncio.wait_for(reader.read(), 10)
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            writer.close()
            return first, rest, d.events

    first, rest, events = run(new_loop, main(), 30)
    assert first == 0 and rest == b""
    assert events == ["append 0", "close 1"]


class SegmentFetch:
    """Answers with a Fetch-like RawResponse: 4 MiB of bytes (so the slices wait for the
    client), then three slices of a 'segment' file: big enough for sendfile, small (pread),
    and cold (read in an executor). As soon as it has answered, the segment is closed and
    its descriptor number given to a decoy file, as topic deletion may do meanwhile."""

    def __init__(self, path, decoy_path) -> None:
        self.path, self.decoy_path = path, decoy_path
        self.reused = self.decoy = None

    fast_path = None  # a Dispatcher without one (as with metrics on)

    async def dispatch(self, frame, client, client_host, listener, appended=None,
                       principal="User:ANONYMOUS", throttled=None):
        fd = os.open(self.path, os.O_RDONLY)
        parts = [b"\0" * (4 << 20), FileSlice(fd, 0, 1 << 20), FileSlice(fd, 1 << 20, 1000),
                 FileSlice(fd, (1 << 20) + 1000, 1 << 20, cold=True)]

        def close_and_reuse():
            os.close(fd)
            self.decoy = os.open(self.decoy_path, os.O_RDONLY)  # the lowest free number
            self.reused = self.decoy == fd

        asyncio.get_running_loop().call_soon(close_and_reuse)
        return RawResponse(parts, sum(len(p) if isinstance(p, bytes) else p.size for p in parts))


@pytest.mark.parametrize("new_loop", loops())
def test_slices_are_read_from_their_segment_even_if_it_is_closed_meanwhile(new_loop,
                                                                           tmp_path):
    """A segment closed (and its descriptor number reused) while its records wait to be
    written: the client still gets the segment's bytes, by sendfile, pread and cold read."""
    data = os.urandom((2 << 20) + 1000)
    (tmp_path / "segment").write_bytes(data)
    (tmp_path / "decoy").write_bytes(b"D" * len(data))
    fetch = SegmentFetch(tmp_path / "segment", tmp_path / "decoy")
    want = (4 << 20) + len(data)

    async def main():
        server, port, tasks = await serve(fetch, 100 << 20, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 16)
            writer.write(frame(b"fetch"))
            await asyncio.sleep(0.3)  # read late: the slices wait for the transport
            got = await reader.readexactly(want)
            writer.close()
            return got, tasks

    try:
        got, tasks = run(new_loop, main(), 30)
    finally:
        if fetch.decoy is not None:
            os.close(fetch.decoy)
    assert fetch.reused is not None  # the segment was closed before its slices were sent
    assert got[:4 << 20] == b"\0" * (4 << 20)
    assert got[4 << 20:] == data


class ColdFetch:
    """Answers with 16 cold slices of 1 MiB of one file (all read off the loop)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    fast_path = None  # a Dispatcher without one (as with metrics on)

    async def dispatch(self, frame, client, client_host, listener, appended=None,
                       principal="User:ANONYMOUS", throttled=None):
        parts = [FileSlice(self.fd, i << 20, 1 << 20, cold=True) for i in range(16)]
        return RawResponse(parts, 16 << 20)


@pytest.mark.parametrize("new_loop", loops())
def test_cold_slices_wait_for_a_client_that_reads_late(new_loop, tmp_path):
    """16 MiB of cold slices to a client that reads nothing for a while: they are read as
    the transport takes them, so its write buffer stays bounded, and all arrive intact."""
    data = os.urandom(16 << 20)
    (tmp_path / "segment").write_bytes(data)

    fd = os.open(tmp_path / "segment", os.O_RDONLY)

    async def main():
        server, port, tasks = await serve(ColdFetch(fd), 100 << 20, 0)
        async with server:
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 16)
            writer.write(frame(b"fetch"))
            await asyncio.sleep(0.5)
            buffered = serve.protocols[0].transport.get_write_buffer_size()
            got = await reader.readexactly(len(data))
            writer.close()
            return got, buffered

    try:
        got, buffered = run(new_loop, main(), 30)
    finally:
        os.close(fd)
    assert got == data
    assert buffered <= MAX_WRITE_BUFFER_BYTES + (1 << 20)


class Held:
    """Answers like Echo, but a frame starting with b"hold" waits until `release` is set
    (a parked long-poll fetch)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[bytes] = []

    fast_path = None  # a Dispatcher without one (as with metrics on)

    async def dispatch(self, frame, client, client_host, listener, appended=None,
                       principal="User:ANONYMOUS", throttled=None):
        self.seen.append(bytes(frame[:8]))
        if bytes(frame[:4]) == b"hold":
            await self.release.wait()
        return frame_of(bytes(frame)[::-1])


def frame_of(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


async def read_frame(reader) -> bytes:
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


@pytest.mark.parametrize("new_loop", loops())
def test_an_idle_connection_is_closed_but_not_one_with_a_request_in_progress(new_loop):
    """connections.max.idle.ms: a connection that sends nothing is closed; one whose
    request waits (longer than the idle time) is not, and gets its answer."""

    async def main():
        d = Held()
        server, port, tasks = await serve(d, 1 << 20, 0, max_idle_ms=300)
        async with server:
            busy_r, busy_w = await asyncio.open_connection(HOST, port)
            busy_w.write(frame(b"hold-me"))
            await busy_w.drain()
            idle_r, idle_w = await asyncio.open_connection(HOST, port)
            idle_rest = await asyncio.wait_for(idle_r.read(), 10)  # closed by the server
            d.release.set()  # more than the idle time after busy's request was read
            answer = await read_frame(busy_r)
            busy_w.write(frame(b"again"))  # still open and served
            again = await read_frame(busy_r)
            busy_rest = await asyncio.wait_for(busy_r.read(), 10)  # idle now: closed too
            for w in (busy_w, idle_w):
                w.close()
            return idle_rest, answer, again, busy_rest

    idle_rest, answer, again, busy_rest = run(new_loop, main(), 30)
    assert idle_rest == b"" and busy_rest == b""
    assert answer == b"em-dloh" and again == b"niaga"


@pytest.mark.parametrize("new_loop", loops())
def test_large_frames_wait_for_the_memory_pool_small_ones_are_served(new_loop):
    """queued.max.request.bytes: while one connection's large request holds the pool, a
    second large request is not read (its memory is not allocated), a small request on a
    third connection is answered; once the first is handled the second is read."""
    size = 1 << 20
    pool = MemoryPool(size)
    peak = []

    async def main():
        d = Echo()
        server, port, _ = await serve(d, size, 0, pool=pool)
        async with server:
            r1, w1 = await asyncio.open_connection(HOST, port)
            big1 = frame(b"1" * size)
            w1.write(big1[:1000])
            await w1.drain()
            r2, w2 = await asyncio.open_connection(HOST, port)
            w2.write(frame(b"2" * size))  # no drain: the server stops reading it
            r3, w3 = await asyncio.open_connection(HOST, port)
            w3.write(frame(b"small"))
            small = await read_frame(r3)
            peak.append(pool.used)
            waiting = [p.waiting_for_memory for p in serve.protocols]
            w1.write(big1[1000:])
            first = await read_frame(r1)
            second = await read_frame(r2)
            for w in (w1, w2, w3):
                w.close()
            return small, waiting, first, second

    small, waiting, first, second = run(new_loop, main(), 30)
    assert small[4:] == b"llams"
    assert waiting == [0, size, 0]
    assert peak == [size]  # the first large frame (the small one is handled), not the second
    assert len(first) == len(second) == size + 4
    assert pool.available == size  # everything given back


@pytest.mark.parametrize("new_loop", loops())
def test_a_connection_paused_when_made_reads_at_most_once_until_resumed(new_loop):
    """What the broker does at max.connections: a new connection is paused in
    connection_made and resumed when a slot is free. Meanwhile at most one read is taken
    (uvloop starts reading after connection_made), however much the client sends, and its
    bytes are only kept: no frame is cut and no buffer allocated before the resume."""
    from strom.protocol.framing import SCRATCH_BYTES

    async def main():
        d = Echo()
        gate = asyncio.Event()

        def on_made(protocol):
            if len(serve.protocols) == 1:
                protocol.pause_reading("max.connections")

        async def until_resumed(protocol):
            if protocol is serve.protocols[0]:
                await gate.wait()

        server, port, _ = await serve(d, 1 << 20, 0, on_made=on_made,
                                      on_connected=until_resumed)
        async with server:
            r1, w1 = await asyncio.open_connection(HOST, port)
            w1.write(frame(b"parked"))
            await w1.drain()
            w1.write(frame(b"x" * 500_000) * 4)  # no drain: the server does not read it
            r2, w2 = await asyncio.open_connection(HOST, port)
            w2.write(frame(b"served"))
            served = await read_frame(r2)  # read after the parked one's bytes arrived
            parked = serve.protocols[0]
            held = (len(parked.frames), parked.partial_bytes)
            parked.resume_reading("max.connections")
            gate.set()
            answers = [await read_frame(r1) for _ in range(5)]
            for w in (w1, w2):
                w.close()
            return served, held, answers

    served, held, answers = run(new_loop, main(), 30)
    assert served[4:] == b"devres"
    assert held[0] == 0 and held[1] <= SCRATCH_BYTES  # nothing cut, no buffer allocated
    assert answers[0][4:] == b"dekrap" and [len(a) for a in answers[1:]] == [500_004] * 4


class CloseOnBad:
    """Answers like Echo; a frame starting with b"bad" closes the connection once `go`
    is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    fast_path = None  # a Dispatcher without one (as with metrics on)

    async def dispatch(self, frame, client, client_host, listener, appended=None,
                       principal="User:ANONYMOUS", throttled=None):
        if bytes(frame[:3]) == b"bad":
            await self.go.wait()
            raise CloseConnection("bad request")
        return frame_of(bytes(frame)[::-1])


@pytest.mark.parametrize("new_loop", loops())
def test_every_byte_goes_back_to_the_pool_however_a_connection_ends(new_loop):
    """A client gone in the middle of a large frame, and a connection closed by a bad
    request with large requests still queued behind it: the pool is whole again."""
    size = 1 << 20
    pool = MemoryPool(2 * size)

    async def main():
        d = CloseOnBad()
        server, port, tasks = await serve(d, size, 0, pool=pool)
        async with server:
            _, w1 = await asyncio.open_connection(HOST, port)
            w1.write(frame(b"p" * size)[:size // 2])
            await w1.drain()
            r2, w2 = await asyncio.open_connection(HOST, port)
            w2.write(frame(b"ok") + frame(b"bad") + frame(b"q" * size) + frame(b"r" * 100))
            await w2.drain()
            first = await read_frame(r2)
            for _ in range(1000):  # until the requests behind the bad one are read
                if serve.protocols[1].queued_bytes == size + 100:
                    break
                await asyncio.sleep(0.01)
            queued = serve.protocols[1].queued_bytes
            d.go.set()
            try:
                rest = await asyncio.wait_for(r2.read(), 10)  # closed by the server
            except ConnectionResetError:  # with requests unread: a reset
                rest = b""
            w1.transport.abort()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            w2.close()
            return first, queued, rest

    first, queued, rest = run(new_loop, main(), 30)
    assert first == b"ko" and queued == size + 100 and rest == b""
    assert pool.available == 2 * size
