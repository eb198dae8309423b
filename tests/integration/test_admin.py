"""Admin APIs through confluent-kafka's AdminClient: CreateTopics (names, validate_only,
configs, replica assignment), CreatePartitions, DeleteTopics, DescribeConfigs,
DescribeCluster, describe_topics (DescribeTopicPartitions or Metadata).
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from strom.testing.kafka import create_topic, wait_for_topic, wait_topic_gone

pytestmark = pytest.mark.timeout(120)

INVALID_TOPIC_EXCEPTION = 17
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40
UNKNOWN_TOPIC_OR_PARTITION = 3


def admin_for(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_error(admin: AdminClient, topic: NewTopic, **kwargs) -> KafkaError | None:
    """The error CreateTopics gives for one topic, or None when it was created."""
    fs = admin.create_topics([topic], operation_timeout=10, request_timeout=15, **kwargs)
    try:
        fs[topic.topic].result(timeout=20)
    except KafkaException as e:
        return e.args[0]
    return None


def listed(admin: AdminClient, name: str) -> bool:
    return name in admin.list_topics(timeout=10).topics


# -- topic names ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "",
    ".",
    "..",
    "x" * 250,
    "has space",
    "slash/x",
    "star*",
    "colon:x",
    "ümlaut",
    "tab\tx",
], ids=["empty", "dot", "dotdot", "250-chars", "space", "slash", "star", "colon", "non-ascii",
        "tab"])
def test_invalid_topic_names_are_refused(module_broker, name):
    admin = admin_for(module_broker)
    err = create_error(admin, NewTopic(name, 1, 1))
    assert err is not None, f"topic {name!r} was created"
    assert err.code() == INVALID_TOPIC_EXCEPTION, err
    if name:
        assert not listed(admin, name)


def test_name_of_249_chars_is_accepted(module_broker, topic_names):
    admin = admin_for(module_broker)
    name = (topic_names.new() + "-" + "y" * 249)[:249]
    assert len(name) == 249
    assert create_error(admin, NewTopic(name, 1, 1)) is None
    wait_for_topic(module_broker.bootstrap, name, 1)


def test_dot_underscore_collision_is_refused(module_broker, topic_names):
    admin = admin_for(module_broker)
    base = topic_names.new().replace("-", "")[:40]
    dotted, underscored = f"c.{base}", f"c_{base}"
    assert create_error(admin, NewTopic(dotted, 1, 1)) is None
    wait_for_topic(module_broker.bootstrap, dotted, 1)
    err = create_error(admin, NewTopic(underscored, 1, 1))
    assert err is not None and err.code() == INVALID_TOPIC_EXCEPTION, err
    assert dotted in err.str(), f"the message should name the existing topic: {err.str()!r}"
    assert not listed(admin, underscored)


def test_name_with_both_dot_and_underscore_is_accepted(module_broker, topic_names):
    admin = admin_for(module_broker)
    name = "mixed." + topic_names.new().replace("-", "_")
    assert create_error(admin, NewTopic(name, 1, 1)) is None
    wait_for_topic(module_broker.bootstrap, name, 1)


@pytest.mark.parametrize("name", ["__consumer_offsets", "__transaction_state"])
def test_reserved_internal_names_cannot_be_created_by_clients(module_broker, name):
    admin = admin_for(module_broker)
    err = create_error(admin, NewTopic(name, 1, 1))
    assert err is not None, f"a client created the internal topic {name}"


def test_metadata_for_an_invalid_name_does_not_create_it(module_broker):
    admin = admin_for(module_broker)
    md = admin.list_topics(topic="bad name!", timeout=10)
    t = md.topics.get("bad name!")
    assert t is not None and t.error is not None, "no error for an invalid topic name"
    assert t.error.code() in (INVALID_TOPIC_EXCEPTION, UNKNOWN_TOPIC_OR_PARTITION), t.error
    assert not listed(admin, "bad name!")


# -- CreateTopics --------------------------------------------------------------------------

def test_validate_only_creates_nothing(module_broker, topic_name):
    admin = admin_for(module_broker)
    assert create_error(admin, NewTopic(topic_name, 3, 1), validate_only=True) is None
    assert not listed(admin, topic_name)
    # the checks still run in validate_only mode
    err = create_error(admin, NewTopic(topic_name, 1, 1, config={"cleanup.policy": "bogus"}),
                       validate_only=True)
    assert err is not None and err.code() == INVALID_CONFIG, err
    err = create_error(admin, NewTopic("bad name", 1, 1), validate_only=True)
    assert err is not None and err.code() == INVALID_TOPIC_EXCEPTION, err
    # and the real thing works afterwards
    assert create_error(admin, NewTopic(topic_name, 3, 1)) is None
    wait_for_topic(module_broker.bootstrap, topic_name, 3)


@pytest.mark.parametrize("config", [
    {"cleanup.policy": "bogus"},
    {"retention.ms": "not-a-number"},
    {"no.such.config": "1"},
    {"min.insync.replicas": "0"},
], ids=["bad-enum", "bad-number", "unknown-key", "out-of-range"])
def test_bad_config_is_invalid_config(module_broker, topic_name, config):
    admin = admin_for(module_broker)
    err = create_error(admin, NewTopic(topic_name, 1, 1, config=config))
    assert err is not None and err.code() == INVALID_CONFIG, err
    assert not listed(admin, topic_name)


def test_create_existing_topic_is_topic_already_exists(module_broker, topic_name):
    admin = admin_for(module_broker)
    create_topic(module_broker.bootstrap, topic_name, 2)
    err = create_error(admin, NewTopic(topic_name, 5, 1))
    assert err is not None and err.code() == TOPIC_ALREADY_EXISTS, err
    md = admin.list_topics(topic=topic_name, timeout=10)
    assert len(md.topics[topic_name].partitions) == 2


def test_bad_partition_and_replication_counts(module_broker, topic_name):
    admin = admin_for(module_broker)
    err = create_error(admin, NewTopic(topic_name, 1, 3))  # one broker
    assert err is not None and err.code() == INVALID_REPLICATION_FACTOR, err
    assert not listed(admin, topic_name)


def test_explicit_replica_assignment(module_broker, topic_name):
    admin = admin_for(module_broker)
    assert create_error(admin, NewTopic(topic_name, 2, replica_assignment=[[1], [1]])) is None
    wait_for_topic(module_broker.bootstrap, topic_name, 2)
    [desc] = admin.describe_topics(TopicCollection([topic_name]),
                                   request_timeout=15).values()
    parts = desc.result(timeout=15).partitions
    assert [p.id for p in parts] == [0, 1]
    assert all([r.id for r in p.replicas] == [1] for p in parts)
    err = create_error(admin, NewTopic(topic_name + "-bad", 1, replica_assignment=[[7]]))
    assert err is not None, "assignment to a broker that does not exist was accepted"


def test_created_topic_configs_are_described(module_broker, topic_name):
    admin = admin_for(module_broker)
    create_topic(module_broker.bootstrap, topic_name, 1,
                 config={"retention.ms": "123456", "cleanup.policy": "delete",
                         "max.message.bytes": "20000"})
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)
    assert entries["retention.ms"].value == "123456"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not entries["retention.ms"].is_default
    assert entries["max.message.bytes"].value == "20000"
    assert entries["segment.bytes"].value == "1073741824"
    assert entries["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    for key in ("cleanup.policy", "retention.bytes", "message.timestamp.type",
                "min.insync.replicas", "segment.ms"):
        assert key in entries, f"{key} missing from DescribeConfigs"


def test_describe_configs_of_unknown_topic_fails(module_broker, topic_name):
    admin = admin_for(module_broker)
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    with pytest.raises(KafkaException) as info:
        admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)
    assert info.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION


def test_broker_configs_with_sources_and_topic_inheritance(start_broker, topic_name):
    b = start_broker({"num.partitions": "3", "log.retention.ms": "7200000"})
    admin = admin_for(b)
    res = ConfigResource(ResourceType.BROKER, "1")
    entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)
    assert entries["num.partitions"].value == "3"
    assert entries["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert entries["message.max.bytes"].value == "1048588"
    assert entries["message.max.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert entries["auto.create.topics.enable"].value == "true"
    assert entries["producer.id.expiration.ms"].value == "86400000"
    # internal in Kafka: listed only when set
    assert "producer.id.expiration.check.interval.ms" not in entries

    # a topic inherits the broker's value (source: the broker's static config)
    create_topic(b.bootstrap, topic_name, 1)
    tres = ConfigResource(ResourceType.TOPIC, topic_name)
    tentries = admin.describe_configs([tres], request_timeout=15)[tres].result(timeout=15)
    assert tentries["retention.ms"].value == "7200000"
    assert tentries["retention.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value

    # num.partitions applies to auto-created topics
    auto = topic_name + "-auto"
    producer = Producer({"bootstrap.servers": b.bootstrap})
    producer.produce(auto, value=b"x")
    assert producer.flush(20) == 0
    wait_for_topic(b.bootstrap, auto, 3)


# -- CreatePartitions, DeleteTopics ---------------------------------------------------------

def test_create_partitions_increase_only(module_broker, topic_name):
    bs = module_broker.bootstrap
    admin = admin_for(module_broker)
    create_topic(bs, topic_name, 1)

    def grow(n: int) -> KafkaError | None:
        fs = admin.create_partitions([NewPartitions(topic_name, n)], request_timeout=15)
        try:
            fs[topic_name].result(timeout=15)
        except KafkaException as e:
            return e.args[0]
        return None

    assert grow(3) is None
    wait_for_topic(bs, topic_name, 3)
    for n in (2, 3):  # fewer, or the same count
        err = grow(n)
        assert err is not None and err.code() == INVALID_PARTITIONS, (n, err)
    wait_for_topic(bs, topic_name, 3)
    # the new partitions take writes
    producer = Producer({"bootstrap.servers": bs})
    got = []
    producer.produce(topic_name, value=b"p2", partition=2,
                     on_delivery=lambda err, msg: got.append((err, msg.partition(), msg.offset())))
    assert producer.flush(15) == 0
    assert got == [(None, 2, 0)]
    # unknown topic
    fs = admin.create_partitions([NewPartitions(topic_name + "-nope", 4)], request_timeout=15)
    with pytest.raises(KafkaException) as info:
        fs[topic_name + "-nope"].result(timeout=15)
    assert info.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION


def test_delete_topics(module_broker, topic_name):
    bs = module_broker.bootstrap
    admin = admin_for(module_broker)
    create_topic(bs, topic_name, 2)
    producer = Producer({"bootstrap.servers": bs})
    for i in range(5):
        producer.produce(topic_name, value=b"old-%d" % i, partition=0)
    assert producer.flush(15) == 0

    admin.delete_topics([topic_name], operation_timeout=10)[topic_name].result(timeout=15)
    wait_topic_gone(bs, topic_name)

    fs = admin.delete_topics([topic_name], operation_timeout=10)
    with pytest.raises(KafkaException) as info:
        fs[topic_name].result(timeout=15)
    assert info.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION

    # re-creating the name gives an empty topic
    deadline = time.monotonic() + 15
    while True:
        err = create_error(admin, NewTopic(topic_name, 1, 1))
        if err is None:
            break
        assert err.code() == TOPIC_ALREADY_EXISTS and time.monotonic() < deadline, err
        time.sleep(0.2)
    wait_for_topic(bs, topic_name, 1)
    c = Consumer({"bootstrap.servers": bs, "group.id": "strom-it-unused",
                  "enable.auto.commit": False})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (0, 0)
    finally:
        c.close()


# -- DescribeCluster, describe_topics --------------------------------------------------------

def test_describe_cluster(module_broker):
    admin = admin_for(module_broker)
    desc = admin.describe_cluster(request_timeout=15).result(timeout=15)
    assert desc.cluster_id, "empty cluster id"
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(1, "127.0.0.1", module_broker.port)]
    assert desc.controller is not None and desc.controller.id == 1


def test_describe_topics(module_broker, topic_name):
    admin = admin_for(module_broker)
    create_topic(module_broker.bootstrap, topic_name, 3)
    fs = admin.describe_topics(TopicCollection([topic_name]), request_timeout=15)
    desc = fs[topic_name].result(timeout=15)
    assert desc.name == topic_name
    assert not desc.is_internal
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    for p in desc.partitions:
        assert p.leader is not None and p.leader.id == 1
        assert [r.id for r in p.replicas] == [1]
        assert [r.id for r in p.isr] == [1]

    missing = topic_name + "-missing"
    fs = admin.describe_topics(TopicCollection([missing]), request_timeout=15)
    with pytest.raises(KafkaException) as info:
        fs[missing].result(timeout=15)
    assert info.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION
