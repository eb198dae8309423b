"""strom.protocol.messages.peek_produce_acks: the acks of a Produce frame, read without
parsing the request (the connection answers acks=0/1 inline), at every served version."""

from __future__ import annotations

import datetime

import pytest

from strom.protocol.messages import (
    encode_request,
    make,
    peek_produce_acks,
    request_module,
    request_schema,
)


def produce_frame(version: int, acks: int, client_id: str | None,
                  transactional_id: str | None) -> bytes:
    mod = request_module(0, version)
    topic_field = "topic_id" if version >= 13 else "name"
    topic = make(mod.TopicProduceData, **{topic_field: "t"}, partition_data=(
        make(mod.PartitionProduceData, index=0, records=b"x" * 70),))
    req = make(request_schema(0, version), transactional_id=transactional_id, acks=acks,
               timeout=datetime.timedelta(milliseconds=5000), topic_data=(topic,))
    return encode_request(7, client_id, req)[4:]  # without the size


@pytest.mark.parametrize("version", range(3, 13))
@pytest.mark.parametrize("acks", [-1, 0, 1, 2])
@pytest.mark.parametrize("client_id,transactional_id", [
    (None, None), ("", None), ("rdkafka", None), ("c" * 300, "txn-1"), ("é-client", "")])
def test_acks_at_every_version(version, acks, client_id, transactional_id):
    frame = produce_frame(version, acks, client_id, transactional_id)
    assert peek_produce_acks(frame) == acks
    assert peek_produce_acks(bytearray(frame)) == acks
    assert peek_produce_acks(memoryview(frame)) == acks


def test_header_tagged_fields_are_skipped():
    frame = produce_frame(9, 1, "cid", None)
    at = 8 + 2 + 3  # after api key, version, correlation id and client_id "cid"
    assert frame[at] == 0  # no tagged fields
    # two tagged fields: tag 0 with 3 bytes, tag 5 with 200 bytes (a 2-byte uvarint size)
    tagged = bytes([2, 0, 3]) + b"abc" + bytes([5, 0xC8, 0x01]) + b"z" * 200
    assert peek_produce_acks(frame[:at] + tagged + frame[at + 1:]) == 1


@pytest.mark.parametrize("cut", [0, 4, 8, 9, 11, 12, 14])
def test_short_or_odd_frames_give_none(cut):
    frame = produce_frame(9, 1, "cid", "tx")
    assert peek_produce_acks(frame[:cut]) is None
    assert peek_produce_acks(b"\x00\x00\x00\x09" + b"\xff" * 20) is None  # endless uvarint
