"""The error-free Produce answer of several partitions, framed by hand
(strom.protocol.produce_response): the bytes kio writes for the same answer, at every
version; the handler frames it only when every partition succeeded and no quota can
throttle the request."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.log.records import NewRecord, build_batch
from strom.protocol import produce_response
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import (
    encode_request,
    encode_response,
    make,
    parse_response,
    request_module,
    request_schema,
    response_module,
    response_schema,
)
from strom.security.quotas import REQUEST, precedence
from tests.unit.test_fast_path import TOPIC, answer, produce_frame, run, start_broker

VERSIONS = range(3, 13)
EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)


def kio_answer(version: int, correlation_id: int, topics) -> bytes:
    """What kio writes for the same error-free answer."""
    mod = response_module(0, version)
    responses = tuple(make(mod.TopicProduceResponse, name=name, partition_responses=tuple(
        make(mod.PartitionProduceResponse, index=index, error_code=ErrorCode.none,
             base_offset=base, log_append_time=None if stamp < 0 else
             EPOCH + datetime.timedelta(milliseconds=stamp), log_start_offset=start,
             record_errors=(), error_message=None)
        for index, base, stamp, start in partitions)) for name, partitions in topics)
    return encode_response(correlation_id, make(response_schema(0, version),
                                                responses=responses, node_endpoints=()))


partitions_st = st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1),
                                   st.one_of(st.just(-1), st.integers(0, 2**47)),
                                   st.integers(0, 2**63 - 1)), max_size=4)
topics_st = st.lists(st.tuples(st.text(min_size=1, max_size=40), partitions_st), max_size=3)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(version=st.sampled_from(VERSIONS), correlation_id=st.integers(-2**31, 2**31 - 1),
       topics=topics_st)
def test_the_hand_framed_answer_is_kios(version, correlation_id, topics):
    if version < 5:  # no log_start_offset field before v5: kio writes nothing of it
        topics = [(name, [(i, b, s, 0) for i, b, s, _ in parts]) for name, parts in topics]
    assert produce_response.encode_ok(version, correlation_id, topics) == \
        kio_answer(version, correlation_id, topics)


def reencoded(version: int, data: bytes) -> tuple[bytes, object]:
    """kio's own encoding of what it reads from an answer (and what it read)."""
    body = parse_response(0, version, data[4:])
    correlation_id = int.from_bytes(data[4:8], "big")
    return encode_response(correlation_id, body), body


@pytest.mark.parametrize("acks", [1, -1])
def test_a_produce_of_several_partitions_is_answered_as_kio_frames_it(tmp_path, acks):
    """Two partitions of one topic and one of a LogAppendTime topic, at every version: the
    answer reads back with every partition's base offset, log start offset and append
    time, and kio writes the same bytes for what it reads; a partition that fails (one
    that does not exist) sends the whole answer through kio, the others appended."""
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            out = []
            for n, version in enumerate(VERSIONS):
                frame = _two_topics_frame(version, n, acks)
                got = await answer(broker, frame, fast=False)
                out.append((version, got, *reencoded(version, got)))
            failing = produce_frame(9, 99, partitions=3, acks=acks)  # partition 2: none
            got = await answer(broker, failing, fast=False)
            return out, got
        finally:
            await broker.shutdown()

    out, failing = run(go())
    for n, (version, got, again, body) in enumerate(out):
        assert got == again, version
        (first, second) = body.responses
        assert [p.base_offset for p in first.partition_responses] == [n, n]
        assert [p.index for p in first.partition_responses] == [0, 1]
        assert first.name == TOPIC and second.name == "append-time"
        assert all(p.error_code == ErrorCode.none for t in body.responses
                   for p in t.partition_responses)
        assert first.partition_responses[0].log_append_time is None
        assert second.partition_responses[0].log_append_time is not None
        if version >= 5:
            assert first.partition_responses[0].log_start_offset == 0
    body = parse_response(0, 9, failing[4:])
    codes = [p.error_code for p in body.responses[0].partition_responses]
    assert codes == [ErrorCode.none, ErrorCode.none, ErrorCode.unknown_topic_or_partition]


def _two_topics_frame(version: int, correlation_id: int, acks: int) -> bytes:
    """Partitions 0 and 1 of TOPIC, then partition 0 of "append-time"."""
    mod = request_module(0, version)
    batch = build_batch([NewRecord(b"v%d" % correlation_id)])
    topics = ((TOPIC, (0, 1)), ("append-time", (0,)))
    req = make(request_schema(0, version), transactional_id=None, acks=acks,
               timeout=datetime.timedelta(seconds=30), topic_data=tuple(
                   make(mod.TopicProduceData, name=name, partition_data=tuple(
                       make(mod.PartitionProduceData, index=i, records=batch)
                       for i in indexes)) for name, indexes in topics))
    return encode_request(correlation_id, "rdkafka", req)[4:]


def test_a_request_quotas_throttle_reaches_every_produce_answer(tmp_path):
    """With a request_percentage quota over its bound the answer carries the throttle time,
    for one partition (no template then) and for several (no hand framing then)."""
    async def go():
        broker = await start_broker(tmp_path, "a")
        try:
            quotas = broker.services.quotas
            quotas.quotas = {precedence("ANONYMOUS", "rdkafka")[0]: {REQUEST: 1.0}}
            real = quotas.record
            quotas.record = lambda key, *args: 70 if key == REQUEST else real(key, *args)
            one = await answer(broker, produce_frame(9, 1), fast=False)
            several = await answer(broker, _two_topics_frame(9, 2, 1), fast=False)
            return one, several
        finally:
            await broker.shutdown()

    one, several = run(go())
    for data in (one, several):
        body = parse_response(0, 9, data[4:])
        assert body.throttle_time == datetime.timedelta(milliseconds=70)
        assert all(p.error_code == ErrorCode.none for t in body.responses
                   for p in t.partition_responses)
