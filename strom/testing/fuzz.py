"""Fuzz targets for the parsers a client or a disk feeds: shared by the short, seeded run in
CI (tests/fuzz, with hypothesis) and the long, coverage-guided run (bench/fuzz.py, with
atheris when it is installed).

Each target takes bytes and either returns (the input was handled as documented) or raises
`FuzzFailure` (or any other exception: a crash). What "handled as documented" means:

framing     a byte stream cut into frames by `FrameReader`, fed in chunks of varying
            size; the frames equal a plain reading of the size prefixes, a bad size stops
            the stream, and every frame's header and body parse or raise MalformedRequest
            / UnsupportedRequest.
dispatch    one request frame through the `Dispatcher` of a broker running in this
            process: a response that parses at the request's API and version, no response
            (Produce acks=0), or CloseConnection, within a bound (a request that may wait,
            a Fetch's max wait or a rebalance, is let go after the bound); never an
            exception the dispatcher logs as unexpected, never another exception.
batch       a produced batch through the validator (`validate_batch`, then
            `validate_records`) under topic configs that decode records (compaction, a
            compression.type other than the producer's): a header or a Kafka error
            (CorruptMessage, InvalidRecord, InvalidTimestamp, MessageTooLarge); the same
            bytes through `decode_batch`: a Batch or CorruptRecordError.
recovery    a valid log of several segments, corrupted at places the input picks (log and
            index files), opened as after a crash: no exception; what is left is a prefix
            of what was written (batch for batch, CRC valid, offsets increasing); the
            offset and time indexes point at batches that are there.

Seeds (`request_seeds`, `batch_seeds`) are valid inputs built with kio through
strom.protocol and with strom.log.records: the fuzzers mutate from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import logging
import os
import random
import shutil
import struct
import tempfile
import typing
import uuid
from collections.abc import Iterator
from typing import Any

import crc32c

from strom.api.registry import load_all
from strom.clock import ManualClock
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log.partition_log import PartitionLog
from strom.log.records import (
    Compression,
    CorruptRecordError,
    NewRecord,
    build_batch,
    decode_batch,
)
from strom.protocol import messages
from strom.protocol.batch import InvalidBatch, crc_is_valid, read_header
from strom.protocol.errors import KafkaError
from strom.protocol.framing import FrameReader

log = logging.getLogger(__name__)

TOPIC = "fuzz"
COMPACTED_TOPIC = "fuzz-compacted"
NOW_MS = 1_700_000_000_000


class FuzzFailure(AssertionError):
    """The target saw an outcome outside what its parser documents."""


# --- mutations (the CI run's stand-in for libFuzzer's mutators) -----------------------------

def mutate(seed: bytes, ops: bytes) -> bytes:
    """Apply mutations encoded in `ops` (3 bytes each: kind, position, value) to `seed`:
    overwrite, flip, insert, delete, truncate, set an int16/int32 to an edge value, put a
    5-byte varint in place of a byte. The same
    (seed, ops) always gives the same bytes."""
    out = bytearray(seed)
    edges = (0, 1, -1, 0x7F, 0x80, 0x7FFF, -0x8000, 0x7FFFFFFF, -0x80000000, 0xFF)
    for i in range(0, len(ops) - 2, 3):
        kind, where, value = ops[i] % 8, ops[i + 1], ops[i + 2]
        pos = (where * max(len(out), 1)) // 256 if out else 0
        if kind == 0 and out:
            out[pos] = value
        elif kind == 1 and out:
            out[pos] ^= 1 << (value % 8)
        elif kind == 2:
            out[pos:pos] = bytes([value]) * (1 + value % 4)
        elif kind == 3 and out:
            del out[pos:pos + 1 + value % 8]
        elif kind == 4:
            del out[pos + value % 16:]
        elif kind == 5 and pos + 2 <= len(out):
            struct.pack_into(">h", out, pos, _clamp(edges[value % len(edges)], 16))
        elif kind == 6 and pos + 4 <= len(out):
            struct.pack_into(">i", out, pos, _clamp(edges[value % len(edges)], 32))
        elif kind == 7 and out:  # a 5-byte varint: a huge compact length
            out[pos:pos + 1] = b"\xff\xff\xff\xff" + bytes([value & 0x7F])
    return bytes(out)


def _clamp(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


# --- seeds: a valid request for every API and version the broker serves ---------------------

def _sample(tp: Any, name: str, version_of: type, depth: int = 0) -> Any:
    """A plausible value of kio type `tp` for field `name`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _sample(args[0], name, version_of, depth)
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(tp)
        return (_sample(item, name, version_of, depth + 1),)
    if dataclasses.is_dataclass(tp):
        return _sample_entity(tp, depth + 1)
    if tp is bool:
        return False
    if tp is bytes:
        return b""
    if tp is uuid.UUID:
        return uuid.UUID(int=0)
    base = getattr(tp, "__supertype__", None) or tp
    if isinstance(base, type) and issubclass(base, str) or tp is str:
        if "topic" in name or name == "name" or name == "names":
            return tp(TOPIC)
        if "group" in name:
            return tp("fuzz-group")
        return tp("fuzz")
    if isinstance(base, type) and issubclass(base, datetime.timedelta):
        return tp(datetime.timedelta(milliseconds=100))
    if isinstance(base, type) and issubclass(base, bytes):  # Records
        return tp(build_batch([NewRecord(b"v", key=b"k", timestamp=NOW_MS)]))
    if isinstance(base, type) and issubclass(base, int):
        if "replica_id" in name or "broker_id" in name or name == "leader_id":
            return tp(-1)
        if name in ("acks",):
            return tp(1)
        if "epoch" in name or "timestamp" in name:
            return tp(-1)
        if "timeout" in name:
            return tp(100)
        if name in ("num_partitions", "count"):
            return tp(1)
        if name == "replication_factor":
            return tp(1)
        if name == "max_bytes" or name == "partition_max_bytes":
            return tp(1 << 16)
        return tp(0)
    if isinstance(base, type) and issubclass(base, float):  # client quota values
        return tp(1024.0)
    raise TypeError(f"no sample for {tp!r} ({name})")


