"""Followers fetch in KIP-227 sessions, and replication stays right when a session is lost.

A FetchProxy sits between the follower and the leader (the leader advertises the proxy's
address) and records every Fetch. The follower opens a session with a full fetch, then sends
incremental fetches (rising epochs, one session id) that carry nothing while it is idle.
Then the session is taken from it twice: closed on the leader by another client (the
follower's next fetch gets FETCH_SESSION_ID_NOT_FOUND and opens a new session), and by a
dropped connection (the follower reconnects with a full fetch that closes its old session).
Records produced all along are on both replicas, byte for byte.
"""

from __future__ import annotations

import asyncio
import datetime

import pytest
from confluent_kafka import Producer

from strom.protocol import fetch_response
from strom.protocol.client import BrokerConnection
from strom.protocol.messages import make, request_schema
from strom.testing.cluster import wait_until
from strom.testing.fetch_proxy import FetchProxy

pytestmark = pytest.mark.timeout(180)

TOPIC = "fetch-sessions"
PARTITIONS = 8
LEADER, FOLLOWER = 1, 2
FETCHER = f"strom-replica-fetcher-{FOLLOWER}"
FETCH_SESSION_ID_NOT_FOUND = 70


def close_session(port: int, session_id: int) -> None:
    """A sessionless Fetch that names `session_id` with epoch -1: the broker closes it."""
    async def run() -> int:
        conn = BrokerConnection("127.0.0.1", port, client_id="session-closer")
        await conn.connect()
        try:
            request = make(request_schema(1, 12), cluster_id=None, replica_id=-1,
                           max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=1024,
                           isolation_level=0, session_id=session_id, session_epoch=-1,
                           topics=(), forgotten_topics_data=(), rack_id="")
            return fetch_response.decode(await conn.request_frame(request), 12).error_code
        finally:
            await conn.close()
    assert asyncio.run(run()) == 0


def produce(bootstrap: str, start: int, count: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(TOPIC, f"value-{i}".encode(), f"key-{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


def answered(proxy: FetchProxy) -> list:
    return [x for x in proxy.exchanges(FETCHER) if x.response_bytes >= 0]


def idle_incremental(proxy: FetchProxy, session_id: int, count: int):
    """Wait for `count` answered incremental fetches in `session_id` after the last one
    that carried a partition (the follower is idle), and return them."""
    def seen():
        xs = [x for x in answered(proxy) if x.session_id == session_id and x.session_epoch > 0]
        return xs if len(xs) >= count else None
    return wait_until(seen, 60, what=f"{count} incremental fetches in session {session_id}")


def test_followers_fetch_in_sessions_and_survive_losing_them(make_cluster):
    cluster = make_cluster(2, {"replica.fetch.wait.max.ms": 100}, start=False)
    leader = cluster.brokers[LEADER]
    with FetchProxy(leader.port) as proxy:
        leader.overrides["advertised.listeners"] = f"PLAINTEXT://{proxy.address}"
        cluster.start()
        cluster.create_topic(TOPIC, PARTITIONS, 2,
                             assignment=[[LEADER, FOLLOWER]] * PARTITIONS)
        produce(cluster.bootstrap, 0, 400)

        # 1. a full fetch opens the session; idle incremental fetches carry no partition
        first = wait_until(lambda: next((x for x in answered(proxy)
                                         if x.response_session_id > 0), None), 60,
                           what="a follower fetch that opened a session")
        assert first.session_epoch == 0
        session = first.response_session_id
        xs = idle_incremental(proxy, session, 5)
        epochs = [x.session_epoch for x in xs]
        assert epochs == list(range(1, len(epochs) + 1))
        assert all(x.error_code == 0 for x in xs)
        idle_size = min(x.request_bytes for x in xs)

        # 2. the leader loses the session: one FETCH_SESSION_ID_NOT_FOUND, then a new one
        close_session(leader.port, session)
        produce(cluster.bootstrap, 400, 400)
        lost = wait_until(lambda: next((x for x in answered(proxy)
                                        if x.error_code == FETCH_SESSION_ID_NOT_FOUND), None),
                          60, what="the follower told its session is gone")
        assert lost.session_id == session
        reopened = wait_until(lambda: next((x for x in answered(proxy)
                                            if x.session_epoch == 0 and x.session_id == 0
                                            and x.response_session_id not in (0, session)),
                                           None), 60, what="a new session")
        second = reopened.response_session_id
        idle_incremental(proxy, second, 2)

        # 3. a dropped connection: a full fetch that closes the old session opens a third
        proxy.reset()
        produce(cluster.bootstrap, 800, 400)
        closing = wait_until(lambda: next((x for x in answered(proxy)
                                           if x.session_epoch == 0 and x.session_id == second),
                                          None), 60, what="a full fetch closing the session")
        third = closing.response_session_id
        assert third not in (0, session, second)
        idle_incremental(proxy, third, 2)
        # a full fetch after the first names all 8 partitions; an idle one names none
        full_size = max(x.request_bytes for x in answered(proxy) if x.session_epoch == 0)
        assert idle_size < full_size / 2, (idle_size, full_size)

        # replication is complete and identical on both replicas
        for p in range(PARTITIONS):
            end = cluster.high_watermark(TOPIC, p)
            assert end == 150
            ours, _ = cluster.log_bytes(LEADER, TOPIC, p, end)
            wait_until(lambda p=p, end=end, ours=ours:
                       cluster.log_bytes(FOLLOWER, TOPIC, p, end) == (ours, end), 30,
                       what=f"{TOPIC}-{p} the same on the follower")
        assert set(cluster.isr_of(TOPIC, 0)) == {LEADER, FOLLOWER}
