"""A tiny, independent Kafka wire encoder/decoder for raw-socket tests.

Written with `struct` from the protocol documentation, deliberately sharing no code with the
broker, so a test built on it is a second opinion on the bytes. It knows only what the
bad-input tests need:

- request framing: int32 size, then header v1 (api_key, api_version, correlation_id,
  client_id) or v2 (v1 + empty tagged fields), then the body;
- ApiVersions v0 request and the v0 response (which is also the shape of the
  UNSUPPORTED_VERSION answer to a too-new ApiVersions);
- Produce v3..v8 (non-flexible) request and response;
- Fetch v4 request and response;
- v2 record batches (uncompressed), with a valid or a deliberately wrong CRC-32C.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import crc32c

from strom.protocol.varint import uvarint, varint

__all__ = [
    "Closed",
    "KafkaSocket",
    "Record",
    "api_versions_flexible",
    "api_versions_v0",
    "encode_record_batch",
    "fetch_v4",
    "fetch_v4_many",
    "frame",
    "init_producer_id_v1",
    "parse_init_producer_id_v1",
    "parse_api_versions_v0",
    "parse_fetch_v4",
    "parse_produce",
    "produce",
    "request",
    "split_batches",
]

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_API_VERSIONS = 18
API_INIT_PRODUCER_ID = 22

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


# -- primitive encoders --------------------------------------------------------------------

def i16(v: int) -> bytes:
    return _I16.pack(v)


def i32(v: int) -> bytes:
    return _I32.pack(v)


def i64(v: int) -> bytes:
    return _I64.pack(v)


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def nbytes(b: bytes | None) -> bytes:
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


# -- requests ------------------------------------------------------------------------------

def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


def request(api_key: int, api_version: int, correlation_id: int, body: bytes,
            *, client_id: str | None = "strom-wire-test", header_version: int = 1) -> bytes:
    """A framed request with header v1 (or v2: with an empty tagged-field section)."""
    header = i16(api_key) + i16(api_version) + i32(correlation_id) + string(client_id)
    if header_version >= 2:
        header += uvarint(0)
    return frame(header + body)


def api_versions_v0(correlation_id: int = 1) -> bytes:
    return request(API_API_VERSIONS, 0, correlation_id, b"")


def api_versions_flexible(version: int, correlation_id: int = 1) -> bytes:
    """ApiVersions at a flexible version (3+, or a future one): header v2 and a v3 body."""
    body = compact_string("strom-wire-test") + compact_string("0.0.1") + uvarint(0)
    return request(API_API_VERSIONS, version, correlation_id, body, header_version=2)


def produce(topic: str, partition: int, records: bytes | None, *, version: int = 8,
            acks: int = -1, timeout_ms: int = 10000, correlation_id: int = 1,
            transactional_id: str | None = None) -> bytes:
    """Produce v3..v8: one topic, one partition."""
    if not 3 <= version <= 8:
        raise ValueError("this encoder writes Produce v3..v8 only")
    body = (string(transactional_id) + i16(acks) + i32(timeout_ms)
            + i32(1) + string(topic) + i32(1) + i32(partition) + nbytes(records))
    return request(API_PRODUCE, version, correlation_id, body)


def fetch_v4(topic: str, partition: int, offset: int, *, max_wait_ms: int = 100,
             min_bytes: int = 1, max_bytes: int = 1 << 20, partition_max_bytes: int = 1 << 20,
             correlation_id: int = 1, replica_id: int = -1) -> bytes:
    """Fetch v4 for one partition (as a consumer, or as broker `replica_id`)."""
    return fetch_v4_many([(topic, partition, offset, partition_max_bytes)],
                         max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
                         correlation_id=correlation_id, replica_id=replica_id)


def fetch_v4_many(partitions: list[tuple[str, int, int, int]], *, max_wait_ms: int = 100,
                  min_bytes: int = 1, max_bytes: int = 1 << 20,
                  correlation_id: int = 1, replica_id: int = -1) -> bytes:
    """Fetch v4 for (topic, partition, offset, partition_max_bytes) entries, grouped by
    topic in the order given."""
    topics: dict[str, list[tuple[int, int, int]]] = {}
    for t, p, off, pmax in partitions:
        topics.setdefault(t, []).append((p, off, pmax))
    body = i32(replica_id) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + _I8.pack(0)
    body += i32(len(topics))
    for t, parts in topics.items():
        body += string(t) + i32(len(parts))
        for p, off, pmax in parts:
            body += i32(p) + i64(off) + i32(pmax)
    return request(API_FETCH, 4, correlation_id, body)


def init_producer_id_v1(correlation_id: int = 1, transaction_timeout_ms: int = 60000) -> bytes:
    """InitProducerId v1 for an idempotent (non-transactional) producer."""
    return request(API_INIT_PRODUCER_ID, 1, correlation_id,
                   string(None) + i32(transaction_timeout_ms))


# -- record batches ------------------------------------------------------------------------

@dataclass
class Record:
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_delta: int = 0


def _encode_record(offset_delta: int, r: Record) -> bytes:
    body = bytearray()
    body += b"\x00"  # attributes
    body += varint(r.timestamp_delta)
    body += varint(offset_delta)
    for part in (r.key, r.value):
        if part is None:
            body += varint(-1)
        else:
            body += varint(len(part)) + part
    body += varint(len(r.headers))
    for hk, hv in r.headers:
        kb = hk.encode()
        body += varint(len(kb)) + kb
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def encode_record_batch(records: list[Record], *, base_timestamp: int | None = None,
                        producer_id: int = -1, producer_epoch: int = -1,
                        base_sequence: int = -1, corrupt_crc: bool = False,
                        offset_deltas: list[int] | None = None,
                        transactional: bool = False) -> bytes:
    """An uncompressed magic-2 batch with base offset 0 (the broker assigns offsets).
    `offset_deltas` overrides the records' offsetDelta fields (0, 1, ... by default);
    `transactional` sets the isTransactional attribute (bit 4)."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    deltas = offset_deltas if offset_deltas is not None else range(len(records))
    recs = b"".join(_encode_record(d, r) for d, r in zip(deltas, records, strict=True))
    max_ts = base_timestamp + max((r.timestamp_delta for r in records), default=0)
    after_crc = (i16(0x10 if transactional else 0) + i32(len(records) - 1) + i64(base_timestamp) + i64(max_ts)
                 + i64(producer_id) + i16(producer_epoch) + i32(base_sequence)
                 + i32(len(records)) + recs)
    crc = crc32c.crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_length = i32(0) + _I8.pack(2) + struct.pack(">I", crc) + after_crc
    return i64(0) + i32(len(after_length)) + after_length


