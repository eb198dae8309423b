"""Topic znodes left half-written by a broker that died while creating or deleting a topic.

Creating a topic writes `/config/topics/<t>`, then `/brokers/topics/<t>`, then one state
znode per partition, from whichever broker got the request. The znodes are written here
with kazoo as a creator that died part-way would have left them:
- only the configs: CreateTopics of that name succeeds and its own configs win;
- the configs and the assignment, no partition states: the controller creates the
  missing states when it next looks at the brokers (here: a broker dies), and the topic
  can be produced to and read.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource, NewTopic
from kazoo.client import KazooClient

from strom.cluster import model
from strom.testing.cluster import read_partitions, wait_until

pytestmark = pytest.mark.timeout(120)


def zk_write(cluster, path: str, data: bytes) -> None:
    zk = KazooClient(hosts=cluster.zk_connect)
    zk.start(timeout=10)
    try:
        zk.create(path, data, makepath=True)
    finally:
        zk.stop()
        zk.close()


def test_leftover_configs_do_not_block_creation(make_cluster):
    cluster = make_cluster(3)
    zk_write(cluster, model.topic_config_path("left"),
             model.encode_topic_config({"retention.ms": "1000", "cleanup.policy": "compact"}))
    admin = cluster.admin()
    admin.create_topics([NewTopic("left", 2, 3, config={"retention.ms": "7200000"})]
                        )["left"].result(timeout=30)
    for p in range(2):
        cluster.wait_for_leader("left", p)
    res = ConfigResource(ConfigResource.Type.TOPIC, "left")
    configs = admin.describe_configs([res])[res].result(timeout=15)
    assert configs["retention.ms"].value == "7200000"
    assert configs["cleanup.policy"].value == "delete"  # the leftover's are gone

    # and a second creation of the same name is refused as usual
    fut = admin.create_topics([NewTopic("left", 1, 1)])["left"]
    with pytest.raises(Exception, match="(?i)already exists"):
        fut.result(timeout=30)


def test_missing_partition_states_are_created_by_the_controller(make_cluster):
    cluster = make_cluster(3)
    controller = cluster.controller_id()
    replicas = {p: tuple(sorted(cluster.brokers)) for p in range(2)}
    zk_write(cluster, model.topic_config_path("half"), model.encode_topic_config({}))
    zk_write(cluster, model.topic_path("half"),
             model.TopicAssignment("half", uuid.uuid4(), replicas).to_json())

    # the controller looks again at every topic when a broker goes
    victim = next(b for b in cluster.brokers if b != controller)
    cluster.kill(victim)
    for p in range(2):
        leader = cluster.wait_for_leader("half", p, not_on=victim)
        assert leader in cluster.brokers and leader != victim
    assert "has no partition state: creating it" in \
        cluster.brokers[controller].log_text(current_run_only=True)

    producer = Producer({"bootstrap.servers": cluster.live_bootstrap(), "acks": "all"})
    for i in range(10):
        producer.produce("half", value=b"%d" % i, partition=i % 2)
    assert producer.flush(30) == 0
    def committed():
        ends = {p: cluster.high_watermark("half", p) for p in range(2)}
        return ends if sum(ends.values()) == 10 else None

    ends = wait_until(committed, 30, what="10 records committed")
    records = read_partitions(cluster.live_bootstrap(), "half", ends)
    assert sorted(int(v) for rows in records.values() for _, _, v in rows) == list(range(10))