def _sample_entity(cls: type, depth: int = 0) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        values[f.name] = _sample(hints[f.name], f.name, cls, depth)
    return cls(**values)


@functools.cache
def served_versions() -> tuple[tuple[int, int], ...]:
    """(api_key, version) of every request the broker serves (what ApiVersions advertises,
    from min_parsed)."""
    return tuple((key, v) for key, spec in sorted(load_all().items())
                 for v in range(spec.min_parsed, spec.max_version + 1))


@functools.cache
def request_seeds() -> tuple[tuple[int, int, bytes], ...]:
    """(api_key, version, frame without its size) of a valid request for every API and
    version the broker serves."""
    seeds = []
    for key, version in served_versions():
        request = _sample_entity(messages.request_schema(key, version))
        frame = messages.encode_request(7, "fuzz", request)[4:]
        seeds.append((key, version, frame))
    return tuple(seeds)


def batch_seeds() -> list[bytes]:
    """Valid produce batches: each codec, keys, nulls, headers, a producer id."""
    recs = [NewRecord(b"value-%d" % i * (1 + i), key=b"key-%d" % i, timestamp=NOW_MS + i,
                      headers=(("h", b"x"),) if i % 2 else ())
            for i in range(5)]
    out = []
    for codec in Compression:
        out.append(build_batch(recs, compression=codec))
        out.append(build_batch([NewRecord(None, key=None, timestamp=NOW_MS)], compression=codec,
                               producer_id=5, producer_epoch=0, base_sequence=0))
    out.append(build_batch([NewRecord(b"z" * 4096, key=b"k", timestamp=NOW_MS)],
                           compression=Compression.ZSTD))
    return out


# --- framing --------------------------------------------------------------------------------

class _Collector(FrameReader):
    def __init__(self, max_frame_bytes: int) -> None:
        super().__init__(max_frame_bytes, min_frame_bytes=0)
        self.frames: list[bytes] = []
        self.bad_size: int | None = None

    def frame_received(self, frame: bytes | bytearray) -> None:
        self.frames.append(bytes(frame))

    def bad_frame_size(self, size: int) -> None:
        self.bad_size = size


FRAMING_MAX_BYTES = 1 << 17  # larger than the scratch buffer: in-place frames are read too


