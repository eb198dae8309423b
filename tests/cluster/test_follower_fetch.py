"""The leader validates a follower's Fetch before it believes it (issue 10, defect 6).

A fetch with a follower's replica id at an offset beyond the leader's log end offset is
answered OFFSET_OUT_OF_RANGE and changes nothing: before the fix the leader took that
offset as the follower's log end offset, so the high watermark moved over records the
follower (frozen here with SIGSTOP, still in the ISR) never had. A replica id that is not
one of the partition's replicas gets NOT_LEADER_OR_FOLLOWER instead of uncommitted data.
"""

from __future__ import annotations

import pytest

from strom.testing import wire
from strom.testing.cluster import wait_until

pytestmark = pytest.mark.timeout(120)

TOPIC = "follower-fetch"
OFFSET_OUT_OF_RANGE = 1
NOT_LEADER_OR_FOLLOWER = 6


def fetch(sock: wire.KafkaSocket, offset: int, replica_id: int = -1
          ) -> wire.FetchPartitionResult:
    _, results = wire.parse_fetch_v4(sock.roundtrip(
        wire.fetch_v4(TOPIC, 0, offset, max_wait_ms=0, replica_id=replica_id)))
    return results[0]


def test_follower_fetch_beyond_the_log_end_does_not_move_the_high_watermark(make_cluster):
    # the frozen follower stays in the ISR: its lag is never checked out within the test
    cluster = make_cluster(2, {"replica.lag.time.max.ms": 600000}, session_timeout_ms=30000)
    leader = cluster.controller_id()
    follower = next(b for b in cluster.brokers if b != leader)
    cluster.create_topic(TOPIC, 1, 2, assignment=[[leader, follower]])
    host, port = cluster.brokers[leader].bootstrap.split(":")
    cluster.pause(follower)
    try:
        with wire.KafkaSocket(host, int(port)) as sock:
            batch = wire.encode_record_batch([wire.Record(b"a"), wire.Record(b"b"),
                                              wire.Record(b"c")])
            _, results = wire.parse_produce(sock.roundtrip(
                wire.produce(TOPIC, 0, batch, acks=1)))
            assert results[0].error_code == 0
            assert fetch(sock, 0).high_watermark == 0  # the follower has nothing yet

            claimed = fetch(sock, 1000, replica_id=follower)
            assert claimed.error_code == OFFSET_OUT_OF_RANGE
            assert fetch(sock, 0).high_watermark == 0  # was 3: records nobody copied

            stranger = fetch(sock, 0, replica_id=99)
            assert stranger.error_code == NOT_LEADER_OR_FOLLOWER and not stranger.records
    finally:
        cluster.resume(follower)
    # the real follower, once it runs again, still moves the high watermark
    wait_until(lambda: cluster.high_watermark(TOPIC, 0) == 3, 30,
               what="the high watermark at 3 after the follower caught up")
