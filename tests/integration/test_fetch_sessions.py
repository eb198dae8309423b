"""Incremental fetch sessions (KIP-227) over raw Fetch v12/v13 requests."""

from __future__ import annotations

import datetime
import itertools
import threading

import pytest

from strom.log.records import NewRecord, build_batch
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import encode_request, make, parse_response, request_module
from strom.testing.kafka import create_topic
from strom.testing.wire import KafkaSocket, produce

pytestmark = pytest.mark.timeout(60)

_cid = itertools.count(1000)


def call(sock: KafkaSocket, api_key: int, version: int, **fields):
    mod = request_module(api_key, version)
    req = make(getattr(mod, {1: "FetchRequest", 3: "MetadataRequest"}[api_key]), **fields)
    cid = next(_cid)
    return parse_response(api_key, version, sock.roundtrip(encode_request(cid, "t", req)))


def fetch(sock, version, session_id, epoch, topics, forgotten=(), max_wait_ms=0):
    """topics: [(topic name or id, [(partition, offset)])]."""
    mod = request_module(1, version)
    key = "topic_id" if version >= 13 else "topic"
    return call(sock, 1, version, replica_id=-1,
                max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=1,
                max_bytes=1 << 20, isolation_level=0, session_id=session_id,
                session_epoch=epoch, rack_id="",
                forgotten_topics_data=tuple(make(mod.ForgottenTopic, **{key: t},
                                                 partitions=tuple(ps))
                                            for t, ps in forgotten),
                topics=tuple(make(mod.FetchTopic, **{key: t}, partitions=tuple(
                    make(mod.FetchPartition, partition=p, current_leader_epoch=-1,
                         fetch_offset=o, last_fetched_epoch=-1, log_start_offset=-1,
                         partition_max_bytes=1 << 20) for p, o in ps)) for t, ps in topics))


def send(broker, topic, partition, value=b"v"):
    with KafkaSocket("127.0.0.1", broker.port, timeout=20) as s:
        resp = s.roundtrip(produce(topic, partition, build_batch([NewRecord(value)]), acks=1))
    assert resp


def answered(resp):
    return sorted((p.partition_index, p.high_watermark, len(p.records or b""))
                  for t in resp.responses for p in t.partitions)


def test_full_then_incremental_session_v12(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, partitions=3)
    send(module_broker, topic_name, 0)
    with KafkaSocket("127.0.0.1", module_broker.port, timeout=20) as s:
        full = fetch(s, 12, 0, 0, [(topic_name, [(0, 0), (1, 0), (2, 0)])])
        assert full.error_code == ErrorCode.none and full.session_id > 0
        sid = full.session_id
        assert [p for _, p, n in answered(full) if n] == [1]  # partition 0's records
        assert [(i, hw) for i, hw, _ in answered(full)] == [(0, 1), (1, 0), (2, 0)]
        # incremental, partition 0 moves on: nothing new anywhere, and the fetch parks
        inc = fetch(s, 12, sid, 1, [(topic_name, [(0, 1)])], max_wait_ms=300)
        assert inc.error_code == ErrorCode.none and inc.session_id == sid
        assert answered(inc) == []
        # new data on partition 2 (not named in the request): answered alone
        send(module_broker, topic_name, 2)
        inc = fetch(s, 12, sid, 2, [], max_wait_ms=5000)
        assert [(i, hw) for i, hw, n in answered(inc) if n] == [(2, 1)]
        assert [i for i, _, _ in answered(inc)] == [2]
        # a wrong epoch, an unknown session
        bad = fetch(s, 12, sid, 7, [])
        assert bad.error_code == ErrorCode.invalid_fetch_session_epoch
        assert answered(bad) == []
        unknown = fetch(s, 12, sid ^ 0x5A5A5A, 1, [])
        assert unknown.error_code == ErrorCode.fetch_session_id_not_found
        # the session still works at its epoch; forgetting partition 2 stops its answers
        inc = fetch(s, 12, sid, 3, [(topic_name, [(2, 1)])], forgotten=[(topic_name, [2])])
        assert answered(inc) == []
        send(module_broker, topic_name, 2)
        inc = fetch(s, 12, sid, 4, [], max_wait_ms=200)
        assert answered(inc) == []
        # closing the session (epoch -1) answers in full, sessionless; the id is gone
        closed = fetch(s, 12, sid, -1, [(topic_name, [(0, 1)])])
        assert closed.session_id == 0 and [i for i, _, _ in answered(closed)] == [0]
        assert fetch(s, 12, sid, 5, []).error_code == ErrorCode.fetch_session_id_not_found


def test_incremental_parked_fetch_wakes_on_data_v13(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, partitions=2)
    with KafkaSocket("127.0.0.1", module_broker.port, timeout=20) as s:
        meta = call(s, 3, 12, topics=(make(request_module(3, 12).MetadataRequestTopic,
                                           topic_id=None, name=topic_name),),
                    allow_auto_topic_creation=False, include_topic_authorized_operations=False)
        topic_id = meta.topics[0].topic_id
        full = fetch(s, 13, 0, 0, [(topic_id, [(0, 0), (1, 0)])])
        assert full.session_id > 0 and full.responses[0].topic_id == topic_id
        assert answered(full) == [(0, 0, 0), (1, 0, 0)]
        sid = full.session_id
        # a parked incremental fetch (long max_wait) is answered when data arrives
        box = {}
        th = threading.Thread(target=lambda: box.setdefault(
            "r", fetch(s, 13, sid, 1, [], max_wait_ms=15000)))
        th.start()
        send(module_broker, topic_name, 1, b"x" * 10)
        th.join(20)
        inc = box["r"]
        assert inc.session_id == sid and inc.responses[0].topic_id == topic_id
        assert [(i, hw) for i, hw, n in answered(inc) if n] == [(1, 1)]
        # a v12 request in a v13 session
        assert fetch(s, 12, sid, 2, []).error_code == ErrorCode.fetch_session_topic_id_error