def framing_target(data: bytes) -> None:
    """Cut `data[1:]` into frames, fed in chunks whose sizes `data[0]` seeds."""
    if not data:
        return
    rng = random.Random(data[0])
    stream = data[1:]
    expected, bad = _split_frames(stream, FRAMING_MAX_BYTES)
    reader = _Collector(FRAMING_MAX_BYTES)
    pos = 0
    while pos < len(stream) and not reader.stopped:
        n = rng.choice((1, 3, 4, 5, 7, 64, 4096, 70000))
        if rng.random() < 0.5:  # as a transport: through get_buffer/buffer_updated
            buf = reader.get_buffer(n)
            n = min(n, len(buf), len(stream) - pos)
            buf[:n] = stream[pos:pos + n]
            reader.buffer_updated(n)
        else:
            n = min(n, len(stream) - pos)
            reader.feed(stream[pos:pos + n])
        pos += n
    if reader.frames != expected:
        raise FuzzFailure(f"frames differ: {len(reader.frames)} read, {len(expected)} expected")
    if reader.bad_size != bad:
        raise FuzzFailure(f"bad size {reader.bad_size}, expected {bad}")
    for frame in reader.frames:
        check_request_parse(frame)


def _split_frames(stream: bytes, max_bytes: int) -> tuple[list[bytes], int | None]:
    frames, pos = [], 0
    while len(stream) - pos >= 4:
        (size,) = struct.unpack_from(">i", stream, pos)
        if not 0 <= size <= max_bytes:
            return frames, size
        if len(stream) - pos - 4 < size:
            break
        frames.append(stream[pos + 4:pos + 4 + size])
        pos += 4 + size
    return frames, None


def check_request_parse(frame: bytes) -> None:
    """The header peek and the full parse of one frame: a result or the documented errors."""
    try:
        messages.peek_header(frame)
        messages.parse_request(frame)
    except (messages.MalformedRequest, messages.UnsupportedRequest):
        pass


# --- dispatch -------------------------------------------------------------------------------

# APIs whose answer may wait for the client's own bound (Fetch's max wait, Produce acks=all,
# a rebalance); the others must answer within DISPATCH_BOUND_S.
MAY_WAIT = frozenset({0, 1, 11, 14})
DISPATCH_BOUND_S = 5.0
MAY_WAIT_BOUND_S = 0.5


class _UnexpectedLogged(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class DispatchHarness:
    """A broker (local metadata store, one log dir under `tmp_dir`) started in this process
    on its own event loop; `run(frame)` passes one request frame to its Dispatcher.

    Topics `fuzz` (2 partitions) and `fuzz-compacted` exist and `fuzz` holds a batch, so
    requests that name them reach the domain code."""

    def __init__(self, tmp_dir: str) -> None:
        from strom.server.broker import Broker
        from strom.server.dispatcher import CloseConnection

        self._close_connection = CloseConnection
        self.tmp_dir = tmp_dir
        self.loop = asyncio.new_event_loop()
        config = BrokerConfig({
            "node.id": "1", "listeners": "PLAINTEXT://127.0.0.1:0",
            "log.dirs": os.path.join(tmp_dir, "data"),
            "group.initial.rebalance.delay.ms": "0",
        })
        self.broker = Broker(config)
        self.loop.run_until_complete(self.broker.startup())
        self.watch = _UnexpectedLogged()
        logging.getLogger("strom").addHandler(self.watch)
        self.outcomes: dict[str, int] = {}
        self._correlation = 0
        self._setup()

    def _setup(self) -> None:
        for name, configs in ((TOPIC, ()), (COMPACTED_TOPIC, (("cleanup.policy", "compact"),))):
            req = messages.request_schema(19, 5)
            mod = messages.request_module(19, 5)
            topic = mod.CreatableTopic(
                name=name, num_partitions=2, replication_factor=1, assignments=(),
                configs=tuple(mod.CreatableTopicConfig(name=k, value=v) for k, v in configs))
            self.run(messages.encode_request(1, "fuzz", req(
                topics=(topic,), timeout=datetime.timedelta(seconds=5),
                validate_only=False))[4:])
        for key, _version, frame in request_seeds():
            if key == 0:  # a Produce: the topic holds a batch
                self.run(frame)
                break
        self.outcomes.clear()

    def run(self, frame: bytes) -> str:
        """Dispatch `frame`; return the outcome ('response', 'none', 'closed', 'waited') or
        raise FuzzFailure."""
        self.watch.records.clear()
        try:
            api_key, version, correlation_id = messages.peek_header(frame)
        except messages.MalformedRequest:
            api_key = version = correlation_id = -1
        bound = MAY_WAIT_BOUND_S if api_key in MAY_WAIT else DISPATCH_BOUND_S
        outcome = self.loop.run_until_complete(self._run(frame, bound, api_key))
        if self.watch.records:
            r = self.watch.records[0]
            raise FuzzFailure(f"logged as unexpected for {messages.api_name(api_key)} "
                              f"v{version}: {r.getMessage()}\n{r.exc_text or ''}"
                              f"{_format_exc(r)}")
        if isinstance(outcome, bytes | bytearray):
            _check_response(api_key, version, correlation_id, outcome)
            outcome = "response"
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome

    async def _run(self, frame: bytes, bound: float, api_key: int) -> Any:
        from strom.api.fetch import RawResponse

        task = asyncio.ensure_future(self.broker.dispatcher.dispatch(
            frame, "fuzz-client", "127.0.0.1", "PLAINTEXT"))
        done, _ = await asyncio.wait((task,), timeout=bound)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, self._close_connection):
                await task
            if api_key in MAY_WAIT:
                return "waited"
            raise FuzzFailure(f"no answer within {bound} s to {messages.api_name(api_key)}")
        try:
            response = task.result()
        except self._close_connection:
            return "closed"
        except Exception as e:
            raise FuzzFailure(f"dispatch raised {e!r}") from e
        if response is None:
            return "none"
        if isinstance(response, RawResponse):
            parts = [p if isinstance(p, bytes | bytearray | memoryview) else p.read()
                     for p in response.parts]
            data = b"".join(bytes(p) for p in parts)
            if len(data) != response.size:
                raise FuzzFailure(f"raw response of {len(data)} bytes says {response.size}")
            return data
        return response

    def close(self) -> None:
        logging.getLogger("strom").removeHandler(self.watch)
        self.loop.run_until_complete(self.broker.shutdown())
        self.loop.close()