def split_batches(records: bytes | None) -> tuple[list[tuple[int, int, bytes]], int]:
    """Cut a Fetch response's records into whole batches: ([(base_offset, last_offset,
    batch bytes)], number of trailing bytes that do not form a whole batch)."""
    out: list[tuple[int, int, bytes]] = []
    data = records or b""
    pos = 0
    while len(data) - pos >= 12:
        base = _I64.unpack_from(data, pos)[0]
        size = 12 + _I32.unpack_from(data, pos + 8)[0]
        if len(data) - pos < size or size < 61:
            break
        last_delta = _I32.unpack_from(data, pos + 23)[0]
        out.append((base, base + last_delta, data[pos:pos + size]))
        pos += size
    return out, len(data) - pos


# -- responses -----------------------------------------------------------------------------

class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, s: struct.Struct) -> int:
        (v,) = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return v

    def i8(self) -> int:
        return self._take(_I8)

    def i16(self) -> int:
        return self._take(_I16)

    def i32(self) -> int:
        return self._take(_I32)

    def i64(self) -> int:
        return self._take(_I64)

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def nbytes(self) -> bytes | None:
        n = self.i32()
        if n < 0:
            return None
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def skip_tags(self) -> None:
        """Skip a flexible version's tagged fields."""
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()

    def remaining(self) -> int:
        return len(self.data) - self.pos


@dataclass
class ApiVersionsV0:
    correlation_id: int
    error_code: int
    api_keys: dict[int, tuple[int, int]]


def parse_api_versions_v0(payload: bytes) -> ApiVersionsV0:
    """Response header v0 + ApiVersions v0 body."""
    r = Reader(payload)
    cid = r.i32()
    err = r.i16()
    n = r.i32()
    keys = {}
    for _ in range(max(n, 0)):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        keys[k] = (lo, hi)
    return ApiVersionsV0(cid, err, keys)


def parse_init_producer_id_v1(payload: bytes) -> tuple[int, int, int, int]:
    """(correlation_id, error_code, producer_id, producer_epoch)."""
    r = Reader(payload)
    cid = r.i32()
    r.i32()  # throttle_time_ms
    return cid, r.i16(), r.i64(), r.i16()


@dataclass
class ProducePartitionResult:
    topic: str
    partition: int
    error_code: int
    base_offset: int
    log_append_time: int
    log_start_offset: int | None = None
    record_errors: list[tuple[int, str | None]] = field(default_factory=list)
    error_message: str | None = None


def parse_produce(payload: bytes, version: int = 8) -> tuple[int, list[ProducePartitionResult]]:
    """Response header v0 + Produce v3..v8 body; returns (correlation_id, results)."""
    r = Reader(payload)
    cid = r.i32()
    out = []
    for _ in range(r.i32()):
        topic = r.string()
        for _ in range(r.i32()):
            res = ProducePartitionResult(topic, r.i32(), r.i16(), r.i64(), r.i64())
            if version >= 5:
                res.log_start_offset = r.i64()
            if version >= 8:
                for _ in range(max(r.i32(), 0)):
                    res.record_errors.append((r.i32(), r.string()))
                res.error_message = r.string()
            out.append(res)
    return cid, out


@dataclass
class FetchPartitionResult:
    topic: str
    partition: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    records: bytes | None


def parse_fetch_v4(payload: bytes) -> tuple[int, list[FetchPartitionResult]]:
    r = Reader(payload)
    cid = r.i32()
    r.i32()  # throttle_time_ms
    out = []
    for _ in range(r.i32()):
        topic = r.string()
        for _ in range(r.i32()):
            part, err, hw, lso = r.i32(), r.i16(), r.i64(), r.i64()
            n_aborted = r.i32()
            for _ in range(max(n_aborted, 0)):
                r.i64()
                r.i64()
            out.append(FetchPartitionResult(topic, part, err, hw, lso, r.nbytes()))
    return cid, out


# -- a blocking socket with bounded reads --------------------------------------------------

class Closed(Exception):
    """The broker closed the connection."""


class KafkaSocket:
    """A blocking TCP connection with a timeout on every read."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.local_port  # noqa: B018 - fail early if the socket is unusable

    @property
    def local_port(self) -> int:
        """Our side's port: how the broker's log names this connection."""
        return self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError as e:
                raise Closed("connection reset") from e
            if not chunk:
                raise Closed(f"EOF after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        """One response payload (without its size prefix). Raises Closed on EOF/reset and
        socket.timeout when nothing arrives in time."""
        (size,) = _I32.unpack(self._recv_exact(4))
        return self._recv_exact(size)

    def roundtrip(self, data: bytes) -> bytes:
        self.send(data)
        return self.recv_frame()

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """True when the broker closes the connection (EOF or reset) within `timeout`,
        discarding anything it sends first; False when it is still open then."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                return False
            if not chunk:
                return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> KafkaSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
