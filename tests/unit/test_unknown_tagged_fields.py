"""A request's tagged fields that its version does not know are skipped, as Kafka's
generated readers skip them (KIP-482: a newer client may send tags an older broker does not
know), and the rest of the request reads as without them; a known tag is still read and
checked, and a tag cut short is still a malformed request (strom.protocol.bounds
`check_request`, used by `messages.parse_request`); a frame of very many unknown tags costs
memory in proportion to its size, not a Python object per tag."""

from __future__ import annotations

import datetime
import time
import tracemalloc
import uuid

import pytest

from strom.log.records import NewRecord, build_batch
from strom.protocol.bounds import MAX_TAGGED_FIELDS
from strom.protocol.messages import (
    MalformedRequest,
    encode_request,
    make,
    parse_request,
    request_module,
    request_schema,
)
from strom.protocol.varint import uvarint

SMALL = uvarint(7) + uvarint(3) + b"abc"  # tag 7, 3 bytes
LARGE = uvarint(300) + uvarint(200) + b"z" * 200  # two-byte tag and size varints


def produce(version: int) -> bytes:
    mod = request_module(0, version)
    batch = build_batch([NewRecord(b"v", timestamp=int(time.time() * 1000))])
    req = make(request_schema(0, version), transactional_id=None, acks=1,
               timeout=datetime.timedelta(seconds=30), topic_data=(make(
                   mod.TopicProduceData, name="t", partition_data=(make(
                       mod.PartitionProduceData, index=0, records=batch),)),))
    return encode_request(5, "client", req)[4:]


def fetch(version: int, cluster_id: str | None = None) -> bytes:
    mod = request_module(1, version)
    req = make(request_schema(1, version), cluster_id=cluster_id, replica_id=-1,
               max_wait=datetime.timedelta(milliseconds=500), min_bytes=1, max_bytes=1 << 20,
               isolation_level=0, session_id=0, session_epoch=-1, rack_id="",
               forgotten_topics_data=(), topics=(make(
                   mod.FetchTopic, topic="t", topic_id=uuid.UUID(int=7), partitions=(make(
                       mod.FetchPartition, partition=0, current_leader_epoch=-1,
                       fetch_offset=0, last_fetched_epoch=-1, log_start_offset=-1,
                       partition_max_bytes=1 << 20),)),))
    return encode_request(6, "client", req)[4:]


def with_tags(frame: bytes, at: int, *tags: bytes) -> bytes:
    """`frame` whose empty tagged-field section at `at` holds `tags`."""
    assert frame[at] == 0
    return frame[:at] + uvarint(len(tags)) + b"".join(tags) + frame[at + 1:]


def header_tags(frame: bytes) -> int:
    return 10 + int.from_bytes(frame[8:10], "big")


@pytest.mark.parametrize("request_of, sections", [
    (lambda: produce(9), (-3, -2, -1)),  # the partition's, the topic's, the request's
    (lambda: produce(12), (-3, -2, -1)),
    (lambda: fetch(12), (-5, -4, -1)),  # partition, topic, (forgotten, rack) request
    (lambda: fetch(17), (-5, -4, -1)),
], ids=["produce-v9", "produce-v12", "fetch-v12", "fetch-v17"])
@pytest.mark.parametrize("tags", [(SMALL,), (LARGE,), (SMALL, LARGE), (SMALL,) * 130],
                         ids=["small", "large", "both", "130"])
def test_unknown_tags_in_any_section_read_as_without_them(request_of, sections, tags):
    frame = request_of()
    plain = parse_request(frame)
    for at in (header_tags(frame), *(len(frame) + s for s in sections)):
        assert parse_request(with_tags(frame, at, *tags)) == plain, at
    # all of them at once
    tagged = frame
    for at in sorted((len(frame) + s for s in sections), reverse=True):
        tagged = with_tags(tagged, at, *tags)
    assert parse_request(with_tags(tagged, header_tags(frame), *tags)) == plain


def test_a_known_tag_beside_unknown_ones_is_still_read():
    plain = fetch(12)
    known = fetch(12, cluster_id="the-cluster")
    section = known[len(plain) - 1:]  # the request's tags: one field, tag 0
    assert section[0] == 1
    frame = plain[:-1] + bytes([3]) + SMALL + section[1:] + LARGE
    _header, body = parse_request(frame)
    assert body.cluster_id == "the-cluster"
    assert body == parse_request(known)[1]


@pytest.mark.parametrize("tag", [
    uvarint(7) + uvarint(10) + b"abc",  # its size runs past the frame
    uvarint(0) + uvarint(3) + b"\x05ab",  # cluster_id (tag 0) whose string is cut short
], ids=["size-past-the-end", "cluster-id-cut-short"])
def test_a_tag_cut_short_is_a_malformed_request(tag):
    frame = fetch(12)
    with pytest.raises(MalformedRequest):
        parse_request(frame[:-1] + b"\x01" + tag)


def test_a_frame_of_many_unknown_tags_costs_memory_as_its_size():
    """30,000 two-byte unknown tags in the header's section and 30,000 more between
    copies of a known one in the request's: the frame parses as without them, and the
    rebuild keeps no object per tag (which took ~57 bytes of memory per byte of frame)."""
    plain = fetch(12, cluster_id="c")
    count = 30_000
    header = header_tags(plain)
    section = plain.rindex(b"\x01\x00\x02\x02c")  # the request's tags: cluster_id "c"
    frame = (plain[:header] + uvarint(count) + b"\x07\x00" * count
             + plain[header + 1:section] + uvarint(2 * count + 1)
             + (b"\x00\x02\x02c" + b"\x07\x00") * count + b"\x00\x02\x02c")
    tracemalloc.start()
    try:
        parsed = parse_request(frame)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed == parse_request(plain)
    assert peak < 8 * len(frame), (peak, len(frame))


def test_more_tagged_fields_than_a_request_may_hold_are_refused():
    """MAX_TAGGED_FIELDS in one request, all sections together: one more is a malformed
    request (walking millions of two-byte tags held the event loop for seconds)."""
    plain = fetch(12)
    header = header_tags(plain)

    def frame(in_header: int, in_request: int) -> bytes:
        return (plain[:header] + uvarint(in_header) + b"\x07\x00" * in_header
                + plain[header + 1:-1] + uvarint(in_request) + b"\x08\x00" * in_request)
    half = MAX_TAGGED_FIELDS // 2
    assert parse_request(frame(half, MAX_TAGGED_FIELDS - half)) == parse_request(plain)
    with pytest.raises(MalformedRequest, match="tagged fields"):
        parse_request(frame(half, MAX_TAGGED_FIELDS - half + 1))