def _format_exc(record: logging.LogRecord) -> str:
    if record.exc_info:
        import traceback

        return "".join(traceback.format_exception(*record.exc_info))
    return ""


def _check_response(api_key: int, version: int, correlation_id: int, data: bytes) -> None:
    (size,) = struct.unpack_from(">i", data, 0)
    if size != len(data) - 4:
        raise FuzzFailure(f"response size {size} for {len(data) - 4} bytes")
    if messages.response_correlation_id(data[4:]) != correlation_id:
        raise FuzzFailure("response correlation id differs from the request's")
    try:
        messages.parse_response(api_key, version, data[4:])
    except messages.MalformedResponse as e:
        raise FuzzFailure(f"response does not parse: {e}") from e


# --- batch validation -----------------------------------------------------------------------

BATCH_CONFIGS: tuple[dict[str, str], ...] = (
    {},
    {"cleanup.policy": "compact"},
    {"compression.type": "uncompressed"},
    {"compression.type": "gzip"},
    {"compression.type": "snappy"},
    {"compression.type": "lz4"},
    {"compression.type": "zstd", "cleanup.policy": "compact"},
    {"message.timestamp.type": "LogAppendTime", "max.message.bytes": "2000"},
)


@functools.cache
def _topic_config(i: int) -> TopicConfig:
    return TopicConfig(BrokerConfig({}), validate_topic_configs(BATCH_CONFIGS[i]))


def batch_target(data: bytes) -> None:
    """`data[0]` picks a topic config (its high bit: give the batch a valid CRC, so that
    mutated records get past the CRC check to the decoders); `data[1:]` is a partition's
    produce data."""
    if not data:
        return
    from strom.log.validator import validate_batch, validate_records

    config = _topic_config((data[0] & 0x7F) % len(BATCH_CONFIGS))
    batch = bytearray(data[1:])
    if data[0] & 0x80 and len(batch) >= 61:
        struct.pack_into(">I", batch, 17, crc32c.crc32c(memoryview(batch)[21:]))
        data = data[:1] + bytes(batch)
    try:
        header = validate_batch(batch, config, NOW_MS)
        rebuilt, new_header = validate_records(batch, header, config)
    except KafkaError:
        pass
    else:
        if len(rebuilt) != new_header.size or not crc_is_valid(rebuilt, 0, new_header):
            raise FuzzFailure("re-compressed batch is not a valid batch")
    try:
        decode_batch(bytes(data[1:]))
    except CorruptRecordError:
        pass


