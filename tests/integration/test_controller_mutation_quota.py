"""controller_mutation_rate (KIP-599) with raw requests and confluent-kafka's admin client:
CreateTopics v6+, CreatePartitions v3+ and DeleteTopics v5+ refuse the topics that come
while the client's token bucket is exhausted with THROTTLING_QUOTA_EXCEEDED and a throttle
time; older versions are served and throttled; an unlimited client is not affected.

The quota is 1 partition/s with a bucket of 2 (controller.quota.window.num=2 x 1 s), and the
first topic of each test takes 10 partitions: the bucket is then 8 below zero, so it stays
exhausted for about 8 s whatever the machine's speed (no timing is asserted).
"""

from __future__ import annotations

import datetime

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewPartitions, NewTopic

from strom.cli._common import broker_request
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.kafka import admin_client, create_topic

pytestmark = pytest.mark.timeout(120)

THROTTLING_QUOTA_EXCEEDED = 89


@pytest.fixture(scope="module")
def broker_overrides():
    return {"controller.quota.window.num": 2, "controller.quota.window.size.seconds": 1}


def _limit(broker, client_id: str, rate: float = 1.0) -> None:
    mod = request_module(49, 1)
    req = make(request_schema(49, 1), validate_only=False, entries=(make(
        mod.EntryData, entity=(make(mod.EntityData, entity_type="client-id",
                                    entity_name=client_id),),
        ops=(make(mod.OpData, key="controller_mutation_rate", value=rate, remove=False),)),))
    assert broker_request("127.0.0.1", broker.port, req, "admin", 10).entries[0].error_code == 0


def _create_topics(broker, client_id: str, version: int, topics: list[tuple[str, int]]):
    mod = request_module(19, version)
    req = make(request_schema(19, version), timeout_ms=10_000, validate_only=False,
               topics=tuple(make(mod.CreatableTopic, name=n, num_partitions=p,
                                 replication_factor=1, assignments=(), configs=())
                            for n, p in topics))
    return broker_request("127.0.0.1", broker.port, req, client_id, 20)


def _throttle_ms(response) -> float:
    return response.throttle_time.total_seconds() * 1000


@pytest.mark.parametrize("version", [6, 7])
def test_create_topics_strict(module_broker, version):
    client = f"mutator-create-{version}"
    _limit(module_broker, client)
    resp = _create_topics(module_broker, client, version,
                          [(f"cmq-a{version}", 10), (f"cmq-b{version}", 1)])
    codes = {t.name: t.error_code for t in resp.topics}
    assert codes == {f"cmq-a{version}": 0, f"cmq-b{version}": THROTTLING_QUOTA_EXCEEDED}
    assert _throttle_ms(resp) > 1000
    # the refused topic was not created; an unlimited client is not throttled
    other = _create_topics(module_broker, "unlimited", version, [(f"cmq-b{version}", 1)])
    assert other.topics[0].error_code == 0 and _throttle_ms(other) == 0


def test_create_topics_permissive_before_v6(module_broker):
    client = "mutator-create-old"
    _limit(module_broker, client)
    resp = _create_topics(module_broker, client, 5, [("cmq-old-a", 10), ("cmq-old-b", 1)])
    assert [t.error_code for t in resp.topics] == [0, 0]
    assert _throttle_ms(resp) > 1000


@pytest.mark.parametrize("version,expected", [(3, THROTTLING_QUOTA_EXCEEDED), (2, 0)])
def test_create_partitions(module_broker, version, expected):
    client = f"mutator-partitions-{version}"
    first, second = f"cmq-p{version}a", f"cmq-p{version}b"
    create_topic(module_broker.bootstrap, first)
    create_topic(module_broker.bootstrap, second)
    _limit(module_broker, client)
    mod = request_module(37, version)
    req = make(request_schema(37, version), timeout=datetime.timedelta(seconds=10), validate_only=False,
               topics=(make(mod.CreatePartitionsTopic, name=first, count=11, assignments=None),
                       make(mod.CreatePartitionsTopic, name=second, count=2,
                            assignments=None)))
    resp = broker_request("127.0.0.1", module_broker.port, req, client, 20)
    assert [r.error_code for r in resp.results] == [0, expected]
    assert _throttle_ms(resp) > 1000


@pytest.mark.parametrize("version,expected", [(5, THROTTLING_QUOTA_EXCEEDED), (4, 0)])
def test_delete_topics(module_broker, version, expected):
    client = f"mutator-delete-{version}"
    first, second = f"cmq-d{version}a", f"cmq-d{version}b"
    create_topic(module_broker.bootstrap, first, partitions=10)
    create_topic(module_broker.bootstrap, second)
    _limit(module_broker, client)
    req = make(request_schema(20, version), timeout=datetime.timedelta(seconds=10), topic_names=(first, second))
    resp = broker_request("127.0.0.1", module_broker.port, req, client, 20)
    assert {r.name: r.error_code for r in resp.responses} == {first: 0, second: expected}
    assert _throttle_ms(resp) > 1000


def test_confluent_admin_is_throttled(module_broker):
    """librdkafka's admin client: the first topics are created, then either the client's
    CreateTopics version refuses the next with THROTTLING_QUOTA_EXCEEDED or it is created
    and the client is throttled; either way the 10-partition topic exists and the quota
    shows in the throttle callback."""
    throttles: list = []
    admin = admin_client(module_broker.bootstrap, **{
        "client.id": "mutator-confluent",
        "throttle_cb": lambda event: throttles.append(event.throttle_time)})
    _limit(module_broker, "mutator-confluent")
    admin.create_topics([NewTopic("cmq-ck-a", 10, 1)])["cmq-ck-a"].result(20)
    try:
        admin.create_topics([NewTopic("cmq-ck-b", 1, 1)])["cmq-ck-b"].result(20)
        refused = None
    except KafkaException as e:
        refused = e.args[0]
    if refused is not None:
        assert refused.code() == THROTTLING_QUOTA_EXCEEDED, refused
    try:
        admin.create_partitions([NewPartitions("cmq-ck-a", 12)])["cmq-ck-a"].result(20)
    except KafkaException as e:
        assert e.args[0].code() == THROTTLING_QUOTA_EXCEEDED, e
    admin.poll(1)
    assert throttles and max(throttles) > 0, throttles
    print(f"confluent-kafka: second create refused={refused}, throttles={throttles}")
