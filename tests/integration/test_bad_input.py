"""Bad bytes on a raw socket (issue point 7, DESIGN.md decision 9).

Every case gets the exact Kafka error or a clean disconnect, and afterwards
`assert_undisturbed` proves the damage stayed on that one connection:

- the broker process is alive, and a bystander connection opened before all the tests still
  answers ApiVersions;
- the records acknowledged before any bad input are all still there, byte for byte;
- a normal client (confluent-kafka) still produces and consumes;
- the broker logged no traceback for it (bad input is expected, not an internal error).

The requests are encoded by `strom.testing.wire`, which shares no code with the broker.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time

import cramjam
import crc32c
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from strom.testing.broker import BrokerProcess
from strom.testing.kafka import admin_client, consume_partition, create_topic
from strom.testing.wire import (
    API_FETCH,
    API_METADATA,
    Closed,
    KafkaSocket,
    Record,
    _encode_record,
    api_versions_flexible,
    api_versions_v0,
    encode_record_batch,
    fetch_v4,
    frame,
    i16,
    i32,
    parse_api_versions_v0,
    parse_fetch_v4,
    parse_produce,
    produce,
    request,
    string,
)

pytestmark = pytest.mark.timeout(90)

NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35

SOCKET_REQUEST_MAX_BYTES = 65536
MESSAGE_MAX_BYTES = 8192
TOPIC = "bad-input-acked"
ACKED = 20

_cids = itertools.count(1000)


class Env:
    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker
        self.bystander = KafkaSocket("127.0.0.1", broker.port)
        self.acked_values = [f"acked-{i}".encode() for i in range(ACKED)]

    def sock(self) -> KafkaSocket:
        return KafkaSocket("127.0.0.1", self.broker.port)


@pytest.fixture(scope="module")
def env():
    broker = BrokerProcess(overrides={
        "socket.request.max.bytes": SOCKET_REQUEST_MAX_BYTES,
        "message.max.bytes": MESSAGE_MAX_BYTES,
        "auto.create.topics.enable": "false",
    })
    broker.start()
    try:
        create_topic(broker.bootstrap, TOPIC, 1)
        e = Env(broker)
        p = Producer({"bootstrap.servers": broker.bootstrap})
        for v in e.acked_values:
            p.produce(TOPIC, value=v, key=b"k", partition=0)
        assert p.flush(15) == 0
        yield e
        e.bystander.close()
    finally:
        broker.close()


@pytest.fixture(autouse=True)
def undisturbed(env, request):
    request.node._strom_brokers = [env.broker]  # attach the log on failure
    log_start = len(env.broker.log_text())
    yield
    assert_undisturbed(env, log_start)


def assert_undisturbed(env: Env, log_start: int) -> None:
    b = env.broker
    assert b.is_alive(), f"broker died (exit {b.returncode})"
    cid = next(_cids)
    resp = parse_api_versions_v0(env.bystander.roundtrip(api_versions_v0(cid)))
    assert (resp.correlation_id, resp.error_code) == (cid, NONE)
    # everything acknowledged is still there, and a normal client still works
    hw = high_watermark(env)
    p = Producer({"bootstrap.servers": b.bootstrap})
    acks = []
    p.produce(TOPIC, value=b"after", key=b"k", partition=0,
              on_delivery=lambda err, msg: acks.append((err, msg.offset())))
    assert p.flush(15) == 0
    assert acks == [(None, hw)], acks
    msgs = consume_partition(b.bootstrap, TOPIC, 0, end=hw + 1)
    assert [m.offset() for m in msgs] == list(range(hw + 1))
    assert [m.value() for m in msgs[:ACKED]] == env.acked_values
    assert msgs[-1].value() == b"after"
    new_log = b.log_text()[log_start:]
    assert "Traceback" not in new_log, f"the broker logged a traceback:\n{new_log[-5000:]}"


def assert_logged_once(env: Env, *socks: KafkaSocket, timeout: float = 5.0) -> None:
    """The broker logged exactly one line naming each of these connections."""
    ports = {s.local_port for s in socks}

    def counts() -> dict[int, int]:
        lines = env.broker.log_text().splitlines()
        return {p: sum(f"127.0.0.1:{p}" in line for line in lines) for p in ports}

    deadline = time.monotonic() + timeout
    while min(counts().values()) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    c = counts()
    assert all(n == 1 for n in c.values()), f"log lines per connection (want 1 each): {c}"


def high_watermark(env: Env, topic: str = TOPIC, partition: int = 0) -> int:
    with env.sock() as s:
        cid = next(_cids)
        _, [res] = parse_fetch_v4(s.roundtrip(fetch_v4(topic, partition, 0, max_wait_ms=0,
                                                       correlation_id=cid)))
        assert res.error_code == NONE
        return res.high_watermark


# -- framing -------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    frame(b"\xff" * 16),                     # api key -1, garbage after
    frame(b"\x00\x12\x00"),                  # header cut inside the frame (3 bytes)
    frame(b""),                              # empty frame
    i32(-1) + b"\x00" * 8,                   # negative size
    frame(b"\x00\x12\x00\x00\x00\x00\x00\x01\x7f\xff"),  # client id length past the end
], ids=["garbage", "truncated-header", "empty-frame", "negative-size", "bad-client-id"])
def test_malformed_frame_closes_the_connection(env, payload):
    with env.sock() as s:
        s.send(payload)
        assert s.wait_closed(10), "the broker kept a connection that sent a malformed frame"
        assert_logged_once(env, s)


def test_frame_cut_short_by_eof(env):
    with env.sock() as s:
        s.send(i32(200) + b"\x00\x12\x00\x00\x00\x00\x00\x01")
        s.sock.shutdown(socket.SHUT_WR)
        assert s.wait_closed(10)


def test_frame_over_socket_request_max_bytes_disconnects(env):
    with env.sock() as s:
        # announce a frame larger than allowed; send only its beginning
        s.send(i32(SOCKET_REQUEST_MAX_BYTES + 1) + b"\x00\x12\x00\x00" + b"\x00" * 100)
        assert s.wait_closed(10), "a frame over socket.request.max.bytes was not refused"
        assert_logged_once(env, s)
    with env.sock() as s:
        body = b"\x00" * (SOCKET_REQUEST_MAX_BYTES * 2)
        s.send(i32(len(body)))
        try:
            s.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # already closed by the broker: what we want
        assert s.wait_closed(10)


def test_many_bad_connections_at_once(env):
    socks = [env.sock() for _ in range(20)]
    try:
        for i, s in enumerate(socks):
            s.send(frame(bytes([i]) * (5 + i)) if i % 2 else i32(-7))
        for s in socks:
            assert s.wait_closed(10)
        assert_logged_once(env, *socks)
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_client_gone_while_fetch_is_parked(env, reset):
    """A consumer closes (or resets: SO_LINGER 0) its connection while its Fetch waits for
    data; when data arrives the broker must drop the answer quietly, not log a traceback."""
    hw = high_watermark(env)
    s = env.sock()
    s.send(fetch_v4(TOPIC, 0, hw, max_wait_ms=5000, correlation_id=next(_cids)))
    time.sleep(0.2)  # let the broker park the fetch (ordering only; nothing is timed)
    if reset:
        s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.2)
    p = Producer({"bootstrap.servers": env.broker.bootstrap})
    p.produce(TOPIC, value=b"wakes-a-dead-fetch", partition=0)
    assert p.flush(15) == 0
    time.sleep(0.3)  # the parked fetch answers now; assert_undisturbed reads the log


# -- api keys and versions -----------------------------------------------------------------

def test_unknown_api_key_closes_or_errors(env):
    with env.sock() as s:
        cid = next(_cids)
        s.send(request(9999, 0, cid, b""))
        try:
            payload = s.recv_frame()
        except Closed:
            assert_logged_once(env, s)
            return  # what Kafka does
        # an error answer is acceptable too: it must be for this request
        assert int.from_bytes(payload[:4], "big", signed=True) == cid


def test_api_versions_unsupported_version_answers_at_v0(env):
    with env.sock() as s:
        cid = next(_cids)
        s.send(api_versions_flexible(127, cid))
        resp = parse_api_versions_v0(s.recv_frame())
        assert resp.correlation_id == cid
        assert resp.error_code == UNSUPPORTED_VERSION
        assert 18 in resp.api_keys, "the answer must give ApiVersions' own range"
        lo, hi = resp.api_keys[18]
        assert lo == 0 and hi >= 3
        # the connection stays usable: the client retries at a version it now knows
        cid = next(_cids)
        full = parse_api_versions_v0(s.roundtrip(api_versions_v0(cid)))
        assert (full.correlation_id, full.error_code) == (cid, NONE)
        assert full.api_keys[0][0] == 0, "Produce must be advertised from version 0"
        for key in (0, 1, 2, 3, 18, 19, 20, 22, 32, 37, 60):
            assert key in full.api_keys, f"api key {key} not advertised"


def test_api_versions_v3_request_gets_header_v0_response(env):
    with env.sock() as s:
        cid = next(_cids)
        s.send(api_versions_flexible(3, cid))
        payload = s.recv_frame()
        # header v0 (correlation id only), then error_code: no tagged-field byte between
        assert int.from_bytes(payload[:4], "big", signed=True) == cid
        assert int.from_bytes(payload[4:6], "big", signed=True) == NONE


def supported(env: Env) -> dict[int, tuple[int, int]]:
    with env.sock() as s:
        return parse_api_versions_v0(s.roundtrip(api_versions_v0(next(_cids)))).api_keys


@pytest.mark.parametrize("api_key", [API_METADATA, API_FETCH], ids=["metadata", "fetch"])
def test_unsupported_version_of_another_api_disconnects(env, api_key):
    lo, hi = supported(env)[api_key]
    for version in sorted({hi + 1, 999} | ({lo - 1} if lo > 0 else set())):
        with env.sock() as s:
            s.send(request(api_key, version, next(_cids), b"\x00" * 16, header_version=2))
            assert s.wait_closed(10), f"api {api_key} v{version} did not disconnect"
            assert_logged_once(env, s)


# -- produce and fetch errors --------------------------------------------------------------

def produce_one(env: Env, topic: str, records: bytes, version: int = 8, partition: int = 0):
    cid = next(_cids)
    with env.sock() as s:
        got_cid, results = parse_produce(
            s.roundtrip(produce(topic, partition, records, version=version, correlation_id=cid)),
            version)
    assert got_cid == cid
    [res] = results
    assert (res.topic, res.partition) == (topic, partition)
    return res


@pytest.mark.parametrize("version", [3, 5, 7, 8])
def test_well_formed_raw_produce_is_stored(env, version):
    """The encoder itself is right: a good batch is accepted and reads back exactly."""
    hw = high_watermark(env)
    batch = encode_record_batch([
        Record(b"raw-1", b"rk", [("h", b"1"), ("h", b"2")]),
        Record(None, b"rk-tomb", [], timestamp_delta=3),
    ])
    res = produce_one(env, TOPIC, batch, version)
    assert res.error_code == NONE, res
    assert res.base_offset == hw
    msgs = consume_partition(env.broker.bootstrap, TOPIC, 0, start=hw, end=hw + 2)
    assert [(m.key(), m.value(), m.headers()) for m in msgs] == [
        (b"rk", b"raw-1", [("h", b"1"), ("h", b"2")]), (b"rk-tomb", None, None)]


def test_wrong_crc_is_corrupt_message(env):
    hw = high_watermark(env)
    batch = encode_record_batch([Record(b"bad-crc", b"k")], corrupt_crc=True)
    res = produce_one(env, TOPIC, batch)
    assert res.error_code == CORRUPT_MESSAGE, res
    assert high_watermark(env) == hw, "a corrupt batch was appended"


def test_flipped_record_byte_is_corrupt_message(env):
    hw = high_watermark(env)
    batch = bytearray(encode_record_batch([Record(b"payload-to-damage", b"k")]))
    batch[-5] ^= 0x55  # inside the record, after the CRC was computed
    res = produce_one(env, TOPIC, bytes(batch))
    assert res.error_code == CORRUPT_MESSAGE, res
    assert high_watermark(env) == hw


def test_batch_over_message_max_bytes_is_message_too_large(env):
    hw = high_watermark(env)
    batch = encode_record_batch([Record(b"x" * (MESSAGE_MAX_BYTES + 100), b"big")])
    assert len(batch) < SOCKET_REQUEST_MAX_BYTES
    res = produce_one(env, TOPIC, batch)
    assert res.error_code == MESSAGE_TOO_LARGE, res
    assert high_watermark(env) == hw

    # the same through a real client
    p = Producer({"bootstrap.servers": env.broker.bootstrap})
    errs = []
    p.produce(TOPIC, value=b"y" * (MESSAGE_MAX_BYTES + 100), partition=0,
              on_delivery=lambda err, msg: errs.append(err))
    p.flush(15)
    assert len(errs) == 1 and errs[0] is not None
    assert errs[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errs[0]
    assert high_watermark(env) == hw


def test_produce_to_unknown_topic_with_auto_create_off(env):
    res = produce_one(env, "no-such-topic-here", encode_record_batch([Record(b"v")]))
    assert res.error_code == UNKNOWN_TOPIC_OR_PARTITION, res
    res = produce_one(env, TOPIC, encode_record_batch([Record(b"v")]), partition=7)
    assert res.error_code == UNKNOWN_TOPIC_OR_PARTITION, res
    md = admin_client(env.broker.bootstrap).list_topics(timeout=10)
    assert "no-such-topic-here" not in md.topics


def test_fetch_out_of_range(env):
    hw = high_watermark(env)
    for offset, want in [(hw, NONE), (hw + 1, OFFSET_OUT_OF_RANGE),
                         (hw + 1_000_000, OFFSET_OUT_OF_RANGE), (-5, OFFSET_OUT_OF_RANGE)]:
        with env.sock() as s:
            cid = next(_cids)
            got_cid, [res] = parse_fetch_v4(s.roundtrip(
                fetch_v4(TOPIC, 0, offset, max_wait_ms=0, correlation_id=cid)))
            assert got_cid == cid
            assert res.error_code == want, (offset, res)
            if want == NONE:
                assert not res.records, "a fetch at the high watermark returned records"
            assert res.high_watermark == hw


def test_fetch_unknown_topic_partition(env):
    with env.sock() as s:
        cid = next(_cids)
        _, [res] = parse_fetch_v4(s.roundtrip(fetch_v4("no-such-topic-here", 0, 0,
                                                       max_wait_ms=0, correlation_id=cid)))
        assert res.error_code == UNKNOWN_TOPIC_OR_PARTITION, res


def test_produce_with_truncated_body_disconnects_or_errors(env):
    hw = high_watermark(env)
    # a Produce v8 whose topic array claims 5 topics but holds none
    body = string(None) + i16(-1) + i32(1000) + i32(5)
    with env.sock() as s:
        cid = next(_cids)
        s.send(request(0, 8, cid, body))
        try:
            payload = s.recv_frame()
        except Closed:
            payload = None
        if payload is not None:
            assert int.from_bytes(payload[:4], "big", signed=True) == cid
    assert high_watermark(env) == hw


# -- internal topics -----------------------------------------------------------------------

def test_produce_to_internal_topics_is_refused(env):
    """Only the coordinators write __consumer_offsets (and __transaction_state): a client's
    Produce gets INVALID_TOPIC_EXCEPTION, as in Kafka, and the group's own commits still
    work and read back."""
    bs = env.broker.bootstrap
    group = "bad-input-internal"
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(TOPIC, 0, 7)], asynchronous=False)  # creates the topic
        batch = encode_record_batch([Record(b"forged", b"forged-key")])
        for topic in ("__consumer_offsets", "__transaction_state"):
            res = produce_one(env, topic, batch)
            assert res.error_code == INVALID_TOPIC_EXCEPTION, (topic, res)
        # the same through a real client
        p = Producer({"bootstrap.servers": bs})
        errs = []
        p.produce("__consumer_offsets", value=b"forged", key=b"k", partition=0,
                  on_delivery=lambda err, msg: errs.append(err))
        p.flush(15)
        assert len(errs) == 1 and errs[0] is not None
        assert errs[0].code() == KafkaError.TOPIC_EXCEPTION, errs[0]
        # the coordinator's own appends are untouched
        c.commit(offsets=[TopicPartition(TOPIC, 0, 9)], asynchronous=False)
        [tp] = c.committed([TopicPartition(TOPIC, 0)], timeout=15)
        assert tp.offset == 9
    finally:
        c.close()


# -- decompression bombs -------------------------------------------------------------------

ZSTD = 4


def zstd_batch(area: bytes, count: int) -> bytes:
    """A v2 batch (base offset 0, CreateTime now) whose records area `area` is zstd
    compressed; `count` records are declared."""
    payload = bytes(cramjam.zstd.compress(area))
    now = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", ZSTD, count - 1, now, now, -1, -1, -1, count) + payload
    return (struct.pack(">qiib", 0, 9 + len(after_crc), 0, 2)
            + struct.pack(">I", crc32c.crc32c(after_crc)) + after_crc)


def records_area(values: list[bytes]) -> bytes:
    """Uncompressed records (key b"k") with offset deltas 0, 1, ..."""
    return b"".join(_encode_record(i, Record(v, b"k")) for i, v in enumerate(values))


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.parametrize("config", [{"compression.type": "gzip"},
                                    {"cleanup.policy": "compact"}],
                         ids=["recompressed", "compacted"])
def test_decompression_bomb_is_refused_within_bounded_memory(env, config):
    """A 6 KB zstd batch whose records expand to 200 MB, to a topic where the broker must
    read the records: refused with MESSAGE_TOO_LARGE after decompressing at most the bound
    (16 MiB here), so the broker's peak memory barely moves; other clients are served."""
    topic = "bad-input-bomb-" + "-".join(config).replace(".", "-")
    create_topic(env.broker.bootstrap, topic, 1, config=config)
    bomb = zstd_batch(bytes(200 << 20), 1)
    assert len(bomb) < MESSAGE_MAX_BYTES
    # a legitimate zstd batch is accepted (and recompressed where the topic asks for it)
    good = zstd_batch(records_area([b"value-%d" % i for i in range(50)]), 50)
    assert produce_one(env, topic, good).error_code == NONE
    before = peak_rss_bytes(env.broker.pid)
    res = produce_one(env, topic, bomb)
    grown = peak_rss_bytes(env.broker.pid) - before
    assert grown < 100 << 20, f"the broker's peak RSS grew by {grown >> 20} MiB"
    assert res.error_code == MESSAGE_TOO_LARGE, res
    assert high_watermark(env, topic) == 50
    msgs = consume_partition(env.broker.bootstrap, topic, 0, end=50)
    assert [m.value() for m in msgs] == [b"value-%d" % i for i in range(50)]


def test_list_offsets_by_time_over_a_stored_bomb_is_bounded(env):
    """A topic that keeps the producer's codec stores a zstd "bomb" as sent (as Kafka
    does); a ListOffsets by timestamp, the one reader that decodes stored records, reads no
    more than the bound and answers CORRUPT_MESSAGE for that partition."""
    topic = "bad-input-bomb-stored"
    create_topic(env.broker.bootstrap, topic, 1)
    assert produce_one(env, topic, zstd_batch(bytes(200 << 20), 1)).error_code == NONE
    before = peak_rss_bytes(env.broker.pid)
    c = Consumer({"bootstrap.servers": env.broker.bootstrap, "group.id": "bad-input-lo"})
    try:
        with pytest.raises(KafkaException) as info:
            c.offsets_for_times([TopicPartition(topic, 0, 1)], timeout=15)
        error = info.value.args[0]
    finally:
        c.close()
    grown = peak_rss_bytes(env.broker.pid) - before
    assert grown < 100 << 20, f"the broker's peak RSS grew by {grown >> 20} MiB"
    assert error.code() == KafkaError.INVALID_MSG, error
