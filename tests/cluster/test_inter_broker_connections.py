"""max.connections does not starve replication (issue 10, defect 7): with the leader's
connection slots all taken by clients, a follower that restarts is still served (its
connections come from another registered broker's address, which has a small reserve on a
single listener) and rejoins the ISR; acks=all then works.

The clients connect from 127.0.0.2, the brokers from 127.0.0.1 (their advertised host),
so the leader can tell them apart as it would on separate hosts.
"""

from __future__ import annotations

import json
import socket

import pytest
from confluent_kafka import Producer
from kazoo.client import KazooClient

from strom.testing.cluster import wait_until

pytestmark = pytest.mark.timeout(150)

TOPIC = "limits"
CLIENT_ADDRESS = "127.0.0.2"


def test_a_follower_is_served_when_clients_fill_the_leaders_slots(make_cluster):
    cluster = make_cluster(2, overrides={"max.connections": 4})
    cluster.create_topic(TOPIC, 1, 2, assignment=[[1, 2]])
    leader, follower = cluster.brokers[1], cluster.brokers[2]
    zk = KazooClient(hosts=cluster.zk_connect)
    zk.start(timeout=15)
    clients: list[socket.socket] = []
    try:
        def isr() -> list[int]:
            data, _ = zk.get(f"/brokers/topics/{TOPIC}/partitions/0/state")
            return sorted(json.loads(data)["isr"])

        producer = Producer({"bootstrap.servers": leader.bootstrap, "acks": "all"})
        producer.produce(TOPIC, b"before", partition=0)
        assert producer.flush(30) == 0  # its connection to the leader stays open

        cluster.stop(2)
        wait_until(lambda: isr() == [1], 30, what="the stopped follower out of the ISR")
        for _ in range(6):  # more than the free slots: some of them wait
            clients.append(socket.create_connection(
                ("127.0.0.1", leader.port), timeout=10, source_address=(CLIENT_ADDRESS, 0)))
        follower.start()
        wait_until(lambda: isr() == [1, 2], 60, what="the restarted follower back in the ISR")

        acks = []
        producer.produce(TOPIC, b"after", partition=0,
                         on_delivery=lambda err, msg: acks.append(err))
        assert producer.flush(30) == 0 and acks == [None]
    finally:
        for c in clients:
            c.close()
        zk.stop()
        zk.close()