# --- segment recovery -----------------------------------------------------------------------

def _recovery_config() -> TopicConfig:
    return TopicConfig(BrokerConfig({}), validate_topic_configs(
        {"segment.bytes": "350", "index.interval.bytes": "100"}))


@functools.cache
def _template_log() -> tuple[dict[str, bytes], tuple[bytes, ...]]:
    """A closed log of a few segments: its files by name, and its batches in order."""
    tmp = tempfile.mkdtemp(prefix="strom-fuzz-log-")
    try:
        plog = PartitionLog.open(os.path.join(tmp, "t-0"), "t", 0, _recovery_config(),
                                 ManualClock(NOW_MS))
        batches = []
        for i in range(12):
            codec = (Compression.NONE, Compression.GZIP, Compression.ZSTD)[i % 3]
            data = bytearray(build_batch(
                [NewRecord(b"v%d-%d" % (i, j) * (1 + j), key=b"k%d" % j, timestamp=NOW_MS + i)
                 for j in range(1 + i % 3)], compression=codec))
            plog.append_as_leader(data, read_header(data), 0)
            batches.append(bytes(data))
        plog.close()
        files = {}
        for name in os.listdir(plog.dir):
            with open(os.path.join(plog.dir, name), "rb") as f:
                files[name] = f.read()
        return files, tuple(batches)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recovery_target(data: bytes, work_dir: str | None = None) -> None:
    """Corrupt a copy of the template log as `data` says (4 bytes per change: file,
    position (2), value), open it as after a crash, and check what recovery left."""
    if not data:
        return
    files, batches = _template_log()
    logs = sorted(n for n in files if n.endswith(".log"))
    # mode 0: a crash before any recovery point (every segment is scanned); 1: the
    # recovery point at the last segment (only it is scanned, the others' indexes are
    # loaded); 2: a clean shutdown (indexes loaded). Only scanned logs are corrupted: a
    # closed segment below the recovery point is trusted, as in Kafka.
    mode = data[0] % 3
    names = sorted(n for n in files if n.endswith((".index", ".timeindex")))
    names += logs if mode == 0 else logs[-1:] if mode == 1 else []
    recovery_point = 0 if mode == 0 else int(logs[-1][:20])
    data = data[1:]
    own = work_dir is None
    base = work_dir or tempfile.mkdtemp(prefix="strom-fuzz-rec-")
    d = os.path.join(base, "t-0")
    try:
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        contents = {n: bytearray(b) for n, b in files.items()}
        for i in range(0, len(data) - 3, 4):
            name = names[data[i] % len(names)]
            buf = contents[name]
            pos = int.from_bytes(data[i + 1:i + 3], "big") % (len(buf) + 1)
            value = data[i + 3]
            if data[i] & 0x80:  # truncate there
                del buf[pos:]
            elif pos < len(buf):
                buf[pos] = value if buf[pos] != value else value ^ 0xFF
        for name, buf in contents.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(buf)
        try:
            plog = PartitionLog.open(d, "t", 0, _recovery_config(), ManualClock(NOW_MS),
                                     recovery_point=recovery_point,
                                     needs_recovery=mode != 2)
        except Exception as e:
            raise FuzzFailure(f"recovery raised {e!r}") from e
        try:
            check_recovered(plog, batches)
        finally:
            plog.close()
    finally:
        if own:
            shutil.rmtree(base, ignore_errors=True)


def _written_batches(batches: tuple[bytes, ...]) -> list[tuple[int, bytes]]:
    """(base offset, bytes after baseOffset) of each batch as written (offsets assigned)."""
    out, offset = [], 0
    for b in batches:
        out.append((offset, b[8:]))
        offset += read_header(b).last_offset_delta + 1
    return out


