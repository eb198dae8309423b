"""A loopback TCP proxy in front of one broker that records every Fetch it forwards.

Tests and benches put it between followers (or clients) and a leader, by advertising the
proxy's address as the leader's listener, to see what goes over the wire:

    proxy = FetchProxy(leader.port).start()
    leader.overrides["advertised.listeners"] = f"PLAINTEXT://{proxy.address}"
    ...
    [x for x in proxy.exchanges() if x.client_id == "strom-replica-fetcher-2"]

Frames are forwarded unchanged. For each Fetch request (v7+, the versions with sessions) it
records the client id, the request's size, session id and epoch, and, once the answer
comes, the response's size, error code and session id (`FetchExchange`). `reset()` drops
every connection (both sides), as a network failure would; `close()` stops it.
Each connection is pumped by two daemon threads; nothing here is timed.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

from strom.testing.processes import HOST

__all__ = ["FetchExchange", "FetchProxy"]

_FETCH = 1
_FIRST_FLEXIBLE_FETCH = 12
_REQUEST_HEAD = struct.Struct(">hhih")  # api key, version, correlation id, client id size
_SESSION = struct.Struct(">iiiibii")  # replica, max wait, min/max bytes, isolation, id, epoch
_RESPONSE_SESSION = struct.Struct(">ihi")  # throttle, error code, session id


@dataclass(slots=True)
class FetchExchange:
    client_id: str
    version: int
    request_bytes: int  # the whole frame, size prefix included
    session_id: int
    session_epoch: int
    response_bytes: int = -1  # -1: no answer (yet)
    error_code: int = -1
    response_session_id: int = -1


def _skip_tagged_fields(frame: bytes, pos: int) -> int:
    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = frame[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, pos
            shift += 7

    count, pos = varint(pos)
    for _ in range(count):
        _tag, pos = varint(pos)
        size, pos = varint(pos)
        pos += size
    return pos


def _recv_frame(sock: socket.socket) -> bytes | None:
    """One whole frame with its size prefix, or None at end of stream."""
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    body = _recv_exact(sock, struct.unpack(">i", head)[0])
    return None if body is None else head + body


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class FetchProxy:
    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._exchanges: list[FetchExchange] = []
        self._sockets: set[socket.socket] = set()
        self._closed = False

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> FetchProxy:
        threading.Thread(target=self._accept, name="fetch-proxy-accept", daemon=True).start()
        return self

    def exchanges(self, client_id: str | None = None) -> list[FetchExchange]:
        with self._lock:
            return [x for x in self._exchanges if client_id is None or x.client_id == client_id]

    def reset(self) -> None:
        """Drop every connection open now (clients reconnect through the proxy)."""
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for s in sockets:
            _shut(s)

    def close(self) -> None:
        self._closed = True
        _shut(self._listener)
        self.reset()

    def __enter__(self) -> FetchProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pumping ----------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                _shut(client)
                continue
            with self._lock:
                self._sockets.update((client, server))
            pending: dict[int, FetchExchange] = {}
            for args in ((client, server, pending, True), (server, client, pending, False)):
                threading.Thread(target=self._pump, args=args, name="fetch-proxy-pump",
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pending: dict[int, FetchExchange],
              requests: bool) -> None:
        try:
            while True:
                frame = _recv_frame(src)
                if frame is None:
                    return
                if requests:
                    self._saw_request(frame, pending)
                else:
                    self._saw_response(frame, pending)
                dst.sendall(frame)
        except OSError:
            return
        finally:
            _shut(src)
            _shut(dst)

    def _saw_request(self, frame: bytes, pending: dict[int, FetchExchange]) -> None:
        api_key, version, correlation, id_size = _REQUEST_HEAD.unpack_from(frame, 4)
        if api_key != _FETCH or version < 7:
            return
        pos = 4 + _REQUEST_HEAD.size
        client_id = frame[pos:pos + max(id_size, 0)].decode("utf-8", "replace")
        pos += max(id_size, 0)
        if version >= _FIRST_FLEXIBLE_FETCH:
            pos = _skip_tagged_fields(frame, pos)
        if version >= 15:  # replica_id moved out of the body (KIP-903): one i32 fewer
            _max_wait, _min, _max, _iso, sid, epoch = struct.unpack_from(">iiibii", frame, pos)
        else:
            _replica, _max_wait, _min, _max, _iso, sid, epoch = _SESSION.unpack_from(frame, pos)
        x = FetchExchange(client_id, version, len(frame), sid, epoch)
        with self._lock:
            self._exchanges.append(x)
        pending[correlation] = x

    def _saw_response(self, frame: bytes, pending: dict[int, FetchExchange]) -> None:
        correlation = struct.unpack_from(">i", frame, 4)[0]
        x = pending.pop(correlation, None)
        if x is None:
            return
        pos = 8
        if x.version >= _FIRST_FLEXIBLE_FETCH:
            pos = _skip_tagged_fields(frame, pos)
        _throttle, error, sid = _RESPONSE_SESSION.unpack_from(frame, pos)
        with self._lock:
            x.response_bytes, x.error_code, x.response_session_id = len(frame), error, sid


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
