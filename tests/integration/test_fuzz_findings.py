"""Requests the dispatch fuzzer (strom.testing.fuzz, tests/fuzz) found mishandled, replayed
on a raw socket against a broker process. Encoded by hand with strom.testing.wire, which
shares no code with the broker.

- A Fetch v13+ or Metadata v10/v11 naming the all-zero topic id (which kio reads as a null
  id / null name) closed the connection with a logged traceback; Kafka answers
  UNKNOWN_TOPIC_ID.
- A compact array length of billions (5 varint bytes) made kio ask for that much memory
  at once: the allocation failed and the broker process aborted. Lengths are now checked
  against the bytes left before kio parses (strom.protocol.bounds), as Kafka does.
- A produced batch re-encoded for the topic's compression.type failed (ValueError) when
  its records' offsetDelta fields were out of order.
- A non-nullable array sent as null (length -1) reached the handlers as None and closed the
  connection with a logged traceback; as in Kafka it is a parse error: the connection is
  closed, and nothing is logged as an internal error.
"""

from __future__ import annotations

import pytest

from strom.testing.broker import BrokerProcess
from strom.testing.kafka import create_topic
from strom.testing.wire import (
    API_FETCH,
    API_METADATA,
    KafkaSocket,
    Reader,
    Record,
    compact_string,
    encode_record_batch,
    i16,
    i32,
    i64,
    parse_produce,
    produce,
    request,
    string,
    uvarint,
)

pytestmark = pytest.mark.timeout(60)

UNKNOWN_TOPIC_ID = 100
ZERO_UUID = bytes(16)


@pytest.fixture(scope="module")
def broker():
    b = BrokerProcess()
    b.start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(autouse=True)
def no_traceback(broker, request):
    request.node._strom_brokers = [broker]
    start = len(broker.log_text())
    yield
    new = broker.log_text()[start:]
    assert "Traceback" not in new, f"the broker logged a traceback:\n{new[-3000:]}"


def read_compact_string(r: Reader) -> str | None:
    n = r.uvarint() - 1
    if n < 0:
        return None
    s = r.data[r.pos:r.pos + n].decode()
    r.pos += n
    return s


def test_fetch_v13_with_the_zero_topic_id_is_unknown_topic_id(broker):
    partition = (i32(0) + i32(-1) + i64(0) + i32(-1) + i64(-1) + i32(1 << 20) + uvarint(0))
    body = (i32(-1) + i32(10) + i32(1) + i32(1 << 20) + bytes([0]) + i32(0) + i32(-1)
            + uvarint(2) + ZERO_UUID + uvarint(2) + partition + uvarint(0)
            + uvarint(1) + compact_string("") + uvarint(0))
    with KafkaSocket("127.0.0.1", broker.port) as s:
        r = Reader(s.roundtrip(request(API_FETCH, 13, 41, body, header_version=2)))
    assert r.i32() == 41
    r.skip_tags()
    r.i32()  # throttle
    assert r.i16() == 0
    r.i32()  # session id
    assert r.uvarint() == 2
    assert r.data[r.pos:r.pos + 16] == ZERO_UUID
    r.pos += 16
    assert r.uvarint() == 2
    assert (r.i32(), r.i16()) == (0, UNKNOWN_TOPIC_ID)


@pytest.mark.parametrize("version", [10, 11])
def test_metadata_v10_v11_with_the_zero_topic_id_and_null_name(broker, version):
    flags = 3 if version == 10 else 2  # v10 still has include_cluster_authorized_operations
    body = (uvarint(2) + ZERO_UUID + uvarint(0) + uvarint(0)  # topic: id 0, name null
            + bytes(flags) + uvarint(0))
    with KafkaSocket("127.0.0.1", broker.port) as s:
        r = Reader(s.roundtrip(request(API_METADATA, version, 42, body, header_version=2)))
    assert r.i32() == 42
    r.skip_tags()
    r.i32()  # throttle
    for _ in range(r.uvarint() - 1):  # brokers
        r.i32()
        read_compact_string(r)
        r.i32()
        read_compact_string(r)
        r.skip_tags()
    read_compact_string(r)  # cluster id
    r.i32()  # controller
    assert r.uvarint() == 2
    assert r.i16() == UNKNOWN_TOPIC_ID
    assert read_compact_string(r) == ""  # not nullable before v12
    assert r.data[r.pos:r.pos + 16] == ZERO_UUID


@pytest.mark.parametrize(("api_key", "version", "body"), [
    pytest.param(0, 8, string(None) + i16(1) + i32(1000) + i32(-1), id="produce-topic_data"),
    pytest.param(2, 1, i32(-1) + i32(-1), id="list_offsets-topics"),
    pytest.param(20, 1, i32(-1) + i32(1000), id="delete_topics-topic_names"),
    pytest.param(19, 3, i32(-1) + i32(1000) + bytes([0]), id="create_topics-topics"),
])
def test_null_for_a_non_nullable_array_closes_without_an_internal_error(
        broker, api_key, version, body):
    with KafkaSocket("127.0.0.1", broker.port) as s:
        s.send(request(api_key, version, 43, body))
        assert s.wait_closed()
    assert "non-nullable field" in broker.log_text()[-4000:]


@pytest.mark.parametrize("body", [
    # Metadata v9 (flexible): topics is a compact array whose varint length asks for
    # 2^35 - 2 elements: kio's native reader asked for 275 GB and the process aborted
    pytest.param(bytes.fromhex("ffffffff7f") + bytes(3), id="compact-array"),
])
def test_a_huge_collection_length_closes_the_connection_and_the_broker_lives(broker, body):
    with KafkaSocket("127.0.0.1", broker.port) as s:
        s.send(request(API_METADATA, 9, 44, body, header_version=2))
        assert s.wait_closed()
    assert broker.is_alive(), f"broker died (exit {broker.returncode})"
    with KafkaSocket("127.0.0.1", broker.port) as s:  # and still answers
        s.send(request(18, 0, 45, b""))
        assert Reader(s.recv_frame()).i32() == 45
    assert "only 3 bytes remain" in broker.log_text()[-4000:]


def test_recompressing_records_with_offset_deltas_out_of_order(broker):
    """A topic whose compression.type differs from the producer's re-encodes the batch;
    records whose offsetDelta fields are not 0, 1, ... (here 5 and -1) made that raise
    ValueError (traceback, connection closed). Kafka assigns the records new offsets then
    (LogValidator: no in-place assignment); so does strom."""
    create_topic(broker.bootstrap, "recompressed", 1, config={"compression.type": "gzip"})
    batch = encode_record_batch([Record(b"a", key=b"k"), Record(b"b", key=b"k")],
                                offset_deltas=[5, -1])
    with KafkaSocket("127.0.0.1", broker.port) as s:
        _cid, results = parse_produce(s.roundtrip(produce("recompressed", 0, batch)))
    assert [(r.error_code, r.base_offset) for r in results] == [(0, 0)]
