"""A small asyncio client for broker-to-broker requests (a follower's Fetch and
OffsetForLeaderEpoch to the partition leader, and anything else that speaks to a broker).

    conn = BrokerConnection("127.0.0.1", 9092, client_id="strom-replica-fetcher-1")
    await conn.connect()
    response = await conn.request(request)   # any kio request entity, any version kio has
    frame = await conn.request_frame(request)  # the same, unparsed (see below)
    await conn.close()

Framing as on the server side (see messages.py): int32 size, request header v1 (v2 for a
flexible request), body; the response header is v0 or v1 per the response schema (always
v0 for ApiVersions). Requests on one connection may be concurrent: each is written whole
and queued, and since a broker answers a connection's requests in order, responses are
matched to the queue in order, with the correlation id checked. Produce with acks=0 gets no
response (as in Kafka): `request` returns None once it is written.

Responses are read with a buffered protocol: the kernel copies a large frame (a follower's
Fetch response, up to replica.fetch.response.max.bytes) straight into the bytearray that is
handed to the caller, so record bytes are not copied again on their way to the log.
`request_frame` returns that frame (without its size prefix) for a caller that parses it
itself (the replica fetcher, see fetch_response.decode).

With a `ClientSecurity`, the connection is made over TLS (its SSL context, the broker's
host name checked when the context asks) and then authenticated by its `authenticate`
step (a SASL exchange, see strom.security.inter_broker) before `connect` returns.

Any socket error, timeout (`timeout_s` bounds the connect and each request), EOF,
correlation id mismatch or unparsable response closes the connection, fails every request
in flight with `BrokerConnectionError` (a `ConnectionError`), and the caller reconnects
with a new connection (or `connect()` again). A request whose caller is cancelled keeps its
place in the queue, so the responses after it still match.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from strom.protocol.framing import FrameReader
from strom.protocol.messages import (
    MalformedResponse,
    api_name,
    encode_request,
    expects_response,
    parse_response,
    request_api,
    response_correlation_id,
)

log = logging.getLogger(__name__)

_INT32 = struct.Struct(">i")
MAX_RESPONSE_BYTES = 1 << 30  # a size above this is a broken stream, not a response

__all__ = ["BrokerConnection", "BrokerConnectionError", "ClientSecurity"]


class BrokerConnectionError(ConnectionError):
    """The connection failed (and is closed): reconnect to retry."""


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """How to secure a connection to a broker's listener: TLS with `ssl_context` (None:
    plain TCP), then `authenticate(conn)` (None: no SASL), which raises on failure."""

    ssl_context: ssl.SSLContext | None = None
    authenticate: Callable[[BrokerConnection], Awaitable[None]] | None = None


@dataclass(slots=True)
class _InFlight:
    correlation_id: int
    api_key: int
    api_version: int
    future: asyncio.Future
    raw: bool  # the caller wants the frame, not a parsed entity


class _FrameProtocol(FrameReader):
    """Cuts the byte stream into response frames and hands each to the connection."""

    def __init__(self, conn: BrokerConnection) -> None:
        super().__init__(MAX_RESPONSE_BYTES, min_frame_bytes=4)
        self.conn = conn
        self._failed = False
        self.lost = asyncio.get_running_loop().create_future()

    # --- reading ------------------------------------------------------------------------
    def frame_received(self, frame: bytes | bytearray) -> None:
        if not self._failed:
            self._deliver(frame)

    def bad_frame_size(self, size: int) -> None:
        self._fail(BrokerConnectionError(f"bad response size {size} from {self.conn.where}"))

    def _deliver(self, frame: bytes | bytearray) -> None:
        try:
            self.conn._on_frame(frame)
        except BrokerConnectionError as e:
            self._fail(e)
        except Exception as e:  # a bug here must not leave callers waiting forever
            log.exception("Reading from %s failed", self.conn.where)
            self._fail(BrokerConnectionError(f"reading from {self.conn.where} failed: {e!r}"))

    def _fail(self, error: BrokerConnectionError) -> None:
        self._failed = self.stopped = True
        if self.conn._protocol is self:  # not a connection closed and opened again since
            self.conn._fail(error)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        where = self.conn.where
        partial = self.partial_bytes
        if exc is not None:
            error = BrokerConnectionError(f"connection to {where} failed: {exc!r}")
        elif partial:
            error = BrokerConnectionError(
                f"connection closed by {where} ({partial} bytes of a frame read)")
        else:
            error = BrokerConnectionError(f"connection closed by {where}")
        self._fail(error)
        self.wake_writers(error)
        if not self.lost.done():
            self.lost.set_result(None)

    async def drain(self) -> None:
        if self._failed:
            raise self.conn._error or BrokerConnectionError(
                f"connection to {self.conn.where} is closed")
        await self.wait_writable()


class BrokerConnection:
    def __init__(self, host: str, port: int, client_id: str = "strom",
                 timeout_s: float = 30.0, security: ClientSecurity | None = None) -> None:
        self.security = security
        self.host = host
        self.port = port
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.where = f"{host}:{port}"
        self._protocol: _FrameProtocol | None = None
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        self._correlation_ids = itertools.count(1)
        self._closed = True
        self._error: BrokerConnectionError | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"BrokerConnection({self.host}:{self.port}, {state})"

    @property
    def closed(self) -> bool:
        """True before `connect()`, after `close()` and after any failure."""
        return self._closed

    async def connect(self) -> None:
        """Open the TCP connection (bounded by timeout_s); a no-op when already open."""
        if not self._closed:
            return
        loop = asyncio.get_running_loop()
        tls = self.security.ssl_context if self.security is not None else None
        try:
            async with asyncio.timeout(self.timeout_s):
                _transport, protocol = await loop.create_connection(
                    lambda: _FrameProtocol(self), self.host, self.port, ssl=tls,
                    server_hostname=self.host if tls is not None else None)
        except TimeoutError:
            raise BrokerConnectionError(
                f"connecting to {self.host}:{self.port} timed out after "
                f"{self.timeout_s:g} s") from None
        except OSError as e:
            raise BrokerConnectionError(
                f"cannot connect to {self.host}:{self.port}: {e}") from e
        self._protocol = protocol
        self._in_flight.clear()
        self._error = None
        self._closed = False
        if self.security is not None and self.security.authenticate is not None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.security.authenticate(self)
            except TimeoutError:
                await self.close()
                raise BrokerConnectionError(
                    f"authenticating to {self.where} timed out after "
                    f"{self.timeout_s:g} s") from None
            except BrokerConnectionError:
                await self.close()
                raise
            except Exception as e:
                await self.close()
                raise BrokerConnectionError(
                    f"authenticating to {self.where} failed: {e}") from e

    async def request(self, request: Any) -> Any:
        """Send one kio request entity and return the kio response entity of the same
        version (None for Produce with acks=0). Raises BrokerConnectionError."""
        return await self._request(request, raw=False)

    async def request_frame(self, request: Any) -> bytes | bytearray | None:
        """As `request`, but return the response frame as received (without its 4-byte
        size; the response header first), for the caller to parse."""
        return await self._request(request, raw=True)

    async def _request(self, request: Any, raw: bool) -> Any:
        api_key, api_version = request_api(request)
        protocol = self._protocol
        if self._closed or protocol is None or protocol.transport is None:
            reason = f" ({self._error})" if self._error is not None else ""
            raise BrokerConnectionError(
                f"connection to {self.host}:{self.port} is not open{reason}")
        correlation_id = next(self._correlation_ids) & 0x7FFFFFFF
        frame = encode_request(correlation_id, self.client_id, request)
        wants_response = expects_response(request)
        fut: asyncio.Future | None = None
        if wants_response:
            fut = asyncio.get_running_loop().create_future()
            self._in_flight.append(_InFlight(correlation_id, api_key, api_version, fut, raw))
        what = f"{api_name(api_key)} v{api_version} (correlation id {correlation_id})"
        try:
            async with asyncio.timeout(self.timeout_s):
                # queued and written with no await in between: frames go out in queue order
                protocol.transport.write(frame)
                await protocol.drain()
                if fut is None:
                    return None
                return await fut
        except TimeoutError:
            raise self._fail(BrokerConnectionError(
                f"{what} to {self.host}:{self.port} timed out after "
                f"{self.timeout_s:g} s")) from None
        except OSError as e:  # ConnectionResetError, BrokenPipeError, ... (and ours)
            if isinstance(e, BrokerConnectionError):
                raise
            raise self._fail(BrokerConnectionError(
                f"{what} to {self.host}:{self.port} failed: {e!r}")) from e
        except RuntimeError as e:  # uvloop: writing to a transport being closed
            raise self._fail(BrokerConnectionError(
                f"{what} to {self.host}:{self.port} failed: {e!r}")) from e

    async def close(self) -> None:
        """Close the connection; requests in flight fail with BrokerConnectionError."""
        self._fail(BrokerConnectionError(f"connection to {self.host}:{self.port} was closed"),
                   abort=False)
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(protocol.lost)

    # --- internals ----------------------------------------------------------------------
    def _on_frame(self, frame: bytes | bytearray) -> None:
        """One response frame (without its size) arrived: complete the oldest request."""
        if not self._in_flight:
            raise BrokerConnectionError(
                f"unexpected response from {self.where} with no request in flight")
        entry = self._in_flight.popleft()
        got = response_correlation_id(frame)
        if got != entry.correlation_id:
            self._in_flight.appendleft(entry)
            raise BrokerConnectionError(
                f"correlation id mismatch from {self.where}: expected "
                f"{entry.correlation_id} ({api_name(entry.api_key)}), got {got}")
        if entry.future.done():  # its caller was cancelled
            return
        if entry.raw:
            entry.future.set_result(frame)
            return
        try:
            response = parse_response(entry.api_key, entry.api_version, frame)
        except MalformedResponse as e:
            self._in_flight.appendleft(entry)
            raise BrokerConnectionError(f"malformed response from {self.where}: {e}") \
                from None
        entry.future.set_result(response)

    def _fail(self, error: BrokerConnectionError, abort: bool = True
              ) -> BrokerConnectionError:
        """Close the transport and fail every request in flight with `error`; the first
        failure is the one reported to later callers."""
        if not self._closed:
            self._closed = True
            self._error = error
            if abort:
                log.info("%s:%d: %s", self.host, self.port, error)
            transport = self._protocol.transport if self._protocol is not None else None
            if transport is not None:
                if abort:
                    transport.abort()
                else:
                    transport.close()
        error = self._error or error
        while self._in_flight:
            entry = self._in_flight.popleft()
            if not entry.future.done():
                entry.future.set_exception(error)
                entry.future.exception()  # retrieved: a cancelled caller must not warn
        return error
