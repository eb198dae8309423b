"""The client side of strom.protocol.messages: request headers (v1, or v2 for flexible
requests) checked byte for byte against the independent encoder in strom.testing.wire and
read back by the server's parse_request; responses parsed from encode_response's frames
(header v0/v1, ApiVersions always v0, and its v0 fallback)."""

from __future__ import annotations

import datetime

import pytest

from strom.protocol.errors import ErrorCode
from strom.protocol.messages import (
    MalformedResponse,
    encode_request,
    encode_response,
    expects_response,
    make,
    parse_request,
    parse_response,
    request_api,
    request_module,
    request_schema,
    response_correlation_id,
    response_module,
    response_schema,
)
from strom.testing import wire


def test_api_versions_v0_request_matches_the_independent_encoder():
    req = make(request_schema(18, 0))
    assert encode_request(1, "strom-wire-test", req) == wire.api_versions_v0(1)


def test_flexible_request_has_header_v2():
    req = make(request_schema(18, 3), client_software_name="strom-wire-test",
               client_software_version="0.0.1")
    assert encode_request(5, "strom-wire-test", req) == wire.api_versions_flexible(3, 5)


def test_non_flexible_request_has_header_v1():
    """Fetch v4 against wire.fetch_v4, byte for byte."""
    mod = request_module(1, 4)
    req = make(request_schema(1, 4), replica_id=-1,
               max_wait=datetime.timedelta(milliseconds=100), min_bytes=1, max_bytes=1 << 20,
               isolation_level=0, topics=(make(mod.FetchTopic, topic="t", partitions=(
                   make(mod.FetchPartition, partition=2, fetch_offset=7,
                        partition_max_bytes=1 << 20),)),))
    expected = wire.fetch_v4("t", 2, 7, correlation_id=9)
    assert encode_request(9, "strom-wire-test", req) == expected


@pytest.mark.parametrize("version", [4, 12, 13, 17])
def test_fetch_request_round_trips_through_the_server_parser(version):
    mod = request_module(1, version)
    part = make(mod.FetchPartition, partition=3, current_leader_epoch=5, fetch_offset=42,
                last_fetched_epoch=4, log_start_offset=0, partition_max_bytes=1000)
    topic = make(mod.FetchTopic, topic="tp", topic_id=__import__("uuid").UUID(int=7),
                 partitions=(part,))
    req = make(request_schema(1, version), cluster_id=None, replica_id=2,
               replica_state=make(mod.ReplicaState, replica_id=2, replica_epoch=-1)
               if hasattr(mod, "ReplicaState") else None,
               max_wait=datetime.timedelta(milliseconds=500), min_bytes=1,
               max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
               topics=(topic,), forgotten_topics_data=(), rack_id="")
    frame = encode_request(77, "follower-2", req)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    header, body = parse_request(frame[4:])
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == \
        (1, version, 77, "follower-2")
    assert body == req


def test_offset_for_leader_epoch_request_round_trips():
    for version in (2, 3, 4):
        mod = request_module(23, version)
        req = make(request_schema(23, version), replica_id=1, topics=(
            make(mod.OffsetForLeaderTopic, topic="t", partitions=(
                make(mod.OffsetForLeaderPartition, partition=0, current_leader_epoch=3,
                     leader_epoch=2),)),))
        header, body = parse_request(encode_request(3, "c", req)[4:])
        assert header.api_version == version and body == req


def test_request_api_and_expects_response():
    produce = request_schema(0, 8)
    assert request_api(make(produce, acks=0, timeout=datetime.timedelta(0), topic_data=())) \
        == (0, 8)
    assert not expects_response(make(produce, acks=0, timeout=datetime.timedelta(0),
                                     topic_data=()))
    assert expects_response(make(produce, acks=-1, timeout=datetime.timedelta(0),
                                 topic_data=()))
    assert expects_response(make(request_schema(18, 0)))
    with pytest.raises(TypeError):
        request_api(make(response_schema(18, 3), error_code=ErrorCode.none, api_keys=()))


@pytest.mark.parametrize("version", [0, 3])
def test_api_versions_response_header_is_v0(version):
    mod = response_module(18, version)
    resp = make(response_schema(18, version), error_code=ErrorCode.none, api_keys=(
        make(mod.ApiVersion, api_key=1, min_version=4, max_version=17),))
    frame = encode_response(11, resp)[4:]
    assert response_correlation_id(frame) == 11
    assert parse_response(18, version, frame) == resp


def test_api_versions_unsupported_version_answer_is_read_as_v0():
    """A broker answers a too-new ApiVersions with a v0 body (UNSUPPORTED_VERSION)."""
    mod = response_module(18, 0)
    v0 = make(response_schema(18, 0), error_code=ErrorCode.unsupported_version, api_keys=(
        make(mod.ApiVersion, api_key=18, min_version=0, max_version=3),))
    got = parse_response(18, 3, encode_response(1, v0)[4:])
    assert got.error_code == ErrorCode.unsupported_version
    assert [(k.api_key, k.max_version) for k in got.api_keys] == [(18, 3)]


def test_flexible_response_has_header_v1():
    mod = response_module(23, 4)
    resp = make(response_schema(23, 4), topics=(make(mod.OffsetForLeaderTopicResult, topic="t",
                partitions=(make(mod.EpochEndOffset, error_code=ErrorCode.none, partition=0,
                                 leader_epoch=3, end_offset=17),)),))
    frame = encode_response(5, resp)[4:]
    assert frame[4] == 0  # the empty tagged fields of response header v1
    assert parse_response(23, 4, frame) == resp


def test_fetch_response_records_are_bytes():
    mod = response_module(1, 12)
    part = make(mod.PartitionData, partition_index=0, error_code=ErrorCode.none,
                high_watermark=1, records=b"\x01\x02\x03", aborted_transactions=None)
    resp = make(response_schema(1, 12), error_code=ErrorCode.none, session_id=0, responses=(
        make(mod.FetchableTopicResponse, topic="t", partitions=(part,)),))
    got = parse_response(1, 12, encode_response(3, resp)[4:])
    records = got.responses[0].partitions[0].records
    assert isinstance(records, bytes) and records == b"\x01\x02\x03"


def test_malformed_response():
    with pytest.raises(MalformedResponse):
        parse_response(3, 12, b"\x00\x00\x00\x01\xff")
    with pytest.raises(MalformedResponse):
        response_correlation_id(b"\x00")
