"""The HTTP endpoint Prometheus scrapes: `/metrics`, `/healthz`, `/readyz`.

A small HTTP/1.1 server on the broker's event loop (asyncio streams). A scrape first awaits
`prepare` on the loop (the broker's state is copied: snapshot.py), then Prometheus' own
client library builds and encodes the answer in the `strom-metrics` thread (text format
0.0.4, or OpenMetrics when the scraper's Accept header asks for it), one scrape at a time,
so a large broker's scrape shares the CPU with the loop instead of stopping it. This
module only frames requests and answers.

One request per connection (`Connection: close`), and everything bounded so that no
client of this port can hurt the broker: at most MAX_CLIENTS connections at once (more are
closed at once), a request head of at most MAX_HEAD_BYTES read within HEAD_TIMEOUT_S (a
slow or silent client is dropped), a body is never read, and writing the answer gives up
after WRITE_TIMEOUT_S. Answers: 200, 404 for another path, 405 for another method than
GET or HEAD, 400 for a head that does not parse, 503 from /readyz until the broker is
ready.

Owned by the event loop: `start` and `close` from it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

MAX_CLIENTS = 16
MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 10.0
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           503: "Service Unavailable"}


class MetricsEndpoint:
    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 ready: Callable[[], str | None],
                 prepare: Callable[[], Awaitable[None]] | None = None) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.ready = ready  # None when ready, else why not
        self.prepare = prepare  # awaited on the loop before the registry is collected
        self.server: asyncio.Server | None = None
        self.clients: set[asyncio.Task] = set()
        self._render = asyncio.Lock()  # one scrape renders at a time
        self._renderer = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="strom-metrics")

    async def start(self) -> None:
        """Listen; a port in use (or any other bind failure) stops start-up with a clear
        message, as for the Kafka listeners."""
        try:
            self.server = await asyncio.start_server(
                self._serve, self.host or "0.0.0.0", self.port, limit=MAX_HEAD_BYTES,
                reuse_address=True)
        except OSError as e:
            raise SystemExit(f"Cannot listen on metrics.listener "
                             f"http://{self.host}:{self.port}: {e.strerror or e}") from None
        sock = self.server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("Metrics endpoint on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.clients):
            task.cancel()
        if self.clients:
            await asyncio.wait(self.clients, timeout=1)
        self._renderer.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        task = asyncio.current_task()
        if len(self.clients) >= MAX_CLIENTS or task is None:
            writer.transport.abort()
            return
        self.clients.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("Metrics endpoint: unexpected error")
        finally:
            self.clients.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await self._send(writer, 400, b"bad request\n")
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._send(writer, 400, b"bad request\n")
            return
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            await self._send(writer, 405, b"method not allowed\n", head_only=False,
                             extra="Allow: GET, HEAD\r\n")
            return
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            async with self._render:
                if self.prepare is not None:
                    await self.prepare()
                body = await asyncio.get_running_loop().run_in_executor(
                    self._renderer, encoder, self.registry)
            await self._send(writer, 200, body, head_only, content_type=content_type)
        elif path == "/healthz":
            await self._send(writer, 200, b"ok\n", head_only)
        elif path == "/readyz":
            why = self.ready()
            if why is None:
                await self._send(writer, 200, b"ready\n", head_only)
            else:
                await self._send(writer, 503, f"not ready: {why}\n".encode(), head_only)
        else:
            await self._send(writer, 404, b"not found\n", head_only)

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                    head_only: bool = False, content_type: str = "text/plain; charset=utf-8",
                    extra: str = "") -> None:
        head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode()
        writer.write(head if head_only else head + body)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()
        writer.close()
