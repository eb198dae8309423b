"""One client connection: read frames, dispatch them in order, write the responses.

Requests on a connection are handled one at a time, in order, as Kafka does (clients may
pipeline; up to MAX_READ_AHEAD_BYTES of their requests are read ahead, the rest wait in the
socket buffer), with one exception: an acks=all Produce whose records are appended waits
for replication while the next Produce requests are appended (see `Connection._produce`);
responses always go out in request order. A frame larger than socket.request.max.bytes,
a frame that does not parse, or any protocol violation closes the connection after one
log line; other connections are not affected.

`ConnectionProtocol` is the asyncio protocol of the listener (`loop.create_server`). It is a
buffered protocol (strom.protocol.framing): a large request (a Produce) lands in a bytearray
of its own with no copy in Python. `Connection.serve` takes its frames one by one and writes
the responses to its transport, waiting while the transport's write buffer is full.
While it waits for the next request, the commonest ones are taken as they arrive, without
a round through its task (`Connection._answer_at_once`): a plain Produce with acks 0 or 1
is answered on the spot, and a tailing consumer's Fetch is parked with a callback that
writes its answer; a request arriving meanwhile waits for that answer, so the order holds.

With queued.max.request.bytes set, the protocols share a `MemoryPool`: each frame's bytes
are given back once its request is handled (a Produce: once appended), and everything a
connection still holds when its serving ends. A connection with no byte read or written for
connections.max.idle.ms, and no request in progress, is closed. How many connections are
served at once is the broker's business (strom.server.connection_quotas): it may pause a
protocol's reading before serving it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Callable

from strom.api.fast_path import ParkedFetch
from strom.api.fetch import RawResponse
from strom.api.produce import NO_RESPONSE
from strom.log.page_cache import read_cold
from strom.protocol.framing import FrameReader, MemoryPool
from strom.protocol.messages import peek_produce_acks
from strom.security.listener import ListenerSecurity
from strom.security.tls import ANONYMOUS, ssl_principal
from strom.server.authenticator import (
    SASL_HANDSHAKE,
    AuthenticationClose,
    Authenticator,
    SaslState,
)
from strom.server.dispatcher import FETCH, CloseConnection, Dispatcher

log = logging.getLogger(__name__)

# file slices below this size are copied (pread) rather than sent with sendfile
SENDFILE_MIN_BYTES = 64 * 1024
# requests read ahead of the one being handled before the socket is no longer read
MAX_READ_AHEAD_BYTES = 2 << 20
# responses queued in the transport before serving waits for the socket to take them
MAX_WRITE_BUFFER_BYTES = 1 << 20
# acks=all Produce requests of one connection waiting for replication at once (see
# Connection._produce); the Java client sends at most 5 at a time by default, as does an
# idempotent librdkafka producer
MAX_PIPELINED_PRODUCES = 5
PRODUCE = 0  # API key
# idle times beyond this (over 30 years) are never reached: no timer
MAX_TIMER_MS = 10**12
# over TLS (no sendfile) a large file slice is read and written in pieces of this size
TLS_CHUNK_BYTES = 256 * 1024


class ConnectionProtocol(FrameReader):
    """Request frames of one connection, queued for `Connection.serve`, and the flow control
    of its responses. `on_connected(protocol)` is called once the transport is there."""

    def __init__(self, max_request_size: int,
                 on_connected: Callable[[ConnectionProtocol], None],
                 pool: MemoryPool | None = None) -> None:
        super().__init__(max_request_size, pool=pool)
        self.on_connected = on_connected
        self.frames: collections.deque[bytes | bytearray] = collections.deque()
        self.queued_bytes = 0
        self.eof = False
        self.bad_size: int | None = None
        self.last_active = 0.0  # loop time of the last bytes read or written
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future | None = None
        self._reading_paused = False
        # set by Connection.serve: answers a frame as it arrives, True if it did
        self.at_once: Callable[[bytes | bytearray], bool] | None = None

    # --- asyncio.BufferedProtocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._loop = asyncio.get_running_loop()
        self.last_active = self._loop.time()
        self.on_connected(self)

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = self._loop.time()
        super().buffer_updated(nbytes)

    def resume_writing(self) -> None:
        self.last_active = self._loop.time()  # the client took what was written
        super().resume_writing()

    def frame_received(self, frame: bytes | bytearray) -> None:
        # the connection may answer it at once when it is waiting for the next request
        # (`Connection._answer_at_once`): nothing queued before it, nothing in progress
        if self.at_once is not None and not self.frames and self._waiter is not None and \
                self.at_once(frame):
            return
        self.frames.append(frame)
        self.queued_bytes += len(frame)
        if self.queued_bytes > MAX_READ_AHEAD_BYTES and not self._reading_paused:
            self._reading_paused = True
            self.pause_reading("read-ahead")
        self._wake()

    def bad_frame_size(self, size: int) -> None:
        self.bad_size = size
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # keep the transport open: the last response may still be written (TLS cannot
        # half-close: there the transport closes itself)
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.abandon_partial()  # whole frames read are still handled, as in Kafka
        self._wake()
        self.wake_writers(ConnectionResetError("connection closed"))

    # --- for Connection.serve ---------------------------------------------------------------
    async def next_frame(self) -> bytes | bytearray | None:
        """The next request frame (without its size), or None at the end of the stream
        (EOF, connection lost, or a bad size: see `bad_size`)."""
        while not self.frames:
            if self.eof or self.bad_size is not None:
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
        frame = self.frames.popleft()
        self.queued_bytes -= len(frame)
        if self._reading_paused and self.queued_bytes <= MAX_READ_AHEAD_BYTES // 2:
            self._reading_paused = False
            self.resume_reading("read-ahead")
        return frame

    async def drain(self) -> None:
        """Wait until the transport takes more (ConnectionResetError once it is closed)."""
        if self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        await self.wait_writable()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        _resolve(waiter)


class Connection:
    def __init__(self, protocol: ConnectionProtocol, dispatcher: Dispatcher,
                 listener: str, max_idle_ms: int = -1,
                 security: ListenerSecurity | None = None) -> None:
        self.protocol = protocol
        # connections.max.idle.ms: closed after this long without a byte read or written,
        # unless a request is in progress (negative: never)
        self.max_idle_s = max_idle_ms / 1000 if 0 <= max_idle_ms < MAX_TIMER_MS else None
        self._busy = 0  # requests being handled (a parked fetch, a Produce being appended)
        self._idle_timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport = protocol.transport  # type: ignore[assignment]
        self.dispatcher = dispatcher
        self.max_request_size = protocol.max_frame_bytes
        self.listener = listener
        peer = self.transport.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        self.client_host = f"/{peer[0]}" if peer else ""  # as Kafka shows it in groups
        sock = self.transport.get_extra_info("socket")
        ssl_object = self.transport.get_extra_info("ssl_object")
        # sendfile would bypass TLS: over TLS every byte goes through the transport
        self._sock_fd = sock.fileno() if sock is not None and ssl_object is None else -1
        self.principal = ANONYMOUS
        self.authenticator: Authenticator | None = None
        self._security_problem: str | None = None
        if security is not None and security.mapper is not None and ssl_object is not None \
                and not security.sasl:  # on SASL_SSL the principal comes from SASL
            try:
                self.principal = ssl_principal(ssl_object, security.mapper)
            except ValueError as e:
                self._security_problem = f"failed authentication: {e}"
        if security is not None and security.sasl:
            clock = dispatcher.services.clock
            self.authenticator = Authenticator(security, self.client,
                                               lambda: clock.monotonic() * 1000)
            protocol.max_frame_bytes = min(protocol.max_frame_bytes,
                                           security.max_receive_size)
        self._pipeline: collections.deque[asyncio.Task] = collections.deque()
        self._pipeline_writer: asyncio.Task | None = None
        self._pipeline_waiter: asyncio.Future | None = None
        self._throttled_until = 0.0  # loop time: a client over its quota is muted till then
        # a Fetch taken at once and parked (`_answer_at_once`), then the task writing its
        # answer when that cannot be done on the spot; `serve` waits for both to end
        # (`_at_once_done`) before its next request
        self._parked: ParkedFetch | None = None
        self._answering: asyncio.Task | None = None
        self._at_once_waiter: asyncio.Future | None = None

    async def serve(self) -> None:
        requests, transport = self.protocol, self.transport
        if self._security_problem is not None:
            log.info("Closing connection from %s: %s", self.client, self._security_problem)
            transport.close()
            return
        self._arm_idle_timer()
        if self.authenticator is None and self.dispatcher.fast_path is not None:
            requests.at_once = self._answer_at_once
        auth_deadline = None
        if self.authenticator is not None and self.max_idle_s is not None:
            auth_deadline = asyncio.get_running_loop().call_later(
                self.max_idle_s, self._authentication_overdue)
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._throttled_until:  # set once the client was first throttled
                    await self._wait_throttle()
                frame = await requests.next_frame()
                if (self._parked is not None or self._answering is not None) and \
                        requests.bad_size is None:
                    # a Fetch taken at once is answered before anything after it
                    if not await self._at_once_done():
                        return
                if frame is None:
                    if requests.bad_size is not None:
                        limit = "socket.request.max.bytes"
                        if self.authenticator and not self.authenticator.authenticated:
                            limit = "sasl.server.max.receive.size (not authenticated)"
                        log.warning("Closing connection from %s: request size %d is outside "
                                    "0..%s (%d)", self.client, requests.bad_size, limit,
                                    requests.max_frame_bytes)
                    else:
                        await self._pipeline_done()  # the client may still read them
                    return
                self._busy += 1
                try:
                    if not await self._handle(frame):
                        return
                finally:
                    self._busy -= 1
                    requests.last_active = loop.time()
                    requests.release(len(frame))  # its bytes are no longer needed
        except (ConnectionError, RuntimeError) as e:
            # uvloop raises RuntimeError when writing to a transport the peer reset
            if isinstance(e, RuntimeError) and not transport.is_closing():
                raise
            return
        finally:
            if auth_deadline is not None:
                auth_deadline.cancel()
            if self._parked is not None:
                self._parked.cancel()
                self._parked = None
            if self._answering is not None:
                self._answering.cancel()
            requests.release_all()  # frames left unhandled give their memory back
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            for task in self._pipeline:
                task.cancel()
            if self._pipeline_writer is not None:
                self._pipeline_writer.cancel()
            transport.close()

    def _answer_at_once(self, frame: bytes | bytearray) -> bool:
        """A request taken as it arrives while `serve` waits for the next one, without the
        round through `serve`'s task: a Produce the fast path answers on the spot (one
        partition; acks 0, 1, or -1 where this broker is the whole ISR) is written (or,
        acks=0, not answered); a consumer's Fetch the fast path reads
        (`Dispatcher.fetch_at_once`) is answered by `_fetch_answered`, now
        when it has its answer, else once woken (a tailing consumer's, parked).
        False, with nothing done, for anything else: `serve` then takes it from the queue
        as usual."""
        if self._busy or self._pipeline or self._pipeline_writer is not None or \
                self._throttled_until:
            return False
        transport = self.transport
        if transport.is_closing() or transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            return False
        if len(frame) > 1 and frame[1] == FETCH:
            try:
                served = self.dispatcher.fetch_at_once(frame, self._fetch_answered)
            except Exception:  # as the dispatcher treats a handler's: logged, closed
                log.exception("Unexpected error handling a Fetch from %s", self.client)
                transport.close()
                return True
            if served is None:
                return False
            self._busy += 1
            protocol = self.protocol
            protocol.release(len(frame))
            protocol.last_active = protocol._loop.time()
            if isinstance(served, ParkedFetch):
                self._parked = served
            else:  # answered now: written as a woken fetch's answer is
                self._fetch_answered(served)
            return True
        try:
            answer = self.dispatcher.produce_at_once(frame)
        except Exception:  # as the dispatcher treats a handler's: logged, connection closed
            log.exception("Unexpected error handling a Produce from %s", self.client)
            transport.close()
            return True
        if answer is None:
            return False
        if answer is not NO_RESPONSE:
            transport.write(answer)
        protocol = self.protocol
        protocol.release(len(frame))
        protocol.last_active = protocol._loop.time()
        return True

    def _fetch_answered(self, response: RawResponse | None) -> None:
        """The answer of the Fetch `_answer_at_once` took (None: an unexpected error, the
        connection closes), held at once (`_hold_parts`): written on the spot when that
        left only bytes (small hot slices read with one pread each), else by a task."""
        self._parked = None
        protocol, transport = self.protocol, self.transport
        protocol.last_active = protocol._loop.time()
        try:
            if response is None:
                transport.close()
            elif not transport.is_closing():
                parts, fds = self._hold_parts(response.parts)
                if max(fds, default=-1) < 0:
                    transport.writelines(parts)
                else:  # the duplicates are closed even if the task never runs
                    task = protocol._loop.create_task(self._respond_later(parts, fds))
                    task.add_done_callback(lambda _task: _close_all(fds))
                    self._answering = task
                    return
        except Exception:
            log.exception("Writing a Fetch response to %s failed", self.client)
            transport.close()
        self._busy -= 1
        self._wake_at_once()

    async def _respond_later(self, parts: list, fds: list[int]) -> None:
        transport = self.transport
        try:
            if not transport.is_closing():
                await self._write_held(parts, fds)
                if transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
                    await self.protocol.drain()
        except (ConnectionError, RuntimeError):
            self.transport.close()
        except Exception:  # a bug here must not leave the connection hanging
            log.exception("Writing a Fetch response to %s failed", self.client)
            self.transport.close()
        finally:
            self._answering = None
            self._busy -= 1
            self._wake_at_once()

    def _wake_at_once(self) -> None:
        waiter, self._at_once_waiter = self._at_once_waiter, None
        _resolve(waiter)

    async def _at_once_done(self) -> bool:
        """Wait until the Fetch taken at once is answered; False if the connection is
        closing (then nothing is left to wait for: `serve`'s end unparks it)."""
        while self._parked is not None or self._answering is not None:
            if self.transport.is_closing():
                return False
            self._at_once_waiter = asyncio.get_running_loop().create_future()
            await self._at_once_waiter
        return not self.transport.is_closing()

    # --- client quotas (KIP-219) -----------------------------------------------------------
    def _throttle(self, throttle_ms: int) -> None:
        loop_time = asyncio.get_running_loop().time()
        self._throttled_until = max(self._throttled_until, loop_time + throttle_ms / 1000)

    async def _wait_throttle(self) -> None:
        """A throttled client's channel is muted: no further request is read (nor taken
        from those read ahead) until its throttle time has passed, as Kafka mutes it."""
        delay = self._throttled_until - asyncio.get_running_loop().time()
        if delay <= 0:
            return
        self.protocol.pause_reading("throttle")
        try:
            await asyncio.sleep(delay)
        finally:
            self.protocol.resume_reading("throttle")

    async def _handle(self, frame: bytes | bytearray) -> bool:
        """One request; False if the connection is to close."""
        if self.authenticator is not None:
            verdict = await self._authenticate(frame)
            if verdict is not None:
                return verdict
        if len(frame) >= 2 and frame[0] == 0 and frame[1] == PRODUCE:
            return await self._produce(frame)
        if not await self._pipeline_done():
            return False
        try:
            response = await self._dispatch(frame)
        except CloseConnection as e:
            log.warning("Closing connection from %s: %s", self.client, e)
            return False
        return await self._respond(response)

    def _dispatch(self, frame: bytes | bytearray, appended: Callable[[], None] | None = None):
        return self.dispatcher.dispatch(frame, self.client, self.client_host, self.listener,
                                        appended, self.principal, self._throttle)

    async def _authenticate(self, frame: bytes | bytearray) -> bool | None:
        """SASL: the authenticator's turn at a frame. None: the dispatcher serves it;
        else whether the connection stays open."""
        auth = self.authenticator
        assert auth is not None
        if auth.authenticated and not (len(frame) >= 2 and frame[0] == 0 and
                                       frame[1] == SASL_HANDSHAKE):
            if auth.expires_at_ms is None:
                return None  # the common case, decided without parsing the header
        elif not await self._pipeline_done():  # the authenticator answers: in order
            return False
        try:
            answer = await auth.intercept(frame)
        except AuthenticationClose as e:
            log.warning("Closing connection from %s: %s", self.client, e)
            return False
        if answer is None:
            return None
        if auth.authenticated:
            self.principal = auth.principal or ANONYMOUS
            self.protocol.max_frame_bytes = self.max_request_size
        if not await self._respond(answer.response):
            return False
        if answer.close:
            await self.protocol.drain()
            if auth.state is SaslState.FAILED and auth.security.failed_delay_ms:
                # connection.failed.authentication.delay.ms: a client that guesses
                # passwords waits before its next try
                await asyncio.sleep(auth.security.failed_delay_ms / 1000)
            return False
        return True

    # --- connections.max.idle.ms ----------------------------------------------------------
    def _authentication_overdue(self) -> None:
        """A SASL client must authenticate within connections.max.idle.ms of connecting:
        the idle timer alone would let one that sends a byte now and then hold an
        unauthenticated connection for ever."""
        if self.authenticator is None or self.authenticator.authenticated \
                or self.transport.is_closing():
            return
        log.info("Closing connection from %s on listener %s: SASL authentication not "
                 "completed within connections.max.idle.ms (%d)", self.client, self.listener,
                 self.max_idle_s * 1000)
        self.transport.abort()

    def _arm_idle_timer(self) -> None:
        if self.max_idle_s is None:
            return
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_at(self.protocol.last_active + self.max_idle_s,
                                        self._check_idle)

    def _check_idle(self) -> None:
        """As Kafka: idle is the time since the last bytes read or written; a request in
        progress (a parked fetch, a Produce waiting for replication) is not idle, but one
        whose response waits for a client that does not read is."""
        self._idle_timer = None
        transport = self.transport
        if transport.is_closing():
            return
        now = asyncio.get_running_loop().time()
        if (self._busy or self._pipeline) and not self.protocol.writing_paused:
            self.protocol.last_active = now
        elif now - self.protocol.last_active >= self.max_idle_s:
            log.debug("Closing connection from %s: idle for more than "
                      "connections.max.idle.ms (%d)", self.client, self.max_idle_s * 1000)
            if transport.get_write_buffer_size():
                transport.abort()  # the client reads nothing: do not wait for it
            else:
                transport.close()
            return
        self._arm_idle_timer()

    async def _respond(self, response) -> bool:
        """Write one response (None: nothing to write); False if the client is gone."""
        if response is None:
            return True
        transport = self.transport
        if transport.is_closing():
            return False  # the client went away while its request waited (a parked fetch)
        if isinstance(response, RawResponse):
            await self._write_parts(response.parts)
        else:
            transport.write(response)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            await self.protocol.drain()
        return True

    # --- Produce requests that wait for replication, pipelined -----------------------------
    # An acks=all Produce whose records are appended waits for the followers; meanwhile the
    # next request, if it is a Produce too, is taken on (up to MAX_PIPELINED_PRODUCES
    # waiting), so a producer with several requests in flight keeps the followers busy.
    # Records are still appended in the order of the requests, one request at a time, and
    # the responses are written in that order by `_write_pipeline`. Any other request waits
    # until every earlier response is written.

    async def _produce(self, frame: bytes | bytearray) -> bool:
        """Start a Produce request; returns once it is answered, or once its records are
        appended and it waits for replication (it is then answered by `_write_pipeline`).
        False if the connection is to close."""
        idle = not self._pipeline and self._pipeline_writer is None
        if idle and peek_produce_acks(frame) in (0, 1):
            # nothing waits for replication: handled inline, like any other request
            try:
                response = await self._dispatch(frame)
            except CloseConnection as e:
                log.warning("Closing connection from %s: %s", self.client, e)
                return False
            return await self._respond(response)
        while len(self._pipeline) >= MAX_PIPELINED_PRODUCES:
            if not await self._pipeline_progress():
                return False
        loop = asyncio.get_running_loop()
        progress = loop.create_future()  # the request is answered, or its records appended

        def advance(_task: object = None) -> None:
            if not progress.done():
                progress.set_result(None)

        task = loop.create_task(self._dispatch(frame, advance))
        task.add_done_callback(advance)
        waited = False  # `progress` stays bound: `advance` may still run after this
        if not self._pipeline and self._pipeline_writer is None:
            await progress
            waited = True
            if task.done():  # answered at once (an error, or replicated already)
                try:
                    response = task.result()
                except CloseConnection as e:
                    log.warning("Closing connection from %s: %s", self.client, e)
                    return False
                return await self._respond(response)
        self._pipeline.append(task)
        if self._pipeline_writer is None:
            self._pipeline_writer = loop.create_task(self._write_pipeline())
        if not waited:
            await progress
        if task.done() and not task.cancelled() and task.exception() is not None:
            # it closes the connection once the responses before it are written: take no
            # further request
            await self._pipeline_done()
            return False
        return not self.transport.is_closing()

    async def _write_pipeline(self) -> None:
        """Write the responses of pipelined Produce requests in order, as each is ready."""
        try:
            while self._pipeline:
                task = self._pipeline[0]
                try:
                    response = await task
                except CloseConnection as e:
                    log.warning("Closing connection from %s: %s", self.client, e)
                    self.transport.close()
                    return
                self._pipeline.popleft()
                self._wake_pipeline()
                if not await self._respond(response):
                    self.transport.close()
                    return
        except (ConnectionError, RuntimeError):
            self.transport.close()
        except Exception:  # a bug here must not leave the connection hanging
            log.exception("Writing responses to %s failed", self.client)
            self.transport.close()
        finally:
            self._pipeline_writer = None
            self._wake_pipeline()

    def _wake_pipeline(self) -> None:
        waiter, self._pipeline_waiter = self._pipeline_waiter, None
        _resolve(waiter)

    async def _pipeline_progress(self) -> bool:
        """Wait until the pipeline writer answers a request (or stops); False if the
        connection is closing."""
        if self._pipeline_writer is None:
            return not self._pipeline and not self.transport.is_closing()
        self._pipeline_waiter = asyncio.get_running_loop().create_future()
        await self._pipeline_waiter
        return not self.transport.is_closing()

    async def _pipeline_done(self) -> bool:
        """Wait until every pipelined response is written; False if the connection is
        closing."""
        while self._pipeline_writer is not None:
            if not await self._pipeline_progress():
                return False
        return not self.transport.is_closing()

    async def _write_parts(self, parts: list) -> None:
        """Write a framed Fetch response: bytes and small hot slices (read with pread
        before anything else) are gathered and handed to the transport in one `writelines`
        (one send for the whole response when it is small, as most tailing fetches are),
        so a small response costs one pread and one send; large hot slices go
        with sendfile straight from the segment file when the transport has nothing queued
        (so ordering holds). Cold slices (maybe only on disk) are read in an executor, so
        the disk never holds up the event loop.

        Every other slice is read through a duplicate of its segment's descriptor, made before the
        first await: while the response waits for the client, the segment may be closed
        (topic deletion, shutdown) and its descriptor number given to another file; the
        duplicate still reads the file the records were found in."""
        await self._write_held(*self._hold_parts(parts))

    @staticmethod
    def _hold_parts(parts: list) -> tuple[list, list[int]]:
        """A response's parts taken before any await: small hot slices are read now (no
        duplicate needed), the others get a duplicate of their descriptor (-1 for bytes),
        which `_write_held` closes."""
        parts = [part if isinstance(part, bytes) else part.data if part.data is not None
                 else part if part.cold or part.size >= SENDFILE_MIN_BYTES
                 else os.pread(part.fd, part.size, part.position) for part in parts]
        fds: list[int] = []
        try:
            for part in parts:
                fds.append(-1 if isinstance(part, bytes) else os.dup(part.fd))
        except OSError:  # out of descriptors: none of those taken is left open
            _close_all(fds)
            raise
        return parts, fds

    async def _write_held(self, parts: list, fds: list[int]) -> None:
        """Write the parts `_hold_parts` took, as `_write_parts` describes."""
        transport = self.transport
        pending: list = []  # gathered for one writelines
        try:
            for i, part in enumerate(parts):
                if isinstance(part, bytes):
                    pending.append(part)
                    continue
                fd = fds[i]
                if part.cold:
                    if pending:
                        transport.writelines(pending)
                        pending = []
                    if transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
                        await self.protocol.drain()  # hold at most one cold slice more
                    fds[i] = -1  # read_cold closes it
                    transport.write(await asyncio.get_running_loop().run_in_executor(
                        None, read_cold, fd, part.size, part.position))
                    continue
                position, remaining = part.position, part.size
                if remaining >= SENDFILE_MIN_BYTES and self._sock_fd >= 0:
                    if pending:
                        transport.writelines(pending)
                        pending = []
                    if transport.get_write_buffer_size():
                        await self.protocol.drain()
                    while remaining and not transport.get_write_buffer_size():
                        try:
                            sent = os.sendfile(self._sock_fd, fd, position, remaining)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            self._sock_fd = -1
                            break
                        if sent == 0:
                            break
                        position += sent
                        remaining -= sent
                if remaining and self._sock_fd < 0 and remaining >= SENDFILE_MIN_BYTES:
                    # TLS: in pieces, each handed to the transport before the next is
                    # read, so a large fetch holds at most a few pieces in memory
                    if pending:
                        transport.writelines(pending)
                        pending = []
                    while remaining:
                        n = min(remaining, TLS_CHUNK_BYTES)
                        transport.write(os.pread(fd, n, position))
                        position += n
                        remaining -= n
                        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
                            await self.protocol.drain()
                if remaining:
                    pending.append(os.pread(fd, remaining, position))
            if pending:
                transport.writelines(pending)
        finally:
            _close_all(fds)
        if self.protocol.writing_paused or transport.is_closing():
            await self.protocol.drain()


def _close_all(fds: list[int]) -> None:
    """Close the descriptors still open in `fds` (-1 once closed, so twice is harmless)."""
    for i, fd in enumerate(fds):
        if fd >= 0:
            fds[i] = -1
            os.close(fd)


def _resolve(waiter: asyncio.Future | None) -> None:
    """Wake whoever awaits `waiter` (if anyone still does)."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
