"""strom.protocol.fetch_response.decode, the follower's reader of Fetch responses (v12+),
checked against kio's encoder (every field and tagged field a leader may send, topic names
and topic ids) and against the broker's own hand-framed encoder."""

from __future__ import annotations

import datetime
import os
import uuid

import pytest

from strom.log.segment import FileSlice
from strom.protocol import fetch_response
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import encode_response, make, response_module, response_schema

TOPIC_ID = uuid.UUID(int=0x1234_5678_9ABC)


def kio_response(version: int):
    mod = response_module(1, version)

    def part(index, code, records, **kw):
        return make(mod.PartitionData, partition_index=index, error_code=code,
                    high_watermark=100 + index, last_stable_offset=90 + index,
                    log_start_offset=index, records=records, **kw)

    parts = (
        part(0, ErrorCode.none, b"\x01\x02\x03", aborted_transactions=None),
        part(1, ErrorCode.none, None, aborted_transactions=(
            make(mod.AbortedTransaction, producer_id=7, first_offset=11),
            make(mod.AbortedTransaction, producer_id=8, first_offset=12))),
        part(2, ErrorCode.not_leader_or_follower, b"", aborted_transactions=None,
             current_leader=make(mod.LeaderIdAndEpoch, leader_id=3, leader_epoch=9),
             diverging_epoch=make(mod.EpochEndOffset, epoch=4, end_offset=50)),
        part(3, ErrorCode.none, bytes(range(256)) * 300, aborted_transactions=None,
             preferred_read_replica=2),
    )
    topics = (make(mod.FetchableTopicResponse, topic="topic-ä", topic_id=TOPIC_ID,
                   partitions=parts[:3]),
              make(mod.FetchableTopicResponse, topic="other", topic_id=TOPIC_ID,
                   partitions=parts[3:]))
    extra = {}
    if version >= 16:
        extra["node_endpoints"] = (make(mod.NodeEndpoint, node_id=3, host="127.0.0.1",
                                        port=9092, rack=None),)
    return make(response_schema(1, version), throttle_time=datetime.timedelta(
        milliseconds=5), error_code=ErrorCode.none, session_id=0, responses=topics, **extra)


@pytest.mark.parametrize("version", [12, 13, 16])
def test_decode_matches_kio(version):
    resp = kio_response(version)
    frame = bytearray(encode_response(42, resp)[4:])
    got = fetch_response.decode(frame, version)
    assert (got.throttle_time_ms, got.error_code, got.session_id) == (5, 0, 0)
    want = [(t, p) for t in resp.responses for p in t.partitions]
    assert len(got.partitions) == len(want)
    for g, (t, p) in zip(got.partitions, want, strict=True):
        if version >= 13:
            assert (g.topic, g.topic_id) == (None, TOPIC_ID)
        else:
            assert (g.topic, g.topic_id) == (t.topic, None)
        assert (g.partition_index, g.error_code, g.high_watermark, g.last_stable_offset,
                g.log_start_offset) == (p.partition_index, p.error_code, p.high_watermark,
                                        p.last_stable_offset, p.log_start_offset)
        if p.records is None:
            assert g.records is None
        else:
            assert isinstance(g.records, memoryview) and bytes(g.records) == p.records
    # the records are a view into the frame, not a copy
    big = got.partitions[3].records
    assert big.obj is frame
    start = bytes(frame).index(bytes(big))
    frame[start] ^= 0xFF
    assert big[0] == frame[start]


def test_decode_reads_the_brokers_own_encoding():
    class Slice:  # a FileSlice stand-in: encode() leaves it as a separate part
        def __init__(self, data):
            self.data, self.size = data, len(data)

    records = bytes(range(200)) * 10
    topics = [fetch_response.FetchTopicData("t", TOPIC_ID, [
        fetch_response.FetchPartitionData(0, ErrorCode.none, 10, 10, 0, Slice(records)),
        fetch_response.FetchPartitionData(1, ErrorCode.none, 5, 5, 0, b"abc"),
        fetch_response.FetchPartitionData(2, ErrorCode.fenced_leader_epoch, 7, 7, 1, b"",
                                          current_leader=(2, 8)),
        fetch_response.FetchPartitionData(3, ErrorCode.none, 1, 1, 0, None,
                                          aborted_transactions=[(1, 2)])])]
    parts, size = fetch_response.encode(12, 77, 0, ErrorCode.none, 0, topics)
    wire = b"".join(p if isinstance(p, bytes) else p.data for p in parts)
    assert len(wire) == size
    got = fetch_response.decode(wire[4:], 12)
    assert [(p.topic, p.partition_index, p.error_code, p.high_watermark,
             None if p.records is None else bytes(p.records)) for p in got.partitions] == [
        ("t", 0, 0, 10, records), ("t", 1, 0, 5, b"abc"),
        ("t", 2, ErrorCode.fenced_leader_epoch, 7, b""), ("t", 3, 0, 1, b"")]


@pytest.mark.parametrize("cut", [1, 5, 12, 20, 40, 60])
def test_truncated_frame_raises_value_error(cut):
    frame = encode_response(1, kio_response(12))[4:]
    with pytest.raises(ValueError):
        fetch_response.decode(frame[:len(frame) - cut], 12)


def test_non_flexible_version_is_refused():
    with pytest.raises(ValueError):
        fetch_response.decode(b"\0" * 32, 11)


@pytest.mark.parametrize("version", range(4, 18))
def test_encode_one_gives_the_bytes_encode_gives(version, tmp_path):
    """The fast path's encoder of a lone error-free partition (read_uncommitted): the same
    bytes as `encode` for no records, records read already, and a slice still in its file
    (sent with sendfile); its kept heads do not leak between topics or versions."""
    path = tmp_path / "segment"
    path.write_bytes(b"\x07" * 100 + bytes(range(200)))
    fd = os.open(path, os.O_RDONLY)
    try:
        def joined(parts):
            return b"".join(p if isinstance(p, bytes) else os.pread(p.fd, p.size, p.position)
                            for p in parts)

        for topic, topic_id in (("tä", TOPIC_ID), ("other", uuid.UUID(int=5)), ("x", None)):
            for records in (b"", FileSlice(fd, 100, 200, False, bytes(range(200))),
                            FileSlice(fd, 100, 200, False)):
                one, one_size = fetch_response.encode_one(
                    version, 77, topic, topic_id, 3, 120, 110, 4, records)
                part = fetch_response.FetchPartitionData(3, 0, 120, 110, 4, records)
                full, full_size = fetch_response.encode(
                    version, 77, 0, 0, 0, [fetch_response.FetchTopicData(topic, topic_id,
                                                                          [part])])
                assert joined(one) == joined(full) and one_size == full_size == len(joined(one))
    finally:
        os.close(fd)
