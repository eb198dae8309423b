"""One client connection: read frames, dispatch them in order, write the responses.

Requests on a connection are handled one at a time, in order, as Kafka does (clients may
pipeline; their requests wait in the socket buffer). A frame larger than
socket.request.max.bytes, a frame that does not parse, or any protocol violation closes
the connection after one log line; other connections are not affected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct

from strom.api.fetch import RawResponse
from strom.server.dispatcher import CloseConnection, Dispatcher

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
# file slices below this size are copied (pread) rather than sent with sendfile
SENDFILE_MIN_BYTES = 64 * 1024


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 dispatcher: Dispatcher, max_request_size: int, listener: str) -> None:
        self.reader = reader
        self.writer = writer
        self.dispatcher = dispatcher
        self.max_request_size = max_request_size
        self.listener = listener
        peer = writer.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        self.client_host = f"/{peer[0]}" if peer else ""  # as Kafka shows it in groups
        sock = writer.get_extra_info("socket")
        self._sock_fd = sock.fileno() if sock is not None else -1

    async def serve(self) -> None:
        reader, writer = self.reader, self.writer
        try:
            while True:
                try:
                    head = await reader.readexactly(4)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                size = _SIZE.unpack(head)[0]
                if size < 0 or size > self.max_request_size:
                    log.warning("Closing connection from %s: request size %d is outside "
                                "0..socket.request.max.bytes (%d)", self.client, size,
                                self.max_request_size)
                    return
                try:
                    frame = await reader.readexactly(size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                try:
                    response = await self.dispatcher.dispatch(frame, self.client, self.client_host,
                                                              self.listener)
                except CloseConnection as e:
                    log.warning("Closing connection from %s: %s", self.client, e)
                    return
                if response is None:
                    continue
                if writer.transport.is_closing():
                    return  # the client went away while its request waited (a parked fetch)
                if isinstance(response, RawResponse):
                    await self._write_parts(response.parts)
                else:
                    writer.write(response)
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
        except (ConnectionError, RuntimeError) as e:
            # uvloop raises RuntimeError when writing to a transport the peer reset
            if isinstance(e, RuntimeError) and not writer.transport.is_closing():
                raise
            return
        finally:
            writer.close()

    async def _write_parts(self, parts: list) -> None:
        """Write a framed Fetch response: bytes through the transport, record slices with
        sendfile straight from the segment file when the transport has nothing queued
        (so ordering holds), else copied with pread."""
        writer = self.writer
        transport = writer.transport
        for part in parts:
            if isinstance(part, bytes):
                writer.write(part)
                continue
            position, remaining = part.position, part.size
            if remaining >= SENDFILE_MIN_BYTES and self._sock_fd >= 0:
                if transport.get_write_buffer_size():
                    await writer.drain()
                while remaining and not transport.get_write_buffer_size():
                    try:
                        sent = os.sendfile(self._sock_fd, part.fd, position, remaining)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        self._sock_fd = -1
                        break
                    if sent == 0:
                        break
                    position += sent
                    remaining -= sent
            if remaining:
                writer.write(os.pread(part.fd, remaining, position))
        await writer.drain()
