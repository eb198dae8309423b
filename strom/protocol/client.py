"""A small asyncio client for broker-to-broker requests (a follower's Fetch and
OffsetForLeaderEpoch to the partition leader, and anything else that speaks to a broker).

    conn = BrokerConnection("127.0.0.1", 9092, client_id="strom-replica-fetcher-1")
    await conn.connect()
    response = await conn.request(request)   # any kio request entity, any version kio has
    await conn.close()

Framing as on the server side (see messages.py): int32 size, request header v1 (v2 for a
flexible request), body; the response header is v0 or v1 per the response schema (always
v0 for ApiVersions). Requests on one connection may be concurrent: each is written whole
and queued, and since a broker answers a connection's requests in order, responses are
matched to the queue in order, with the correlation id checked. Produce with acks=0 gets no
response (as in Kafka): `request` returns None once it is written.

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
import struct
from dataclasses import dataclass
from typing import Any

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

__all__ = ["BrokerConnection", "BrokerConnectionError"]


class BrokerConnectionError(ConnectionError):
    """The connection failed (and is closed): reconnect to retry."""


@dataclass(slots=True)
class _InFlight:
    correlation_id: int
    api_key: int
    api_version: int
    future: asyncio.Future


class BrokerConnection:
    def __init__(self, host: str, port: int, client_id: str = "strom",
                 timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task | None = None
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
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise BrokerConnectionError(
                f"connecting to {self.host}:{self.port} timed out after "
                f"{self.timeout_s:g} s") from None
        except OSError as e:
            raise BrokerConnectionError(
                f"cannot connect to {self.host}:{self.port}: {e}") from e
        self._reader, self._writer = reader, writer
        self._in_flight.clear()
        self._error = None
        self._closed = False
        self._read_task = asyncio.get_running_loop().create_task(
            self._read_loop(reader), name=f"broker-connection-{self.host}:{self.port}")

    async def request(self, request: Any) -> Any:
        """Send one kio request entity and return the kio response entity of the same
        version (None for Produce with acks=0). Raises BrokerConnectionError."""
        api_key, api_version = request_api(request)
        if self._closed or self._writer is None:
            reason = f" ({self._error})" if self._error is not None else ""
            raise BrokerConnectionError(
                f"connection to {self.host}:{self.port} is not open{reason}")
        correlation_id = next(self._correlation_ids) & 0x7FFFFFFF
        frame = encode_request(correlation_id, self.client_id, request)
        wants_response = expects_response(request)
        fut: asyncio.Future | None = None
        if wants_response:
            fut = asyncio.get_running_loop().create_future()
            self._in_flight.append(_InFlight(correlation_id, api_key, api_version, fut))
        what = f"{api_name(api_key)} v{api_version} (correlation id {correlation_id})"
        try:
            async with asyncio.timeout(self.timeout_s):
                # queued and written with no await in between: frames go out in queue order
                self._writer.write(frame)
                await self._writer.drain()
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

    async def close(self) -> None:
        """Close the connection; requests in flight fail with BrokerConnectionError."""
        self._fail(BrokerConnectionError(f"connection to {self.host}:{self.port} was closed"),
                   abort=False)
        task, self._read_task = self._read_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    # --- internals ----------------------------------------------------------------------
    def _fail(self, error: BrokerConnectionError, abort: bool = True
              ) -> BrokerConnectionError:
        """Close the transport and fail every request in flight with `error`; the first
        failure is the one reported to later callers."""
        if not self._closed:
            self._closed = True
            self._error = error
            if abort:
                log.info("%s:%d: %s", self.host, self.port, error)
            if self._writer is not None:
                if abort:
                    self._writer.transport.abort()
                else:
                    self._writer.close()
            if self._read_task is not None and self._read_task is not asyncio.current_task():
                self._read_task.cancel()
        error = self._error or error
        while self._in_flight:
            entry = self._in_flight.popleft()
            if not entry.future.done():
                entry.future.set_exception(error)
                entry.future.exception()  # retrieved: a cancelled caller must not warn
        return error

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        where = f"{self.host}:{self.port}"
        try:
            while True:
                head = await reader.readexactly(4)
                (size,) = _INT32.unpack(head)
                if not 4 <= size <= MAX_RESPONSE_BYTES:
                    raise BrokerConnectionError(f"bad response size {size} from {where}")
                frame = await reader.readexactly(size)
                if not self._in_flight:
                    raise BrokerConnectionError(
                        f"unexpected response from {where} with no request in flight")
                entry = self._in_flight.popleft()
                got = response_correlation_id(frame)
                if got != entry.correlation_id:
                    self._in_flight.appendleft(entry)
                    raise BrokerConnectionError(
                        f"correlation id mismatch from {where}: expected "
                        f"{entry.correlation_id} ({api_name(entry.api_key)}), got {got}")
                if entry.future.done():  # its caller was cancelled
                    continue
                try:
                    response = parse_response(entry.api_key, entry.api_version, frame)
                except MalformedResponse as e:
                    self._in_flight.appendleft(entry)
                    raise BrokerConnectionError(f"malformed response from {where}: {e}") \
                        from None
                entry.future.set_result(response)
        except asyncio.CancelledError:
            raise
        except asyncio.IncompleteReadError as e:
            self._fail(BrokerConnectionError(
                f"connection closed by {where} ({len(e.partial)} bytes of a frame read)"
                if e.partial else f"connection closed by {where}"))
        except BrokerConnectionError as e:
            self._fail(e)
        except OSError as e:
            self._fail(BrokerConnectionError(f"connection to {where} failed: {e!r}"))
        except Exception as e:  # a bug here must not leave callers waiting forever
            log.exception("Reading from %s failed", where)
            self._fail(BrokerConnectionError(f"reading from {where} failed: {e!r}"))