def check_recovered(plog: PartitionLog, batches: tuple[bytes, ...]) -> None:
    written = _written_batches(batches)
    found: list[tuple[int, int, bytes]] = []  # (segment base, position, batch)
    for seg in plog.segments:
        with open(seg.log_path, "rb") as f:
            content = f.read()
        if len(content) != seg.size:
            raise FuzzFailure(f"{seg.log_path}: size {seg.size}, file {len(content)}")
        pos = 0
        while pos < len(content):
            try:
                h = read_header(content, pos)
            except InvalidBatch as e:
                raise FuzzFailure(f"{seg.log_path}@{pos}: {e}") from e
            if pos + h.size > len(content) or not crc_is_valid(content, pos, h):
                raise FuzzFailure(f"{seg.log_path}@{pos}: torn or corrupt batch kept")
            found.append((seg.base_offset, pos, bytes(content[pos:pos + h.size])))
            pos += h.size
    if len(found) > len(written):
        raise FuzzFailure(f"{len(found)} batches after recovery, {len(written)} written")
    # baseOffset and partitionLeaderEpoch are outside the CRC: the rest of each batch must
    # be a batch that was written, in the order written (a segment cut short at a batch
    # boundary leaves a gap, as in Kafka)
    wanted = [w[:4] + w[8:] for _offset, w in written]
    i = 0
    for base, pos, got in found:
        key = got[8:12] + got[16:]
        while i < len(wanted) and wanted[i] != key:
            i += 1
        if i == len(wanted):
            raise FuzzFailure(f"batch at {base}@{pos} is not one written (or out of order)")
        i += 1
    # the log ends after its last batch, or at the base offset of a last segment left
    # empty (its file cut or wholly corrupt), as in Kafka: a gap, not a loss of order
    end = max(read_header(found[-1][2]).last_offset + 1 if found else 0,
              plog.segments[-1].base_offset)
    if plog.log_end_offset != end:
        raise FuzzFailure(f"log end offset {plog.log_end_offset}, expected {end}")
    previous_last = -1
    for _base, _pos, b in found:
        h = read_header(b)
        if h.base_offset <= previous_last:
            raise FuzzFailure(f"offset {h.base_offset} after {previous_last}")
        previous_last = h.last_offset
    _check_indexes(plog, found)


def _check_indexes(plog: PartitionLog, found: list[tuple[int, int, bytes]]) -> None:
    by_segment: dict[int, dict[int, int]] = {}
    for base, pos, b in found:
        by_segment.setdefault(base, {})[pos] = read_header(b).last_offset
    for seg in plog.segments:
        positions = by_segment.get(seg.base_offset, {})
        # As Kafka, an index loaded after a clean shutdown is sanity-checked, not verified
        # entry by entry: each entry must point at a batch of this segment, the last one
        # at the batch ending at its offset; reads (below) must find every batch.
        entries = list(_index_entries(seg))
        for offset, position in entries:
            if position not in positions or not seg.base_offset <= offset < seg.next_offset:
                raise FuzzFailure(f"{seg.index.path}: entry ({offset}, {position}) does not "
                                  "point at a batch of the segment")
        if entries and positions[entries[-1][1]] != entries[-1][0]:
            raise FuzzFailure(f"{seg.index.path}: last entry {entries[-1]} is not its batch")
        for _ts, offset in _time_entries(seg):
            if not seg.base_offset <= offset < max(seg.next_offset, seg.base_offset + 1):
                raise FuzzFailure(f"{seg.time_index.path}: offset {offset} outside the segment")
    for _base, _pos, b in found:  # every batch is found by a read at its offsets
        h = read_header(b)
        for offset in (h.base_offset, h.last_offset):
            got = plog.read(offset, 1 << 20, plog.log_end_offset, min_one=True).slice.read()
            if read_header(got).base_offset != h.base_offset:
                raise FuzzFailure(f"a read at offset {offset} starts at another batch")


def _index_entries(seg) -> Iterator[tuple[int, int]]:
    for rel, pos in zip(seg.index.relative_offsets, seg.index.positions, strict=True):
        yield seg.base_offset + rel, pos


def _time_entries(seg) -> Iterator[tuple[int, int]]:
    for ts, rel in zip(seg.time_index.timestamps, seg.time_index.relative_offsets, strict=True):
        yield ts, seg.base_offset + rel


TARGETS = {
    "framing": framing_target,
    "dispatch": None,  # needs a DispatchHarness: see bench/fuzz.py and tests/fuzz
    "batch": batch_target,
    "recovery": recovery_target,
}
