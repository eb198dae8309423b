"""Starting the broker the way users do (issue points 1 and 4): Kafka's config names from a
server.properties file and `--override`, unknown keys warned about, invalid values a clear
startup error; restart on the same data; Kafka's on-disk layout.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from strom.testing.broker import BrokerProcess, BrokerStartError
from strom.testing.kafka import consume_partition, create_topic

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("key,value", [
    ("num.partitions", "abc"),
    ("message.max.bytes", "-5"),
    ("auto.create.topics.enable", "maybe"),
    ("log.message.timestamp.type", "WallClock"),
])
def test_invalid_value_is_a_clear_startup_error(key, value):
    b = BrokerProcess(overrides={key: value}, startup_timeout=15)
    try:
        with pytest.raises(BrokerStartError) as info:
            b.start()
        assert b.returncode not in (None, 0)
        assert key in b.log_text(current_run_only=True), str(info.value)
        assert "Traceback" not in b.log_text(), "a config error should not print a traceback"
    finally:
        b.close()


def test_unknown_key_is_warned_about_not_fatal(start_broker):
    b = start_broker({"no.such.setting": "1"})
    log = b.log_text()
    assert any("no.such.setting" in line and "WARN" in line.upper()
               for line in log.splitlines()), log
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    assert [bk.id for bk in md.brokers.values()] == [1]


def test_properties_file_and_overrides(tmp_path, topic_name):
    props = tmp_path / "server.properties"
    props.write_text(
        "# a user's file, Kafka's names\n"
        "num.partitions=2\n"
        "auto.create.topics.enable=false\n"
        "log.retention.hours=5\n"
    )
    b = BrokerProcess(config_file=props, overrides={"num.partitions": "4"})
    try:
        b.start()
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        res = ConfigResource(ResourceType.BROKER, "1")
        entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)
        assert entries["num.partitions"].value == "4"  # --override beats the file
        assert entries["auto.create.topics.enable"].value == "false"  # from the file
        assert entries["log.retention.hours"].value == "5"
        t = admin.list_topics(topic=topic_name, timeout=10).topics[topic_name]
        assert t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        b.close()


def test_restart_on_the_same_data_keeps_topics_data_and_cluster_id(start_broker, topic_name):
    b = start_broker()
    create_topic(b.bootstrap, topic_name, 2, config={"retention.ms": "987654"})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    cluster_id = admin.describe_cluster(request_timeout=10).result(timeout=10).cluster_id
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(10):
        p.produce(topic_name, value=b"v%d" % i, key=b"k", partition=i % 2)
    assert p.flush(15) == 0

    assert b.stop() == 0
    b.start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert admin.describe_cluster(request_timeout=10).result(timeout=10).cluster_id == cluster_id
    md = admin.list_topics(topic=topic_name, timeout=10)
    assert sorted(md.topics[topic_name].partitions) == [0, 1]
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)
    assert entries["retention.ms"].value == "987654"
    for part in (0, 1):
        msgs = consume_partition(b.bootstrap, topic_name, part, end=5)
        assert [m.value() for m in msgs] == [b"v%d" % i for i in range(part, 10, 2)]


def test_on_disk_layout_is_kafkas(start_broker, topic_name):
    b = start_broker()
    create_topic(b.bootstrap, topic_name, 2)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(20):
        p.produce(topic_name, value=b"x" * 100, partition=i % 2)
    assert p.flush(15) == 0
    assert b.stop() == 0

    d = b.log_dir
    meta = (d / "meta.properties").read_text()
    assert "node.id=1" in meta or "broker.id=1" in meta, meta
    assert "cluster.id=" in meta, meta
    for name in ("recovery-point-offset-checkpoint", "replication-offset-checkpoint",
                 "log-start-offset-checkpoint"):
        assert (d / name).is_file(), f"{name} missing after a clean shutdown"
    rp = (d / "recovery-point-offset-checkpoint").read_text().split("\n")
    assert rp[0] == "0", f"checkpoint version line: {rp[:3]}"
    assert f"{topic_name} 0 10" in rp and f"{topic_name} 1 10" in rp, rp
    for part in (0, 1):
        pd = d / f"{topic_name}-{part}"
        assert pd.is_dir(), f"{pd} missing"
        names = {f.name for f in pd.iterdir()}
        for name in ("00000000000000000000.log", "00000000000000000000.index",
                     "00000000000000000000.timeindex", "partition.metadata",
                     "leader-epoch-checkpoint"):
            assert name in names, f"{name} missing from {pd.name}: {sorted(names)}"


def test_a_second_broker_on_locked_dirs_fails_before_touching_them(tmp_path):
    """Another process holds the first log dir's .lock (as a running broker does): the
    broker exits with Kafka's message before it opens the local metadata store there (it
    wrote its cluster id into that store first, racing the running broker's own file)."""
    import fcntl
    import os

    data = tmp_path / "data"
    data.mkdir()
    fd = os.open(data / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        b = BrokerProcess(log_dir=data, startup_timeout=60)  # it exits well before
        try:
            with pytest.raises(BrokerStartError):
                b.start()
            assert "Failed to acquire lock on file .lock" in b.log_text()
        finally:
            b.close()
        assert sorted(p.name for p in data.iterdir()) == [".lock"]
    finally:
        os.close(fd)
